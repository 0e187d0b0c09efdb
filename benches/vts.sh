#!/usr/bin/env bash
# VTS figures for BENCHMARKS.md (issue #15), interleaved rounds:
#   v1  the stock VPy client (its default: VTS), sequential echo('hello'):
#       against vole serve --vts vs against a stock VPy VTS service
#   v2  vole bench over VTS vs over TLS against one vole serve, 64 links x 1
#       and 8 links x 16 in flight (64-byte echo)
#
# usage: benches/vts.sh [-r RUNS] [-d SECS] [-o DIR]
# Environment: VOLE (default target/release/vole), VPY (default
# target/vpy-venv/bin/python), SERVER_CPU (0), CLIENT_CPU (1).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
runs=3
duration=5
out=""
while getopts "r:d:o:h" opt; do
    case $opt in
        r) runs=$OPTARG ;;
        d) duration=$OPTARG ;;
        o) out=$OPTARG ;;
        h) sed -n '2,12p' "$0"; exit 0 ;;
        *) exit 64 ;;
    esac
done
vole=${VOLE:-$root/target/release/vole}
vpy=${VPY:-$root/target/vpy-venv/bin/python}
server_cpu=${SERVER_CPU:-0}
client_cpu=${CLIENT_CPU:-1}
[[ -x $vole ]] || { echo "no vole binary at $vole (cargo build --release)" >&2; exit 64; }
if [[ -z $out ]]; then out=$(mktemp -d /tmp/vole-vts.XXXXXX); else mkdir -p "$out"; fi
keys=$root/transport/tests/fixtures/vts/keys.json
key_pem=$root/transport/tests/fixtures/vts/server-key.pem
state=$(mktemp -d /tmp/vole-vts-state.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$state"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# One vole serve (TLS and VTS, one process, one worker) for every run.
vport=$(free_port)
taskset -c "$server_cpu" "$vole" serve --nodes 0 --threads 1 --listen "127.0.0.1:$vport" \
    --vts --vts-key "$key_pem" --state-dir "$state" --log-level warn >"$out/vole.log" 2>&1 &
vole_pid=$!
pids+=("$vole_pid")
# The VPy VTS service.
pport=$(free_port)
taskset -c "$server_cpu" "$vpy" "$here/vpy/echo_service.py" "$pport" "$keys" >"$out/vpy.log" 2>&1 &
vpy_pid=$!
pids+=("$vpy_pid")
for p in $vport $pport; do
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break
        sleep 0.1
    done
done
pin=$(python3 - "$key_pem" <<'PY'
import subprocess, sys
der = subprocess.run(['openssl', 'rsa', '-in', sys.argv[1], '-RSAPublicKey_out', '-outform', 'DER'],
                     capture_output=True, check=True).stdout
import hashlib; print(hashlib.sha256(der).hexdigest())
PY
)

results=$out/results.jsonl
: >"$results"
for round in $(seq "$runs"); do
    for target in vole vpy; do
        if [[ $target == vole ]]; then port=$vport; spid=$vole_pid; else port=$pport; spid=$vpy_pid; fi
        line=$(VOLE_BENCH_VTS=1 taskset -c "$client_cpu" "$vpy" "$here/vpy/echo_client.py" \
            "vop://127.0.0.1:$port/" "$duration" 1 "$spid")
        echo "{\"scenario\":\"v1\",\"variant\":\"$target\",\"round\":$round,\"result\":$line}" >>"$results"
    done
    for shape in "64 1" "8 16"; do
        set -- $shape
        for transport in tls vts; do
            if [[ $transport == vts ]]; then flags=(--vts --pin "$pin"); else flags=(--state-dir "$state"); fi
            line=$(taskset -c "$client_cpu" "$vole" bench --target "vop://localhost:$vport/text/echo/" \
                -n "$1" -m "$2" -d "$duration" -w 1 --threads 1 --server-pid "$vole_pid" \
                --json --quiet "${flags[@]}")
            echo "{\"scenario\":\"v2\",\"variant\":\"$transport-$1x$2\",\"round\":$round,\"result\":$line}" >>"$results"
        done
    done
done
python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault((r['scenario'], r['variant']), []).append(r['result'])
def med(xs): return statistics.median(xs) if xs else float('nan')
print('| scenario | variant | calls/s (median) | server µs/call (median) |')
print('|---|---|---|---|')
for (s, v), rs in sorted(by.items()):
    cps = [x['calls_per_s'] for x in rs]
    us = [x.get('server_us_per_call') for x in rs if x.get('server_us_per_call') is not None]
    print('| %s | %s | %.0f | %s |' % (s, v, med(cps), '%.1f' % med(us) if us else '-'))
PY
echo "results in $out"
