#!/usr/bin/env bash
# A/B of the server tree's CPU per new TLS session between vole binaries
# or balancing modes: for each round, each variant in turn serves
# (`--nodes N --balance MODE`, the tree pinned to SERVER_CPU) and
# `vole bench --sessions --no-resume` (32 workers, pinned to CLIENT_CPU)
# runs against it. A variant is a binary, or BIN@MODE for a mode other
# than MODE. Prints one line per run: sessions, the tree's µs per session
# (`vole bench --server-tree`) and the controller's own µs per session (its
# threads' run time from /proc/PID/task/*/schedstat, so nodes are not
# counted), alternating their order from round to round.
# `benches/summarize_ab.py` pairs the rounds.
#
# usage: benches/ab_sessions.sh ROUNDS VARIANT [VARIANT...]
# Environment: MODE (dispatch), NODES (1), DUR (4 s), SERVER_CPU (0),
# CLIENT_CPU (1).
set -euo pipefail
if [[ $# -lt 2 || $1 == -* ]]; then
    echo "usage: $0 ROUNDS VARIANT [VARIANT...]   (VARIANT: BIN or BIN@MODE)" >&2
    exit 64
fi
rounds=$1; shift
mode=${MODE:-dispatch}; nodes=${NODES:-1}; dur=${DUR:-4}
scpu=${SERVER_CPU:-0}; ccpu=${CLIENT_CPU:-1}
work=$(mktemp -d /tmp/vole-ab.XXXXXX)
pid=""
cleanup() { [[ -z $pid ]] || kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
ctl_ns() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {print s}'; }
for r in $(seq "$rounds"); do
    # Even rounds run the variants in reverse order, so neither always
    # runs first (the host drifts within a round too).
    order=$(seq "$#")
    (( r % 2 == 0 )) && order=$(seq "$#" -1 1)
    for i in $order; do
        variant=${!i}
        bin=${variant%@*}; vmode=$mode
        [[ $variant == *@* ]] && vmode=${variant##*@}
        state=$work/state-$i   # one state dir (dev certificate) per binary
        out=$work/out-$r-$i
        taskset -c "$scpu" "$bin" serve --nodes "$nodes" --threads 1 --listen 127.0.0.1:0 \
            --state-dir "$state" --admin-socket "$work/admin-$r-$i.sock" --grace 2 \
            --balance "$vmode" > "$out" 2> "$out.err" &
        pid=$!
        for _ in $(seq 100); do
            grep -q '^ready:' "$out" 2>/dev/null && break
            kill -0 "$pid" 2>/dev/null || { cat "$out.err" >&2; exit 70; }
            sleep 0.1
        done
        addr=$(sed -n 's/^listening on //p' "$out" | head -n1)
        [[ -n $addr ]] || { echo "$bin did not start" >&2; cat "$out.err" >&2; exit 70; }
        c0=$(ctl_ns "$pid")
        json=$(taskset -c "$ccpu" "$bin" bench --threads 1 --target "vop://$addr/text/echo/" \
            --sessions --links 32 --no-resume --payload 64 --duration "$dur" --warmup 0 \
            --server-pid "$pid" --server-tree --state-dir "$state" --json 2>> "$out.err")
        c1=$(ctl_ns "$pid")
        kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
        n=$(jq .sessions <<< "$json")
        printf '%s %s sessions=%s tree_us=%s ctl_us=%s\n' "$r" "$variant" "$n" \
            "$(jq .server_us_per_call <<< "$json")" \
            "$(awk -v a="$c0" -v b="$c1" -v n="$n" 'BEGIN {printf "%.2f", (b - a) / 1000 / n}')"
    done
done
