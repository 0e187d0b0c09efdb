#!/usr/bin/env python3
"""Pairs the rounds of `benches/ab_sessions.sh` output.

For every variant: medians of the tree's, the controller's and the nodes'
(tree minus controller) µs per session. For every variant after the first:
its tree cost over the first variant's in the same round, the median of
those per-round ratios, and a 95% bootstrap interval of that median (rounds
resampled with replacement, a fixed seed, so the same input always gives
the same interval). Pairing by round takes out the host's drift, which on
a shared machine is larger than the effects measured here.

usage: benches/summarize_ab.py FILE   (or - for standard input)
"""

import os
import re
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from summarize import bootstrap_median  # noqa: E402  (shared with summarize_mp.py)

LINE = re.compile(
    r"^(\d+) (\S+) sessions=(\d+) tree_us=([0-9.]+) ctl_us=([0-9.]+)$"
)


def parse(lines):
    runs = {}  # variant -> {round: (tree, ctl)}
    order = []
    for line in lines:
        m = LINE.match(line.strip())
        if not m:
            continue
        rnd, variant = int(m.group(1)), m.group(2)
        tree, ctl = float(m.group(4)), float(m.group(5))
        if variant not in runs:
            runs[variant] = {}
            order.append(variant)
        runs[variant][rnd] = (tree, ctl)
    return order, runs


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 64
    src = sys.stdin if sys.argv[1] == "-" else open(sys.argv[1], encoding="utf-8")
    order, runs = parse(src)
    if len(order) < 1:
        print("no runs found", file=sys.stderr)
        return 65
    print("| variant | runs | tree µs/session | controller | nodes |")
    print("|---|---|---|---|---|")
    for v in order:
        trees = [t for t, _ in runs[v].values()]
        ctls = [c for _, c in runs[v].values()]
        nodes = [t - c for t, c in runs[v].values()]
        print(
            f"| {v} | {len(trees)} | {statistics.median(trees):.1f} "
            f"| {statistics.median(ctls):.2f} | {statistics.median(nodes):.1f} |"
        )
    base = order[0]
    for v in order[1:]:
        common = sorted(set(runs[v]) & set(runs[base]))
        if not common:
            continue
        ratios = [runs[v][r][0] / runs[base][r][0] for r in common]
        lo, hi = bootstrap_median(ratios)
        above = sum(1 for x in ratios if x > 1)
        print()
        print(
            f"{v} over {base}, tree per session, paired by round ({len(ratios)} rounds):"
            f" median {statistics.median(ratios):.3f}, 95% interval [{lo:.3f}, {hi:.3f}],"
            f" mean {statistics.fmean(ratios):.3f}; {above} of {len(ratios)} rounds above 1"
        )
        print("  per round: " + ", ".join(f"{x:.3f}" for x in ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
