#!/usr/bin/env bash
# A/B of two vole binaries over the suites behind BENCHMARKS.md: for each
# round, run.sh (one round of the chosen scenarios) and mp.sh (one round of
# the chosen modes and benches) run with binary A and with binary B, the
# order alternating from round to round, each with its own baselines
# measured in the same run. At the end each binary's runs are summarized
# by benches/summarize.py and benches/summarize_mp.py, so their
# vole-over-baseline ratios can be set side by side.
#
# usage: benches/ab_suites.sh ROUNDS BIN_A BIN_B
# Environment: SCENARIOS ("a b"), MODES ("grant dispatch"), NODES ("2"),
# BENCHES ("held full"), DUR (4), WARM (1), OUT (a new /tmp/vole-ab-suites.*).
set -euo pipefail
if [[ $# -ne 3 || $1 == -* ]]; then
    echo "usage: $0 ROUNDS BIN_A BIN_B" >&2
    exit 64
fi
here=$(cd "$(dirname "$0")" && pwd)
rounds=$1 a=$2 b=$3
for bin in "$a" "$b"; do
    [[ -x $bin ]] || { echo "not an executable: $bin" >&2; exit 64; }
done
scenarios=${SCENARIOS:-"a b"}
modes=${MODES:-"grant dispatch"}
nodes=${NODES:-2}
benches=${BENCHES:-"held full"}
dur=${DUR:-4}
warm=${WARM:-1}
out=${OUT:-$(mktemp -d /tmp/vole-ab-suites.XXXXXX)}
mkdir -p "$out"
for r in $(seq "$rounds"); do
    order="A B"
    (( r % 2 == 0 )) && order="B A"
    for v in $order; do
        bin=$a
        [[ $v == B ]] && bin=$b
        echo "== round $r, binary $v ($bin)"
        VOLE=$bin "$here/run.sh" -r 1 -d "$dur" -w "$warm" -s "$scenarios" -o "$out/run-$v-$r" >/dev/null
        VOLE=$bin "$here/mp.sh" -r 1 -d "$dur" -w "$warm" -m "$modes" -n "$nodes" -b "$benches" \
            -o "$out/mp-$v-$r" >/dev/null
    done
done
for v in A B; do
    mkdir -p "$out/run-$v" "$out/mp-$v"
    cat "$out"/run-"$v"-*/results.jsonl >"$out/run-$v/results.jsonl"
    cat "$out"/mp-"$v"-*/results.jsonl >"$out/mp-$v/results.jsonl"
    echo "== binary $v: run.sh"
    python3 "$here/summarize.py" "$out/run-$v/results.jsonl"
    echo "== binary $v: mp.sh"
    python3 "$here/summarize_mp.py" "$out/mp-$v/results.jsonl"
done
echo "results in $out"
