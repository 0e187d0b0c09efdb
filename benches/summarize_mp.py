#!/usr/bin/env python3
"""Medians and ratios of a `benches/mp.sh` results file.

Usage: summarize_mp.py RESULTS.jsonl

Each line is one `vole bench --json` run with "variant" ("single" for
`--nodes 0`, "MODE-N" for N nodes in a balance mode) and "bench" ("held":
64 held links x 1 in flight; "sess": new sessions resuming TLS, a session
cache per worker; "full": new sessions, full TLS handshakes; "sshared": new
sessions, one shared session cache). Prints per bench a Markdown table of
the median of each variant (with the range over runs), then the targets of
issue #3 and #4, each marked met or MISSED:

* 2 nodes vs one process (`--nodes 0`) on the same core, calls/s on held
  links: >= 0.9. Also shown "CPU-bound": the one process's server CPU per
  call over the 2 nodes' (what calls/s would give with the server core
  saturated), robust to contention.
* the controller path's cost: server CPU (the whole process tree) per call
  or per session against `--nodes 0`; for `dispatch` per new TLS session
  (full handshakes) at most 1.05x, also shown against `shared`.
* Jain's index over per-node counts (calls for held links, accepted
  connections for new sessions), 2 nodes: >= 0.98 for grant and dispatch.
* resumption, 2 nodes: >= 0.95 of reconnecting sessions resumed.

Where server cores < 0.9 a run was contended or not server-bound: trust
the CPU-per-operation figures over the rates.
"""

import json
import os
import sys
from collections import OrderedDict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from summarize import bootstrap_median, fmt, median, spread  # noqa: E402  (the same helpers as run.sh's tables)

MODES = ['grant', 'shared', 'dispatch', 'reuseport']
SESSION_BENCHES = ['sess', 'full', 'sshared']
BENCH_TITLES = {
    'held': 'Held links: 64 links x 1 call in flight, 64-byte payload, TLS',
    'sess': 'New sessions, TLS resumed (a session cache per worker: reconnecting clients)',
    'full': 'New sessions, full TLS handshakes (--no-resume)',
    'sshared': 'New sessions, one TLS session cache shared by all workers',
}
TARGET_CALLS_RATIO = 0.9
TARGET_DISPATCH_COST = 1.05
TARGET_JAIN = 0.98
JAIN_MODES = ['grant', 'dispatch']
TARGET_RESUMED = 0.95


def verdict(value, target, at_least=True):
    if value is None:
        return '-'
    ok = value >= target if at_least else value <= target
    return '{} {} {}'.format('>=' if at_least else '<=', target, 'met' if ok else 'MISSED')


def variant_order(variants):
    def key(v):
        if v == 'single':
            return (0, 0, 0)
        mode, _, n = v.rpartition('-')
        m = MODES.index(mode) if mode in MODES else len(MODES)
        return (1, m, int(n) if n.isdigit() else 0)
    return sorted(variants, key=key)


def lat(r, p):
    return (r.get('latency_us') or {}).get(p)


def load(path):
    runs = OrderedDict()
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            variant = r.get('variant')
            bench = r.get('bench')
            if variant is None or bench is None:
                variant, _, bench = r.get('label', '?.?').rpartition('.')
            runs.setdefault(bench, OrderedDict()).setdefault(variant, []).append(r)
    return runs


def jain_of(r):
    """The run's Jain's index, recomputed from the per-node counts if absent."""
    if r.get('jain') is not None:
        return r['jain']
    nodes = r.get('nodes') or []
    key = 'accepted' if r.get('mode') == 'sessions' else 'calls'
    xs = [n.get(key, 0) for n in nodes]
    squares = sum(x * x for x in xs)
    if not xs or squares == 0:
        return None
    return sum(xs) ** 2 / (len(xs) * squares)


def stats_of(rs, session):
    rate_key = 'sessions_per_s' if session else 'calls_per_s'
    us_key = 'server_us_per_session' if session else 'server_us_per_call'
    cus_key = 'client_us_per_session' if session else 'client_us_per_call'
    rates = [r.get(rate_key, r.get('calls_per_s')) for r in rs]
    return {
        'runs': len(rs),
        'rates': rates,
        'rate': median(rates),
        'p50': median([lat(r, 'p50') for r in rs]),
        'p99': median([lat(r, 'p99') for r in rs]),
        'server_us': median([r.get(us_key, r.get('server_us_per_call')) for r in rs]),
        'client_us': median([r.get(cus_key, r.get('client_us_per_call')) for r in rs]),
        # The tree's root alone: the controller (or the one process).
        'root_us': median([r.get('server_root_us_per_call') for r in rs]),
        'server_cores': median([r.get('server_cores') for r in rs]),
        'client_cores': median([r.get('client_cores') for r in rs]),
        'procs': median([r.get('server_procs') for r in rs]),
        'jains': [jain_of(r) for r in rs],
        'jain': median([jain_of(r) for r in rs]),
        'resumed': median([r.get('resumed_fraction') for r in rs]),
        'resumed_all': [r.get('resumed_fraction') for r in rs],
        'smin': median([r.get('node_sessions_min') for r in rs]),
        'smax': median([r.get('node_sessions_max') for r in rs]),
        'errors': sum(r.get('errors', 0) for r in rs),
        'lost': sum(r.get('links_lost', 0) for r in rs),
    }


