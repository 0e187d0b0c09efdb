#!/usr/bin/env bash
# The benchmark suite behind BENCHMARKS.md: vole against its baselines,
# measured in the same run on the same cores.
#
# usage: benches/run.sh [-r RUNS] [-d SECS] [-w SECS] [-s "a b c d"] [-o DIR]
#
#   -r RUNS      runs of each variant (default 3); variants alternate, and
#                which goes first alternates from round to round
#   -d SECS      measured seconds per run (default 5)
#   -w SECS      warm-up seconds per run (default 1)
#   -s LIST      scenarios to run (default "a b c d")
#   -o DIR       where results go (default: a new /tmp/vole-bench.* dir)
#
# Environment: VOLE (default $CARGO_TARGET_DIR/release/vole, else
# target/release/vole; build it with `cargo build --release`), VPY (the
# VPy venv's python, default target/vpy-venv/bin/python, which .ci/run creates), SERVER_CPU (0),
# CLIENT_CPU (1).
#
# Servers are pinned to SERVER_CPU and run one worker thread; load
# generators are pinned to CLIENT_CPU and run one worker thread. Every run
# appends one JSON line to DIR/results.jsonl; at the end
# benches/summarize.py prints medians and ratios (also saved as
# DIR/summary.md).
#
# Scenarios (issue #2):
#   a  64 links x 1 call in flight, 64-byte string, TLS:
#      vole serve vs the raw tokio-rustls length-prefixed echo
#   b  8 links x 16 calls in flight, TLS: vole vs raw TLS, pipelined alike
#   c  1 link x 1 call: vole (TLS and PLAIN) vs raw TCP (and raw TLS)
#   d  the VPy client, sequential echo('hello'): against a VPy PLAIN
#      service vs against vole serve --plain

set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
runs=3
duration=5
warmup=1
scenarios="a b c d"
out=""
while getopts "r:d:w:s:o:h" opt; do
    case $opt in
        r) runs=$OPTARG ;;
        d) duration=$OPTARG ;;
        w) warmup=$OPTARG ;;
        s) scenarios=$OPTARG ;;
        o) out=$OPTARG ;;
        h) sed -n '2,31p' "$0"; exit 0 ;;
        *) exit 64 ;;
    esac
done

vole=${VOLE:-${CARGO_TARGET_DIR:-$root/target}/release/vole}
vpy=${VPY:-$root/target/vpy-venv/bin/python}
server_cpu=${SERVER_CPU:-0}
client_cpu=${CLIENT_CPU:-1}
[[ -x $vole ]] || { echo "no vole binary at $vole (cargo build --release, or set VOLE)" >&2; exit 64; }
command -v taskset >/dev/null || { echo "taskset is missing (apt-get install util-linux)" >&2; exit 64; }
if [[ -z $out ]]; then out=$(mktemp -d /tmp/vole-bench.XXXXXX); else mkdir -p "$out"; fi
state=$out/state
mkdir -p "$state"
: > "$out/servers.txt"
results=$out/results.jsonl
: > "$results"
log=$out/bench.log

pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT

# start_server NAME CMD... : starts CMD pinned to the server CPU, waits for
# its "listening on ADDR" line; sets $server_pid and $server_addr.
start_server() {
    local name=$1; shift
    echo "$name: taskset -c $server_cpu $*" >> "$out/servers.txt"
    taskset -c "$server_cpu" "$@" > "$out/$name.out" 2> "$out/$name.err" &
    server_pid=$!
    pids+=("$server_pid")
    for _ in $(seq 100); do
        server_addr=$(sed -n 's/^listening on //p' "$out/$name.out" | head -n1)
        [[ -n $server_addr ]] && return 0
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "server $name did not start; see $out/$name.err" >&2
    cat "$out/$name.err" >&2
    exit 70
}

stop_server() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# bench LABEL PID TARGET ARGS... : one `vole bench` run, appended to results.
bench() {
    local label=$1 pid=$2 target=$3; shift 3
    local cmd=(taskset -c "$client_cpu" "$vole" bench --threads 1 --target "$target"
        --duration "$duration" --warmup "$warmup" --server-pid "$pid"
        --state-dir "$state" --json --label "$label" "$@")
    echo "# ${cmd[*]}" >> "$log"
    local line
    line=$("${cmd[@]}" 2>> "$log")
    echo "$line" | jq -c --arg cmd "${cmd[*]}" '. + {command: $cmd}' >> "$results"
    echo "$line" | jq -r '"  \(.label): \(.calls_per_s) calls/s, p50 \(.latency_us.p50) us, p99 \(.latency_us.p99) us, errors \(.errors), server \(.server_us_per_call) us/call"'
}

