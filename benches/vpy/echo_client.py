"""Sequential VPy echo calls for a fixed time, for `benches/run.sh`
scenario (d).

Usage: echo_client.py URL SECONDS [WARMUP_SECONDS [SERVER_PID]]

Resolves URL (e.g. vop://127.0.0.1:4433/) over PLAIN (over VTS, VPy's
default, when VOLE_BENCH_VTS=1), then calls
`echo('hello')` one call at a time: WARMUP_SECONDS (default 1) unmeasured,
then SECONDS measured. Prints one JSON line:
{"calls": N, "seconds": S, "calls_per_s": R, "errors": E, ...}; with
SERVER_PID also the server's CPU time over the measured seconds (from
/proc/PID/task/*/schedstat) and per call.
"""

import json
import os
import sys
import time

from versile.conf import Versile
from versile.quick import VUrl
from versile.reactor.io.url import VOPInsecureUrlConfig


def cpu_seconds(pid):
    """CPU time of every thread of process `pid`, or None."""
    total, seen = 0, False
    task_dir = '/proc/%s/task' % pid
    try:
        tasks = os.listdir(task_dir)
    except OSError:
        return None
    for tid in tasks:
        try:
            with open('%s/%s/schedstat' % (task_dir, tid)) as f:
                total += int(f.read().split()[0])
                seen = True
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9 if seen else None


def main():
    url = sys.argv[1]
    seconds = float(sys.argv[2])
    warmup = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
    server_pid = sys.argv[4] if len(sys.argv) > 4 else None
    Versile.set_agpl_internal_use()
    if os.environ.get('VOLE_BENCH_VTS') == '1':
        gw = VUrl.resolve(url)
    else:
        gw = VUrl.resolve(url, conf=VOPInsecureUrlConfig())
    errors = 0
    end = time.monotonic() + warmup
    while time.monotonic() < end:
        gw.echo('hello')
    calls = 0
    cpu0 = cpu_seconds(server_pid) if server_pid else None
    self0 = cpu_seconds('self')
    start = time.monotonic()
    end = start + seconds
    while True:
        now = time.monotonic()
        if now >= end:
            break
        try:
            if gw.echo('hello') == 'hello':
                calls += 1
            else:
                errors += 1
        except Exception:
            errors += 1
    elapsed = time.monotonic() - start
    cpu1 = cpu_seconds(server_pid) if server_pid else None
    self1 = cpu_seconds('self')
    result = {'calls': calls, 'seconds': round(elapsed, 3),
              'calls_per_s': round(calls / elapsed, 1), 'errors': errors,
              'server_cores': None, 'server_us_per_call': None,
              'client_cores': None, 'client_us_per_call': None}
    for who, a, b in (('server', cpu0, cpu1), ('client', self0, self1)):
        if a is not None and b is not None and calls:
            result[who + '_cores'] = round((b - a) / elapsed, 3)
            result[who + '_us_per_call'] = round((b - a) * 1e6 / calls, 3)
    print(json.dumps(result), flush=True)
    gw._v_link.shutdown(force=True)


if __name__ == '__main__':
    main()