def print_tables(runs):
    stats = {}
    for bench in ['held'] + SESSION_BENCHES + [b for b in runs if b not in BENCH_TITLES]:
        if bench not in runs:
            continue
        session = bench != 'held'
        print('### {}'.format(BENCH_TITLES.get(bench, bench)))
        print()
        unit = 'sessions/s' if session else 'calls/s'
        per = 'session' if session else 'call'
        extra = '| resumed | Jain (accepted) ' if session else '| Jain (calls) | open sessions per node min..max '
        print('| variant | runs | {} median [range] | p50 us | p99 us | server us/{} | client us/{} | server cores | client cores | server procs {}| errors |'.format(
            unit, per, per, extra))
        print('|---|---|---|---|---|---|---|---|---|---|---|---|---|')
        for variant in variant_order(runs[bench]):
            s = stats_of(runs[bench][variant], session)
            stats[(bench, variant)] = s
            if session:
                cols = '{} | {} '.format(fmt(s['resumed'], 3), fmt(s['jain'], 4))
            else:
                cols = '{} | {}..{} '.format(fmt(s['jain'], 4), fmt(s['smin']), fmt(s['smax']))
            errors = str(s['errors'])
            if s['lost']:
                errors += ' ({} lost)'.format(s['lost'])
            print('| {} | {} | {} [{}] | {} | {} | {} | {} | {} | {} | {} | {}| {} |'.format(
                variant, s['runs'], fmt(s['rate']), spread(s['rates']),
                fmt(s['p50'], 1), fmt(s['p99'], 1), fmt(s['server_us'], 2),
                fmt(s['client_us'], 2), fmt(s['server_cores'], 2),
                fmt(s['client_cores'], 2), fmt(s['procs']), cols, errors))
        print()
    return stats


def ratio(a, b):
    if a is None or not b:
        return None
    return a / b


def print_paired(runs):
    """Ratios within a round: dispatch-N's server CPU per full session over
    single's and shared-N's, and 2 nodes' held-link calls/s over single's.
    The host drifts between rounds by more than the effects measured, so
    pairing by round is the comparison that holds still."""
    full = runs.get('full') or {}

    def by_round(variant):
        return {r.get('round'): r.get('server_us_per_session') for r in full.get(variant, [])
                if r.get('round') is not None and r.get('server_us_per_session')}

    rows = []
    for n in (1, 2):
        d = by_round('dispatch-{}'.format(n))
        for base in ('single', 'shared-{}'.format(n)):
            b = by_round(base)
            common = sorted(set(d) & set(b))
            if len(common) < 2:
                continue
            xs = [d[r] / b[r] for r in common]
            lo, hi = bootstrap_median(xs)
            rows.append('| dispatch-{} / {} | {} | {} [{}, {}] | {} | {} of {} |'.format(
                n, base, len(xs), fmt(median(xs), 3), fmt(lo, 3), fmt(hi, 3),
                fmt(sum(xs) / len(xs), 3), sum(1 for x in xs if x > 1), len(xs)))
    if rows:
        print('Full sessions paired by round: server CPU per session of dispatch-N over the variant beside it'
              ' in the same round (median of the per-round ratios, 95% bootstrap interval):')
        print()
        print('| ratio | rounds | median [95% interval] | mean | rounds above 1 |')
        print('|---|---|---|---|---|')
        for row in rows:
            print(row)
        print()

    held = runs.get('held') or {}

    def held_by_round(variant, key):
        return {r.get('round'): r.get(key) for r in held.get(variant, [])
                if r.get('round') is not None and r.get(key)}

    single_calls = held_by_round('single', 'calls_per_s')
    single_us = held_by_round('single', 'server_us_per_call')
    rows = []
    for mode in MODES:
        v = '{}-2'.format(mode)
        calls, us = held_by_round(v, 'calls_per_s'), held_by_round(v, 'server_us_per_call')
        common = sorted(set(calls) & set(single_calls) & set(us) & set(single_us))
        if len(common) < 2:
            continue
        xs = [calls[r] / single_calls[r] for r in common]
        cs = [single_us[r] / us[r] for r in common]
        lo, hi = bootstrap_median(xs)
        clo, chi = bootstrap_median(cs)
        rows.append('| {} | {} | {} [{}, {}] | {}..{} | {} [{}, {}] |'.format(
            v, len(xs), fmt(median(xs), 3), fmt(lo, 3), fmt(hi, 3), fmt(min(xs), 2), fmt(max(xs), 2),
            fmt(median(cs), 3), fmt(clo, 3), fmt(chi, 3)))
    if rows:
        print('Held links paired by round: 2 nodes over one process in the same round (median of the'
              ' per-round ratios, 95% bootstrap interval):')
        print()
        print('| variant | rounds | calls/s ratio | per-round range | CPU-bound ratio (single us/call over variant) |')
        print('|---|---|---|---|---|')
        for row in rows:
            print(row)
        print()


