#!/usr/bin/env python3
"""Medians and ratios of a `benches/run.sh` results file.

Usage: summarize.py RESULTS.jsonl

Each line is one run (a `vole bench --json` summary, or a VPy client
result) with a "label" such as "a.vole-tls". Prints a Markdown table of the
median of each label (with the range over runs) and, per scenario, the ratio
of vole to its baseline: of calls/s, and "CPU-bound" (the baseline's slower
side's CPU per call over vole's), which is what calls/s would give with both
processes saturating their cores and which contention barely moves.
"""

import json
import random
import statistics
import sys
from collections import OrderedDict

# scenario: (vole label, baseline label, target ratio or None)
PAIRS = [
    ('a', 'a.vole-tls', 'a.raw-tls', 0.75),
    ('b', 'b.vole-tls', 'b.raw-tls', 0.5),
    ('c', 'c.vole-tls', 'c.raw-tcp', None),
    ('c', 'c.vole-plain', 'c.raw-tcp', None),
    ('c', 'c.vole-tls', 'c.raw-tls', None),
    ('d', 'd.vole-service', 'd.vpy-service', None),
]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def bootstrap_median(values, n=10000, seed=1):
    """A 95% interval of the median of `values` (resampled with
    replacement; a fixed seed, so the same input gives the same interval)."""
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(n))
    return meds[int(0.025 * n)], meds[int(0.975 * n) - 1]


def fmt(v, digits=0):
    if v is None:
        return '-'
    return '{:,.{}f}'.format(v, digits)


def spread(values, digits=0):
    values = [v for v in values if v is not None]
    if not values:
        return '-'
    return '{}..{}'.format(fmt(min(values), digits), fmt(max(values), digits))


def main():
    if len(sys.argv) != 2 or sys.argv[1].startswith('-'):
        print('usage: summarize.py RESULTS.JSONL', file=sys.stderr)
        sys.exit(64)
    runs = OrderedDict()
    with open(sys.argv[1]) as f:
        for line in f:
            line = line.strip()
            if line:
                r = json.loads(line)
                runs.setdefault(r['label'], []).append(r)

    def lat(r, p):
        return (r.get('latency_us') or {}).get(p)

    stats = {}
    print('| variant | runs | calls/s median [range] | p50 us | p99 us | p99.9 us | server us/call | client us/call | server cores | client cores | errors |')
    print('|---|---|---|---|---|---|---|---|---|---|---|')
    for label, rs in runs.items():
        cps = [r['calls_per_s'] for r in rs]
        s = {
            'cps': median(cps),
            'p50': median([lat(r, 'p50') for r in rs]),
            'p99': median([lat(r, 'p99') for r in rs]),
            'p999': median([lat(r, 'p999') for r in rs]),
            'server_us': median([r.get('server_us_per_call') for r in rs]),
            'client_us': median([r.get('client_us_per_call') for r in rs]),
            # The slower side's CPU per call: with both sides saturated it
            # sets the throughput, and it is robust to contention.
            'slow_us': median([max(r.get('server_us_per_call') or 0,
                                   r.get('client_us_per_call') or 0) or None
                               for r in rs]),
        }
        stats[label] = s
        print('| {} | {} | {} [{}] | {} | {} | {} | {} | {} | {} | {} | {} |'.format(
            label, len(rs), fmt(s['cps']), spread(cps),
            fmt(s['p50'], 1), fmt(s['p99'], 1), fmt(s['p999'], 1),
            fmt(s['server_us'], 2), fmt(s['client_us'], 2),
            fmt(median([r.get('server_cores') for r in rs]), 2),
            fmt(median([r.get('client_cores') for r in rs]), 2),
            sum(r.get('errors', 0) for r in rs)))

    print()
    print('| scenario | vole / baseline | calls/s ratio | target | CPU-bound ratio | p50 ratio | p99 ratio | server us/call ratio |')
    print('|---|---|---|---|---|---|---|---|')
    for scenario, v, b, target in PAIRS:
        if v not in stats or b not in stats:
            continue
        sv, sb = stats[v], stats[b]

        def ratio(key):
            if sv[key] is None or not sb[key]:
                return None
            return sv[key] / sb[key]

        r = ratio('cps')
        # Baseline's slower side over vole's: the throughput ratio both
        # would reach with each process saturating its own core.
        cpu_bound = (sb['slow_us'] / sv['slow_us']
                     if sv['slow_us'] and sb['slow_us'] else None)
        verdict = '-'
        if target is not None and r is not None:
            verdict = '>= {} {}'.format(target, 'met' if r >= target else 'MISSED')
        print('| {} | {} / {} | {} | {} | {} | {} | {} | {} |'.format(
            scenario, v, b, fmt(r, 2), verdict, fmt(cpu_bound, 2), fmt(ratio('p50'), 2),
            fmt(ratio('p99'), 2), fmt(ratio('server_us'), 2)))


if __name__ == '__main__':
    main()
