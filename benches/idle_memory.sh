#!/usr/bin/env bash
# What an idle link costs a `vole serve --nodes 0` process (issue #17):
# its RSS before and with N idle links held by benches/hold_links.rs,
# for TLS and PLAIN, and the difference per link.
#
# usage: benches/idle_memory.sh [-n LINKS] [-r RUNS] [-o DIR]
#
# Environment: VOLE (default $CARGO_TARGET_DIR/release/vole, else
# target/release/vole), HOLD (default: the newest
# target/release/deps/hold_links-*; build it with
# `cargo bench --bench hold_links --no-run`), SERVER_CPU (0), CLIENT_CPU (1).

set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
links=5000
runs=1
out=""
while getopts "n:r:o:h" opt; do
    case $opt in
        n) links=$OPTARG ;;
        r) runs=$OPTARG ;;
        o) out=$OPTARG ;;
        h) sed -n '2,11p' "$0"; exit 0 ;;
        *) exit 64 ;;
    esac
done
target_dir=${CARGO_TARGET_DIR:-$root/target}
vole=${VOLE:-$target_dir/release/vole}
hold=${HOLD:-$(ls -t "$target_dir"/release/deps/hold_links-* 2>/dev/null | grep -v '\.d$' | head -n1)}
[[ -x $vole ]] || { echo "no vole binary at $vole" >&2; exit 64; }
[[ -x $hold ]] || { echo "no hold_links binary (cargo bench --bench hold_links --no-run)" >&2; exit 64; }
if [[ -z $out ]]; then out=$(mktemp -d /tmp/vole-idle.XXXXXX); else mkdir -p "$out"; fi
ulimit -n $(( links * 2 + 1000 ))
state=$out/state
mkdir -p "$state"
rss() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ); vole $("$vole" --version), commit $(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet HEAD || echo ' (with uncommitted changes)'); $links links" | tee "$out/machine.txt"
: > "$out/results.txt"
server_pid=""
cleanup() { [[ -z $server_pid ]] || { kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; } || true; }
trap cleanup EXIT
for r in $(seq "$runs"); do
    for mode in tls plain; do
        flags=()
        [[ $mode == plain ]] && flags=(--plain --no-tls)
        taskset -c "${SERVER_CPU:-0}" "$vole" serve --nodes 0 --threads 1 --listen 127.0.0.1:0 \
            --state-dir "$state" --max-clients $(( links + 100 )) "${flags[@]}" > "$out/serve.out" 2> "$out/serve.err" &
        server_pid=$!
        addr=""
        for _ in $(seq 100); do
            addr=$(sed -n 's/^listening on //p' "$out/serve.out" | head -n1)
            [[ -n $addr ]] && break
            sleep 0.1
        done
        [[ -n $addr ]] || { echo "server did not start" >&2; cat "$out/serve.err" >&2; exit 70; }
        before=$(rss "$server_pid")
        fifo=$out/hold.in; rm -f "$fifo"; mkfifo "$fifo"
        taskset -c "${CLIENT_CPU:-1}" "$hold" "$addr" "$links" "$mode" < "$fifo" > "$out/hold.out" 2> "$out/hold.err" &
        hold_pid=$!
        exec 3> "$fifo"
        for _ in $(seq 600); do
            grep -q '^held' "$out/hold.out" && break
            kill -0 "$hold_pid" 2>/dev/null || break
            sleep 0.1
        done
        grep -q '^held' "$out/hold.out" || { echo "hold_links failed" >&2; cat "$out/hold.err" >&2; exit 70; }
        # Idle links give back their buffers after a second (link::driver::IDLE_RELEASE).
        sleep 5
        with=$(rss "$server_pid")
        exec 3>&-
        wait "$hold_pid" || true
        line="$mode run $r: rss $before KiB idle, $with KiB with $links links: $(( (with - before) * 1024 / links )) bytes per link"
        echo "$line" | tee -a "$out/results.txt"
        kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
    done
done
echo "results in $out"
