#!/usr/bin/env python3
"""The file graph of a Rust crate: an arrow A -> B when file A uses an item
defined in file B, through a `use` path or a qualified path (`crate::x::Y`,
`super::Y`, `self::x::Y`, or a path starting at a child module). `mod`
declarations are not arrows. Re-exports are followed to the file that
defines the item (so `crate::Value` counts as a use of the file defining
`Value`, not of lib.rs). Comments and string literals are ignored.

Usage: file_cycles.py CRATE_SRC_DIR... [--tests] [--list] [--dot]
Exit status 1 if a graph has a cycle (each is printed with the paths that
make its arrows).

Test code (`#[cfg(test)]` modules, inline or in their own file) is left
out unless --tests is given.
"""
import os
import re
import sys


def strip(src):
    """Source with comments, strings and char literals blanked out (newlines
    kept)."""
    out = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            i = j
            continue
        if src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * src.count("\n", i, j))
            i = j
            continue
        m = re.match(r'b?r(#*)"', src[i:i + 10]) if c in "rb" and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")) else None
        if m:
            end = '"' + m.group(1)
            j = src.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append('""' + "\n" * src.count("\n", i, j))
            i = j
            continue
        if c == '"' or (c == "b" and src.startswith('b"', i) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_"))):
            j = i + (2 if c == "b" else 1)
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            j += 1
            out.append('""' + "\n" * src.count("\n", i, j))
            i = j
            continue
        if c == "'":
            m = re.match(r"'(\\.[^']*|[^\\'])'", src[i:i + 12])
            if m:
                out.append("' '")
                i += len(m.group(0))
                continue
        out.append(c)
        i += 1
    return "".join(out)


def matching_brace(s, i):
    """Index just past the brace matching the `{` at i."""
    depth = 0
    for j in range(i, len(s)):
        if s[j] == "{":
            depth += 1
        elif s[j] == "}":
            depth -= 1
            if depth == 0:
                return j + 1
    return len(s)


MOD_RE = re.compile(
    r'((?:#\[[^\]]*\]\s*)*)(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*([;{])')


class Module:
    def __init__(self, path, file, parent):
        self.path = path          # tuple of names from the crate root
        self.file = file          # the file it lives in
        self.parent = parent
        self.children = {}        # name -> Module
        self.test = False
        self.uses = []            # (text of the use tree or path, kind)
        self.reexports = {}       # name -> absolute path (tuple) it names


def expand_use(tree):
    """`a::{b, c::{d, e as f}, self}` -> [(path, alias)]."""
    tree = re.sub(r"\s+as\s+", "@", tree)
    tree = re.sub(r"\s+", "", tree)
    out = []

    def rec(prefix, t):
        # split top-level commas
        parts, depth, cur = [], 0, ""
        for ch in t:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        if cur:
            parts.append(cur)
        for p in parts:
            if not p:
                continue
            k = p.find("{")
            if k >= 0:
                head = p[:k].rstrip(":")
                inner = p[k + 1:p.rfind("}")]
                rec(prefix + ([x for x in head.split("::") if x] if head else []), inner)
            else:
                alias = None
                if "@" in p:
                    p, alias = p.split("@", 1)
                segs = prefix + [x for x in p.split("::") if x]
                if segs and segs[-1] == "self":
                    segs = segs[:-1]
                out.append((segs, alias))
    rec([], tree)
    return out


def parse_file(crate, mod, file, src_dir, with_tests):
    text = strip(open(file, encoding="utf-8").read())
    scan_module_text(crate, mod, text, os.path.dirname(file), file, src_dir, with_tests)


def child_dir(mod, file):
    base = os.path.basename(file)
    d = os.path.dirname(file)
    if base in ("lib.rs", "main.rs", "mod.rs"):
        return d
    return os.path.join(d, base[:-3])


def scan_module_text(crate, mod, text, _dir, file, src_dir, with_tests):
    pos = 0
    body = []
    while True:
        m = MOD_RE.search(text, pos)
        if not m:
            body.append(text[pos:])
            break
        attrs, name, tok = m.group(1), m.group(2), m.group(3)
        is_test = "cfg(test)" in attrs
        body.append(text[pos:m.start()])
        if tok == ";":
            pm = re.search(r'#\[path\s*=\s*""\]', attrs)
            orig_path = None
            if pm:
                # path attribute strings were blanked; recover from raw source
                raw = open(file, encoding="utf-8").read()
                rm = re.search(r'#\[path\s*=\s*"([^"]+)"\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+' + name + r'\s*;', raw)
                orig_path = rm.group(1) if rm else None
            if orig_path:
                f = os.path.join(os.path.dirname(file), orig_path)
            else:
                cd = child_dir(mod, file)
                f = os.path.join(cd, name + ".rs")
                if not os.path.exists(f):
                    f = os.path.join(cd, name, "mod.rs")
            child = Module(mod.path + (name,), f, mod)
            child.test = mod.test or is_test
            mod.children[name] = child
            crate.modules.append(child)
            if os.path.exists(f) and (with_tests or not child.test):
                parse_file(crate, child, f, src_dir, with_tests)
            pos = m.end()
        else:
            end = matching_brace(text, m.end() - 1)
            child = Module(mod.path + (name,), file, mod)
            child.test = mod.test or is_test
            mod.children[name] = child
            crate.modules.append(child)
            if with_tests or not child.test:
                scan_module_text(crate, child, text[m.end():end - 1], _dir, file, src_dir, with_tests)
            body.append("\n" * text.count("\n", m.start(), end))
            pos = end
    scan_body(mod, "".join(body))


USE_RE = re.compile(r"\b(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);")
PATH_RE = re.compile(r"(?<![\w:])((?:crate|super|self|[a-z_][a-z0-9_]*)(?:::[A-Za-z_]\w*)+)")


def scan_body(mod, body):
    for m in USE_RE.finditer(body):
        for segs, alias in expand_use(m.group(2)):
            if not segs:
                continue
            mod.uses.append(segs)
            if m.group(1):
                mod.reexports[alias or segs[-1]] = segs
    rest = USE_RE.sub(lambda m: "\n" * m.group(0).count("\n"), body)
    for m in PATH_RE.finditer(rest):
        segs = m.group(1).split("::")
        mod.uses.append(segs)


class Crate:
    def __init__(self, src_dir, with_tests):
        self.src_dir = src_dir
        lib = os.path.join(src_dir, "lib.rs")
        if not os.path.exists(lib):
            lib = os.path.join(src_dir, "main.rs")
        self.root = Module((), lib, None)
        self.modules = [self.root]
        parse_file(self, self.root, lib, src_dir, with_tests)

    def lookup(self, mod, segs):
        """The module a path starts from and the rest of it, or None for
        paths outside the crate."""
        first = segs[0]
        if first == "crate":
            return self.root, segs[1:]
        if first == "self":
            return mod, segs[1:]
        if first == "super":
            m, rest = mod, segs
            while rest and rest[0] == "super":
                m = m.parent or m
                rest = rest[1:]
            return m, rest
        if first in mod.children:
            return mod, segs
        return None

    def resolve(self, mod, segs, depth=0):
        """The file defining what `segs` (used in `mod`) names, or None."""
        start = self.lookup(mod, segs)
        if start is None or depth > 20:
            return None
        m, rest = start
        while rest and rest[0] in m.children:
            m = m.children[rest[0]]
            rest = rest[1:]
        if rest and rest[0] in m.reexports and m.reexports[rest[0]] != ["*"]:
            target = m.reexports[rest[0]]
            f = self.resolve(m, target + rest[1:], depth + 1)
            if f:
                return f
        return m.file

    def graph(self, with_tests):
        edges = {}
        for mod in self.modules:
            if mod.test and not with_tests:
                continue
            for segs in mod.uses:
                f = self.resolve(mod, segs)
                if f and f != mod.file and os.path.exists(f):
                    edges.setdefault(mod.file, {}).setdefault(f, set()).add("::".join(segs))
        files = sorted({m.file for m in self.modules if os.path.exists(m.file) and (with_tests or not m.test)})
        return files, edges


def sccs(nodes, edges):
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)
    for v in nodes:
        if v not in index:
            visit(v)
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    status = 0
    for src in args or ["src"]:
        status |= check(src)
    return status