def print_targets(stats, runs):
    single_held = stats.get(('held', 'single'))
    print('### Targets')
    print()
    print('2 nodes vs one process, held-link calls/s over TLS, same core (issue #3: >= {}):'.format(
        TARGET_CALLS_RATIO))
    print()
    print('| variant | calls/s | vs single calls/s | target | CPU-bound (single us/call / variant us/call) | server cores |')
    print('|---|---|---|---|---|---|')
    for mode in MODES:
        for n in (1, 2):
            s = stats.get(('held', '{}-{}'.format(mode, n)))
            if s is None or single_held is None:
                continue
            r = ratio(s['rate'], single_held['rate'])
            cpu = ratio(single_held['server_us'], s['server_us'])
            print('| {}-{} | {} | {} | {} | {} | {} |'.format(
                mode, n, fmt(s['rate']), fmt(r, 3),
                verdict(r, TARGET_CALLS_RATIO) if n == 2 else '-',
                fmt(cpu, 3), fmt(s['server_cores'], 2)))
    print()

    print('Cost of the controller path: server CPU (process tree) per operation against `--nodes 0`'
          ' (issue #3: dispatch <= {}x per new TLS session):'.format(TARGET_DISPATCH_COST))
    print()
    print('(in brackets: of which the controller process)')
    print()
    print('| variant | held us/call | x single | sess us/session | x single | full us/session | x single | target (dispatch, full) | full x shared-N |')
    print('|---|---|---|---|---|---|---|---|---|')
    for mode in MODES:
        for n in (1, 2):
            v = '{}-{}'.format(mode, n)
            row = [v]
            have = False
            for bench in ('held', 'sess', 'full'):
                s, base = stats.get((bench, v)), stats.get((bench, 'single'))
                us = s['server_us'] if s else None
                have = have or s is not None
                cell = fmt(us, 2)
                if s and s['root_us'] is not None:
                    cell += ' [{}]'.format(fmt(s['root_us'], 2))
                row += [cell, fmt(ratio(us, base['server_us'] if base else None), 3)]
            if not have:
                continue
            full, base = stats.get(('full', v)), stats.get(('full', 'single'))
            r = ratio(full['server_us'] if full else None, base['server_us'] if base else None)
            row.append(verdict(r, TARGET_DISPATCH_COST, at_least=False) if mode == 'dispatch' else '-')
            shared = stats.get(('full', 'shared-{}'.format(n)))
            row.append(fmt(ratio(full['server_us'] if full else None,
                                 shared['server_us'] if shared else None), 3)
                       if mode == 'dispatch' else '-')
            print('| ' + ' | '.join(row) + ' |')
    print()

    print_paired(runs)

    print("Fairness, Jain's index over per-node counts with 2 nodes, medians [range] (issue #3: >= {} for {}):".format(
        TARGET_JAIN, ' and '.join(JAIN_MODES)))
    print()
    print('| mode | held (calls) | sess (accepted) | full (accepted) | target |')
    print('|---|---|---|---|---|')
    for mode in MODES:
        v = '{}-2'.format(mode)
        cells, worst = [], None
        for bench in ('held', 'sess', 'full'):
            s = stats.get((bench, v))
            if s is None or s['jain'] is None:
                cells.append('-')
                continue
            cells.append('{} [{}]'.format(fmt(s['jain'], 4), spread(s['jains'], 4)))
            worst = s['jain'] if worst is None else min(worst, s['jain'])
        if all(c == '-' for c in cells):
            continue
        target = verdict(worst, TARGET_JAIN) + ' (worst median)' if mode in JAIN_MODES and worst is not None else '-'
        print('| {} | {} | {} |'.format(mode, ' | '.join(cells), target))
    print()

    print('TLS resumption with 2 nodes, fraction of reconnecting sessions resumed (issue #4: >= {}):'.format(
        TARGET_RESUMED))
    print()
    print('| variant | bench | resumed median [range] | target |')
    print('|---|---|---|---|')
    for bench in ('sess', 'sshared'):
        for mode in MODES:
            s = stats.get((bench, '{}-2'.format(mode)))
            if s is None or s['resumed'] is None:
                continue
            print('| {}-2 | {} | {} [{}] | {} |'.format(
                mode, bench, fmt(s['resumed'], 3), spread(s['resumed_all'], 3),
                verdict(s['resumed'], TARGET_RESUMED)))
    print()


def main():
    if len(sys.argv) != 2 or sys.argv[1].startswith('-'):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        sys.exit(64)
    runs = load(sys.argv[1])
    stats = print_tables(runs)
    print_targets(stats, runs)


if __name__ == '__main__':
    main()
