#!/usr/bin/env bash
# quick A/B: server A vs B, same client (A), 64x1 TLS echo, pinned
set -u
A=$1; B=$2; R=$3
for r in $(seq $R); do
  order="A B"; (( r % 2 == 0 )) && order="B A"
  for v in $order; do
    bin=$A; [[ $v == B ]] && bin=$B
    rm -f srv.out
    taskset -c 0 $bin serve --nodes 0 --threads 1 --listen 127.0.0.1:0 --state-dir /tmp/abq/state-$v > srv.out 2>/dev/null &
    pid=$!
    for i in $(seq 100); do addr=$(sed -n 's/^listening on //p' srv.out | head -1); [[ -n $addr ]] && break; sleep 0.05; done
    sleep 0.3
    line=$(taskset -c 1 $A bench --target vop://$addr/text/echo/ --links 64 --inflight 1 --payload 64 --duration 4 --warmup 1 --threads 1 --json --server-pid $pid --state-dir /tmp/abq/state-$v 2>/dev/null)
    echo "$v $r $(echo "$line" | jq -r '"\(.calls_per_s|floor) \(.server_us_per_call)"')"
    kill $pid; wait $pid 2>/dev/null
  done
done