def check(src):
    with_tests = "--tests" in sys.argv
    crate = Crate(src, with_tests)
    files, edges = crate.graph(with_tests)
    rel = os.path.relpath
    narrows = sum(len(v) for v in edges.values())
    if "--dot" in sys.argv:
        print("digraph files {")
        for a, bs in sorted(edges.items()):
            for b in sorted(bs):
                print(f'  "{rel(a)}" -> "{rel(b)}";')
        print("}")
        return 0
    if "--list" in sys.argv:
        for a, bs in sorted(edges.items()):
            for b, via in sorted(bs.items()):
                print(f"{rel(a)} -> {rel(b)}: {', '.join(sorted(via))}")
    comps = [c for c in sccs(files, edges) if len(c) > 1]
    print(f"{src}: {len(files)} files, {narrows} arrows{' (tests included)' if with_tests else ''}")
    if not comps:
        # Tarjan emits components in reverse topological order: leaves first.
        order = [c[0] for c in sccs(files, edges)]
        print("no cycles; an order in which every file uses only files before it:")
        print("  " + ", ".join(rel(f) for f in order))
        return 0
    for c in comps:
        print(f"cycle among {len(c)} files: {', '.join(sorted(rel(f) for f in c))}")
        cs = set(c)
        for a in sorted(c):
            for b, via in sorted(edges.get(a, {}).items()):
                if b in cs:
                    print(f"    {rel(a)} -> {rel(b)}: {', '.join(sorted(via))}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
