#!/usr/bin/env bash
# The multi-process figures behind BENCHMARKS.md (issue #3, and the TLS
# resumption figure of issue #4): every balance mode with 1 and 2 nodes
# against the one-process server (--nodes 0), in one run, on the same cores.
#
# usage: benches/mp.sh [-r RUNS] [-d SECS] [-w SECS] [-m MODES] [-n NODES]
#                      [-b BENCHES] [-o DIR]
#
#   -r RUNS      rounds (default 3); each round starts every variant's
#                server afresh and runs its benches; the variant order is
#                reversed on even rounds
#   -d SECS      measured seconds per run (default 5)
#   -w SECS      warm-up seconds per run (default 1)
#   -m MODES     balance modes (default "grant shared dispatch reuseport")
#   -n NODES     node counts per mode (default "1 2")
#   -b BENCHES   benches per variant (default "held sess full"):
#                  held     64 links x 1 call in flight, 64-byte payload, TLS
#                           (scenario a of run.sh): calls/s, Jain over calls
#                  sess     new sessions, 32 workers, each with its own TLS
#                           session cache (32 reconnecting clients): sessions/s,
#                           resumed fraction, Jain over accepted connections
#                  full     new sessions, 32 workers, no resumption (every
#                           session a full TLS handshake)
#                  sshared  as sess, but one TLS session cache shared by the
#                           32 workers (vole bench's default; rustls keeps 8
#                           tickets per server, so some sessions find none)
#   -o DIR       where results go (default: a new /tmp/vole-mp.* dir)
#
# Environment: VOLE (default $CARGO_TARGET_DIR/release/vole, else
# target/release/vole; build it with `cargo build --release`), SERVER_CPU
# (0), CLIENT_CPU (1), WORKERS (32, the new-session workers).
#
# Variants: "single" is `vole serve --nodes 0 --threads 1`; "MODE-N" is
# `vole serve --nodes N --balance MODE --threads 1` (one worker thread per
# node). The whole server tree (controller and nodes) is pinned to
# SERVER_CPU, so every variant has the same one core; the load generator is
# pinned to CLIENT_CPU with one worker thread. Server CPU is that of the
# whole tree (`vole bench --server-tree`); per-node counts come from the
# admin socket (`vole bench --admin-socket`). Every run appends one JSON
# line to DIR/results.jsonl (the `vole bench --json` summary plus variant,
# bench, nodes, balance, round and the exact command); server commands go
# to DIR/servers.txt, machine notes to DIR/machine.txt; at the end
# benches/summarize_mp.py prints medians and ratios (also DIR/summary.md).

set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
runs=3
duration=5
warmup=1
modes="grant shared dispatch reuseport"
node_counts="1 2"
benches="held sess full"
out=""
while getopts "r:d:w:m:n:b:o:h" opt; do
    case $opt in
        r) runs=$OPTARG ;;
        d) duration=$OPTARG ;;
        w) warmup=$OPTARG ;;
        m) modes=$OPTARG ;;
        n) node_counts=$OPTARG ;;
        b) benches=$OPTARG ;;
        o) out=$OPTARG ;;
        h) sed -n '2,45p' "$0"; exit 0 ;;
        *) exit 64 ;;
    esac
done

vole=${VOLE:-${CARGO_TARGET_DIR:-$root/target}/release/vole}
server_cpu=${SERVER_CPU:-0}
client_cpu=${CLIENT_CPU:-1}
workers=${WORKERS:-32}
[[ -x $vole ]] || { echo "no vole binary at $vole (cargo build --release, or set VOLE)" >&2; exit 64; }
command -v taskset >/dev/null || { echo "taskset is missing (apt-get install util-linux)" >&2; exit 64; }
command -v jq >/dev/null || { echo "jq is missing" >&2; exit 64; }
for b in $benches; do
    case $b in held|sess|full|sshared) ;; *) echo "unknown bench $b" >&2; exit 64 ;; esac
done
for m in $modes; do
    case $m in grant|shared|dispatch|reuseport) ;; *) echo "unknown mode $m" >&2; exit 64 ;; esac
done
if [[ -z $out ]]; then out=$(mktemp -d /tmp/vole-mp.XXXXXX); else mkdir -p "$out"; fi
state=$out/state
mkdir -p "$state"
: > "$out/servers.txt"
results=$out/results.jsonl
: > "$results"
log=$out/bench.log
: > "$log"

