#!/usr/bin/env bash
# Reproduces the figures of RELIABILITY.md: runs the tests behind each
# scenario (each asserts its limit; a failed limit fails this script) with
# their output shown, and keeps the lines that carry the figures.
#
# usage: benches/reliability.sh [ROUNDS]     (default 1)
# Environment: OUT (default benches/results/<date>-reliability),
# VOLE_VPY_PYTHON (a Python with versile-python3; .ci/run makes one).
#
# The tests run one at a time (--test-threads=1) in a debug build, as CI
# runs them; times are wall-clock on whatever else the machine is doing.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-1}
if [[ ! $rounds =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [ROUNDS]" >&2
    exit 64
fi
out=${OUT:-benches/results/$(date +%F)-reliability}
mkdir -p "$out"
export VOLE_VPY_PYTHON=${VOLE_VPY_PYTHON:-$PWD/target/vpy-venv/bin/python}

# package, test target, test name filter, pattern of the figure lines
scenarios=(
    "vole operations binary_upgrade_hands_over upgrades?.under.load|controller .* -> .* in"
    "vole fd_limit a_node_at_its_descriptor_limit served.again|links.held"
    "vole fd_limit a_stopped_node_s_grants 20.links.served"
    "vole-node cancel_and_drain a_disconnect_cancels_running_calls_at_once all.cancelled"
    "vole budgets . RSS|witness|budget"
    "vole multiprocess killed_node_is_replaced replacement.pid"
    "vole dead_peers . session.gone"
    "vole deadlines a_deadline_cancels returned.after"
    "vole scaleout . via.haproxy|failover,|resumption.across|of.new.links"
)
{
    echo "# benches/reliability.sh $rounds, $(date -u +%FT%TZ), $(git rev-parse --short HEAD)"
    echo "# $(nproc) CPUs, $(uname -r), net.ipv4.tcp_migrate_req=$(cat /proc/sys/net/ipv4/tcp_migrate_req 2>/dev/null || echo '?')"
} > "$out/figures.txt"
for round in $(seq 1 "$rounds"); do
    for s in "${scenarios[@]}"; do
        read -r pkg target filter pattern <<<"$s"
        [[ $filter == . ]] && filter=""
        log="$out/round$round-$target-${filter:-all}.log"
        echo "== round $round: $pkg --test $target $filter"
        cargo test -q -p "$pkg" --test "$target" --locked -- --test-threads=1 --nocapture $filter >"$log" 2>&1 || {
            echo "FAILED: $pkg --test $target $filter (see $log)" | tee -a "$out/figures.txt"
            continue
        }
        grep -E "$pattern" "$log" | sed -e "s/^\\.*//" -e "s/^/[$target r$round] /" >>"$out/figures.txt" || true
    done
done
cat "$out/figures.txt"
! grep -q '^FAILED' "$out/figures.txt"
