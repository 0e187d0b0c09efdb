#!/usr/bin/env python3
"""Share of a perf profile by category (kernel, TLS, VEC decode, ...).

Usage: perf_categories.py PERF.DATA

Runs `perf report --no-children --sort dso,symbol` on the file and sums the
self time of the symbols by the categories BENCHMARKS.md uses; multiply a
share by the run's CPU per call to get time per call.
"""
import re
import subprocess
import sys

if len(sys.argv) != 2 or sys.argv[1].startswith('-'):
    print('usage: perf_categories.py PERF.DATA', file=sys.stderr)
    sys.exit(64)
data = sys.argv[1]
out = subprocess.run(['perf','report','-i',data,'--no-children','--sort','dso,symbol','--stdio','-g','none'],capture_output=True,text=True).stdout
cats = {}
def cat(dso, sym):
    if 'kernel' in dso: return 'kernel (syscalls, TCP/IP, scheduler)'
    s = sym
    if re.search(r'aes|gcm|ghash|aws_lc|rustls|tokio_rustls|EVP_AEAD', s): return 'TLS (rustls, aws-lc)'
    if re.search(r'vec::decode|netbytes::read|scan_headers|Codec::decode|from_utf8|RefDecoder', s): return 'VEC decode'
    if re.search(r'vec::encode|put_u64|put_signed|netbytes::put|part_headers|part_payloads', s): return 'VEC encode'
    if re.search(r'malloc|free|_int_|realloc|unlink_chunk|__rust_alloc|__rust_dealloc|__rdl|drop_in_place', s): return 'allocation and drop'
    if re.search(r'mpsc|oneshot|semaphore|batch_semaphore|atomic_waker|AtomicWaker|Notified|notify|cancellation', s): return 'tokio channels, wakers, cancel'
    if re.search(r'FuturesUnordered|futures_unordered|futures_util', s): return 'futures (call sets)'
    if re.search(r'hdrhistogram|vole::bench', s): return 'bench harness'
    if re.search(r'publish|Published|Handler', s): return 'method dispatch (publish)'
    if re.search(r'vole_link', s): return 'link core and driver'
    if re.search(r'tokio', s): return 'tokio runtime and I/O'
    if re.search(r'memmove|memcpy|memcmp|memset', s): return 'memcpy/memcmp'
    if 'vdso' in dso: return 'clock (vdso)'
    return 'other'
for line in out.splitlines():
    m = re.match(r'\s+([0-9.]+)%\s+(\S+)\s+\[.\]\s+(.*?)\s*$', line)
    if not m: continue
    pct, dso, sym = float(m.group(1)), m.group(2), m.group(3)
    c = cat(dso, sym)
    cats[c] = cats.get(c, 0) + pct
for c, v in sorted(cats.items(), key=lambda x: -x[1]):
    print(f'{v:6.1f}%  {c}')