server_pid=""
cleanup() {
    if [[ -n $server_pid ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server NAME NODES MODE : starts the variant's server tree pinned to
# the server CPU, waits for its "listening on ADDR" and "ready:" lines;
# sets $server_pid, $server_addr and $server_admin.
start_server() {
    local name=$1 nodes=$2 mode=$3
    server_admin=$out/admin-$name.sock
    rm -f "$server_admin"
    local cmd=("$vole" serve --nodes "$nodes" --threads 1 --listen 127.0.0.1:0
        --state-dir "$state" --admin-socket "$server_admin" --grace 2)
    [[ $nodes == 0 ]] || cmd+=(--balance "$mode")
    echo "$name: taskset -c $server_cpu ${cmd[*]}" >> "$out/servers.txt"
    taskset -c "$server_cpu" "${cmd[@]}" > "$out/$name.out" 2> "$out/$name.err" &
    server_pid=$!
    for _ in $(seq 200); do
        server_addr=$(sed -n 's/^listening on //p' "$out/$name.out" | head -n1)
        if [[ -n $server_addr ]] && grep -q '^ready:' "$out/$name.out" && [[ -S $server_admin ]]; then
            return 0
        fi
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "server $name did not start; see $out/$name.err" >&2
    cat "$out/$name.err" >&2
    exit 70
}

stop_server() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

# bench ROUND VARIANT NODES MODE BENCH : one `vole bench` run against the
# running server, appended to results.
bench() {
    local round=$1 variant=$2 nodes=$3 mode=$4 which=$5
    local shape
    case $which in
        held) shape=(--links 64 --inflight 1) ;;
        sess) shape=(--sessions --links "$workers" --cache-per-worker) ;;
        full) shape=(--sessions --links "$workers" --no-resume) ;;
        sshared) shape=(--sessions --links "$workers") ;;
    esac
    local cmd=(taskset -c "$client_cpu" "$vole" bench --threads 1
        --target "vop://$server_addr/text/echo/" "${shape[@]}" --payload 64
        --duration "$duration" --warmup "$warmup"
        --server-pid "$server_pid" --server-tree --admin-socket "$server_admin"
        --state-dir "$state" --json --label "$variant.$which")
    echo "# ${cmd[*]}" >> "$log"
    local line
    if ! line=$("${cmd[@]}" 2>> "$log"); then
        echo "  $variant.$which: vole bench failed (see $log)" >&2
        return 0
    fi
    echo "$line" | jq -c --arg cmd "${cmd[*]}" --arg v "$variant" --arg b "$which" \
        --argjson n "$nodes" --arg m "$mode" --argjson r "$round" \
        '. + {variant: $v, bench: $b, node_count: $n, balance: $m, round: $r, command: $cmd}' >> "$results"
    echo "$line" | jq -r '"  \(.label): \(if .mode == "sessions" then "\(.sessions_per_s) sessions/s, resumed \(.resumed_fraction)" else "\(.calls_per_s) calls/s" end), p50 \(.latency_us.p50) us, errors \(.errors), server \(.server_us_per_call) us/op on \(.server_cores) cores (\(.server_procs) procs), client \(.client_cores) cores, jain \(.jain)"'
}

# run_variant ROUND VARIANT NODES MODE
run_variant() {
    local round=$1 variant=$2 nodes=$3 mode=$4
    start_server "$variant" "$nodes" "$mode"
    for b in $benches; do
        bench "$round" "$variant" "$nodes" "$mode" "$b"
    done
    stop_server
}

variants=("single 0 single")
for m in $modes; do
    for n in $node_counts; do
        variants+=("$m-$n $n $m")
    done
done

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -srm), $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    echo "vole: $("$vole" --version), commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "runs $runs x ${duration}s (+${warmup}s warm-up); server tree on cpu $server_cpu, load on cpu $client_cpu"
    echo "variants: ${variants[*]%% *}; benches: $benches; new-session workers: $workers"
} | tee "$out/machine.txt"

# Make the dev certificate once, so no run pays for it.
start_server init 0 single
stop_server

for i in $(seq "$runs"); do
    echo "round $i"
    order=("${variants[@]}")
    if (( i % 2 == 0 )); then
        order=()
        for (( k=${#variants[@]}-1; k>=0; k-- )); do order+=("${variants[k]}"); done
    fi
    for v in "${order[@]}"; do
        read -r name nodes mode <<< "$v"
        run_variant "$i" "$name" "$nodes" "$mode"
    done
done

echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/machine.txt"
python3 "$here/summarize_mp.py" "$results" | tee "$out/summary.md"
echo "server commands: $out/servers.txt; client commands: the \"command\" field of $results"
echo "results in $out"
