"""A VPy echo service over PLAIN, for `benches/run.sh` scenario (d).

Usage: echo_service.py PORT [KEYS_JSON]   (0 picks a free port)

With KEYS_JSON (transport/tests/fixtures/vts/keys.json) it serves VTS, VPy's
default, with that file's server key, instead of PLAIN.

The gateway is VPy's demo Echoer, so `vop://127.0.0.1:PORT/` resolves to an
object with `echo(x)`, as vole's demo gateway root has. Prints
`listening on 127.0.0.1:PORT` (the port bound) once listening, then serves until
SIGTERM or SIGINT.
"""

import signal
import sys
import threading

from versile.conf import Versile
from versile.demo import Echoer
from versile.quick import VOPService
from versile.reactor.io.service import VOPInsecureServiceConfig


def main():
    port = int(sys.argv[1])
    Versile.set_agpl_internal_use()
    sock = VOPService.create_socket(interface='127.0.0.1', port=port)
    if len(sys.argv) > 2:
        import json
        from versile.crypto import VCrypto
        from versile.reactor.io.service import VOPServiceConfig
        k = json.load(open(sys.argv[2]))['server']
        nums = tuple(int(k[x], 16) for x in ('n', 'e', 'd', 'p', 'q'))
        key = VCrypto.lazy().rsa.key_factory.load(nums)
        service = VOPService(lambda: Echoer(), None, key=key, sock=sock,
                             conf=VOPServiceConfig(port=port))
    else:
        service = VOPService(lambda: Echoer(), None, sock=sock,
                             conf=VOPInsecureServiceConfig(port=port))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    service.start()
    print('listening on 127.0.0.1:%d' % sock.getsockname()[1], flush=True)
    while not stop.wait(0.5):
        pass
    service.stop(stop_links=True, force=True)


if __name__ == '__main__':
    main()
