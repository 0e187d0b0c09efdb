#!/usr/bin/env bash
# New sessions, vole against raw TLS in one interleaved run (issue #17):
# the server CPU per new session of `vole serve --nodes 0` (connect, VOP,
# TLS, link handshake, resolve, one call, close) against that of the raw
# tokio-rustls echo of `vole bench-server --tls` (connect, TLS, one echo,
# close), with full handshakes and with resumption.
#
# usage: benches/sessions.sh [-r RUNS] [-d SECS] [-w SECS] [-b "full resumed"] [-o DIR]
#
#   -r RUNS   rounds (default 3); the server order flips every round
#   -d SECS   measured seconds per run (default 5)
#   -w SECS   warm-up seconds per run (default 1)
#   -b LIST   full (--no-resume) and/or resumed (--cache-per-worker)
#   -o DIR    where results go (default: a new /tmp/vole-sessions.* dir)
#
# Environment: VOLE (default $CARGO_TARGET_DIR/release/vole, else
# target/release/vole), SERVER_CPU (0), CLIENT_CPU (1), WORKERS (32).
# Both servers run one worker thread pinned to SERVER_CPU and both issue
# stateless TLS tickets; the load generator runs one thread on CLIENT_CPU.
# Every run appends one JSON line to DIR/results.jsonl; the summary
# (medians, and the median of per-round vole/raw ratios) goes to
# DIR/summary.md.

set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
runs=3
duration=5
warmup=1
benches="full resumed"
out=""
while getopts "r:d:w:b:o:h" opt; do
    case $opt in
        r) runs=$OPTARG ;;
        d) duration=$OPTARG ;;
        w) warmup=$OPTARG ;;
        b) benches=$OPTARG ;;
        o) out=$OPTARG ;;
        h) sed -n '2,23p' "$0"; exit 0 ;;
        *) exit 64 ;;
    esac
done
for b in $benches; do
    case $b in full|resumed) ;; *) echo "unknown bench $b" >&2; exit 64 ;; esac
done

vole=${VOLE:-${CARGO_TARGET_DIR:-$root/target}/release/vole}
server_cpu=${SERVER_CPU:-0}
client_cpu=${CLIENT_CPU:-1}
workers=${WORKERS:-32}
[[ -x $vole ]] || { echo "no vole binary at $vole (cargo build --release, or set VOLE)" >&2; exit 64; }
command -v jq >/dev/null || { echo "jq is missing" >&2; exit 64; }
if [[ -z $out ]]; then out=$(mktemp -d /tmp/vole-sessions.XXXXXX); else mkdir -p "$out"; fi
state=$out/state
mkdir -p "$state"
results=$out/results.jsonl
: > "$results"
: > "$out/servers.txt"
log=$out/bench.log
: > "$log"

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server NAME CMD... : sets $server_pid and $server_addr.
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
    exit 70
}

# bench ROUND LABEL PID TARGET WHICH
bench() {
    local round=$1 label=$2 pid=$3 target=$4 which=$5
    local shape=(--sessions --links "$workers" --no-resume)
    [[ $which == resumed ]] && shape=(--sessions --links "$workers" --cache-per-worker)
    local cmd=(taskset -c "$client_cpu" "$vole" bench --threads 1 --target "$target"
        "${shape[@]}" --payload 64 --duration "$duration" --warmup "$warmup"
        --server-pid "$pid" --state-dir "$state" --json --label "$label.$which")
    echo "# ${cmd[*]}" >> "$log"
    local line
    line=$("${cmd[@]}" 2>> "$log")
    echo "$line" | jq -c --arg cmd "${cmd[*]}" --arg b "$which" --argjson r "$round" \
        '. + {bench: $b, round: $r, command: $cmd}' >> "$results"
    echo "$line" | jq -r '"  \(.label): \(.sessions_per_s) sessions/s, resumed \(.resumed_fraction), p50 \(.latency_us.p50) us, errors \(.errors), server \(.server_us_per_call) us/session"'
}

{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -srm), $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
    echo "vole: $("$vole" --version), commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "runs $runs x ${duration}s (+${warmup}s warm-up); servers on cpu $server_cpu, load on cpu $client_cpu; $workers workers"
} | tee "$out/machine.txt"

start_server vole "$vole" serve --nodes 0 --threads 1 --listen 127.0.0.1:0 --state-dir "$state"
vpid=$server_pid; vaddr=$server_addr
# After vole made the dev certificate, so both use the one certificate.
start_server raw "$vole" bench-server --tls --threads 1 --listen 127.0.0.1:0 --state-dir "$state"
rpid=$server_pid; raddr=$server_addr

for i in $(seq "$runs"); do
    echo "round $i"
    for b in $benches; do
        run_v() { bench "$i" vole "$vpid" "vop://$vaddr/text/echo/" "$b"; }
        run_r() { bench "$i" raw "$rpid" "raw-tls://$raddr" "$b"; }
        if (( i % 2 )); then run_v; run_r; else run_r; run_v; fi
    done
done

echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/machine.txt"
jq -rs '
  def median: sort | if length == 0 then null elif length % 2 == 1 then .[length/2|floor] else (.[length/2-1] + .[length/2]) / 2 end;
  def r2: . * 100 | round / 100;
  "| bench | vole us/session | raw TLS us/session | vole / raw (median of rounds) | vole sessions/s | raw sessions/s | resumed vole / raw |",
  "|---|---|---|---|---|---|---|",
  (group_by(.bench)[] as $g | $g[0].bench as $b
   | ($g | map(select(.label | startswith("vole."))))   as $v
   | ($g | map(select(.label | startswith("raw."))))    as $r
   | ([ $v[] as $x | $r[] | select(.round == $x.round) | $x.server_us_per_call / .server_us_per_call ] | median) as $ratio
   | "| \($b) | \($v | map(.server_us_per_call) | median | r2) | \($r | map(.server_us_per_call) | median | r2) | **\($ratio | r2)** | \($v | map(.sessions_per_s) | median | round) | \($r | map(.sessions_per_s) | median | round) | \($v | map(.resumed_fraction) | median) / \($r | map(.resumed_fraction) | median) |")
' "$results" | tee "$out/summary.md"
echo "results in $out"