# vpy_client LABEL PID URL : one run of the VPy load script.
vpy_client() {
    local label=$1 pid=$2 url=$3
    local cmd=(taskset -c "$client_cpu" "$vpy" "$here/vpy/echo_client.py" "$url" "$duration" "$warmup" "$pid")
    echo "# ${cmd[*]}" >> "$log"
    local line
    line=$("${cmd[@]}" 2>> "$log")
    echo "$line" | jq -c --arg l "$label" --arg cmd "${cmd[*]}" '. + {label: $l, command: $cmd}' >> "$results"
    echo "$line" | jq -r --arg l "$label" '"  \($l): \(.calls_per_s) calls/s, errors \(.errors), server \(.server_us_per_call) us/call"'
}

# alternate ROUND FN_A FN_B : runs A then B on odd rounds, B then A on even.
alternate() {
    if (( $1 % 2 )); then $2; $3; else $3; $2; fi
}

serve_vole() { start_server "$1" "$vole" serve --nodes 0 --threads 1 --listen 127.0.0.1:0 --state-dir "$state" "${@:2}"; }
serve_raw() { start_server "$1" "$vole" bench-server --threads 1 --listen 127.0.0.1:0 --state-dir "$state" "${@:2}"; }

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -srm), $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    echo "vole: $("$vole" --version), commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "runs $runs x ${duration}s (+${warmup}s warm-up); servers on cpu $server_cpu, load on cpu $client_cpu"
} | tee "$out/machine.txt"

# Make the dev certificate once, so no run pays for it.
serve_vole init
stop_server "$server_pid"

for s in $scenarios; do
    case $s in
    a|b)
        if [[ $s == a ]]; then shape=(--links 64 --inflight 1); else shape=(--links 8 --inflight 16); fi
        echo "scenario $s: ${shape[*]}, 64-byte payload, TLS"
        serve_vole "$s-vole"; vpid=$server_pid; vaddr=$server_addr
        serve_raw "$s-raw" --tls; rpid=$server_pid; raddr=$server_addr
        run_v() { bench "$s.vole-tls" "$vpid" "vop://$vaddr/text/echo/" "${shape[@]}" --payload 64; }
        run_r() { bench "$s.raw-tls" "$rpid" "raw-tls://$raddr" "${shape[@]}" --payload 64; }
        for i in $(seq "$runs"); do alternate "$i" run_v run_r; done
        stop_server "$vpid"; stop_server "$rpid"
        ;;
    c)
        echo "scenario c: 1 link x 1 call in flight, 64-byte payload"
        serve_vole c-vole --plain; vpid=$server_pid; vaddr=$server_addr
        serve_raw c-raw-tcp --plain; tpid=$server_pid; taddr=$server_addr
        serve_raw c-raw-tls --tls; spid=$server_pid; saddr=$server_addr
        shape=(--links 1 --inflight 1 --payload 64)
        run_vt() { bench c.vole-tls "$vpid" "vop://$vaddr/text/echo/" "${shape[@]}"; }
        run_vp() { bench c.vole-plain "$vpid" "vop://$vaddr/text/echo/" "${shape[@]}" --plain; }
        run_rt() { bench c.raw-tcp "$tpid" "raw-tcp://$taddr" "${shape[@]}"; }
        run_rs() { bench c.raw-tls "$spid" "raw-tls://$saddr" "${shape[@]}"; }
        run_vole_c() { run_vt; run_vp; }
        run_raw_c() { run_rt; run_rs; }
        for i in $(seq "$runs"); do alternate "$i" run_vole_c run_raw_c; done
        stop_server "$vpid"; stop_server "$tpid"; stop_server "$spid"
        ;;
    d)
        echo "scenario d: VPy client, sequential echo('hello'), PLAIN"
        if [[ ! -x $vpy ]]; then echo "  skipped: no VPy python at $vpy" >&2; continue; fi
        start_server d-vpy "$vpy" "$here/vpy/echo_service.py" 0
        ppid=$server_pid; paddr=$server_addr
        serve_vole d-vole --plain --no-tls; vpid=$server_pid; vaddr=$server_addr
        run_p() { vpy_client d.vpy-service "$ppid" "vop://$paddr/"; }
        run_v() { vpy_client d.vole-service "$vpid" "vop://$vaddr/"; }
        for i in $(seq "$runs"); do alternate "$i" run_v run_p; done
        stop_server "$ppid"; stop_server "$vpid"
        ;;
    *) echo "unknown scenario $s" >&2; exit 64 ;;
    esac
done

echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/machine.txt"
python3 "$here/summarize.py" "$results" | tee "$out/summary.md"
echo "server commands: $out/servers.txt; client commands: the \"command\" field of $results"
echo "results in $out"
