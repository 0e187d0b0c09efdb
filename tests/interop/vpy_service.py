"""A VPy (versile-python3 0.8.5) PLAIN service for vole's interop tests.

Usage: python vpy_service.py [--keep-alive-min-send MS] [--vts KEYS_JSON]

Binds 127.0.0.1 on an ephemeral port, prints ``listening on 127.0.0.1:PORT``
on stdout once it accepts connections, and serves until stdin reaches EOF
(the test harness closes it, or dies), SIGTERM, or a hard lifetime limit.

The gateway mirrors vole's demo gateway (src/demo.rs):

    /              echo(x), invoke(obj, method, *args), raise_exception(*args),
                   boom(), fail(), collect(), sleep(ms), urlget(path)
    /text/echo/    echo(x)
    /math/adder/   add(n), result(), reset()

``--keep-alive-min-send`` lowers the shortest keep-alive period the service
agrees to send (VPy's default is 300 000 ms), so a test can see VPy send
keep-alives.

``--vts`` serves VTS only (VPy's default ``VOPServiceConfig``) with the
server key from KEYS_JSON (``transport/tests/fixtures/vts/keys.json``:
``{"server": {"n": hex, "e": hex, "d": hex, "p": hex, "q": hex}}``) instead
of PLAIN.

``urlget`` is written by hand: VPy's SimpleGateway/VDispatcher calls
``inspect.getargspec``, which Python 3.11 no longer has.
"""

import argparse
import gc
import json
import os
import signal
import sys
import threading
import time

from versile.crypto import VCrypto
from versile.quick import VException, VExternal, VNoResult, VOPService, doc, publish
from versile.orb.link import VLinkKeepAlive
from versile.reactor.io.link import VLinkAgentConfig
from versile.reactor.io.service import VOPInsecureServiceConfig, VOPServiceConfig

# Nothing in the tests needs the service longer than this; it is a guard
# against a harness that forgets it.
MAX_LIFETIME = 120.0


@doc
class Echoer(VExternal):
    """Echoes what it receives."""

    @publish(show=True, doc=True)
    def echo(self, value):
        """Returns its argument."""
        return value


@doc
class Adder(VExternal):
    """Adds numbers and tracks their sum."""

    def __init__(self):
        super().__init__()
        self._sum = 0

    @publish(show=True, doc=True)
    def add(self, n):
        """add(n): adds n and returns the sum so far."""
        with self:
            self._sum += n
            return self._sum

    @publish(show=True, doc=True)
    def result(self):
        """Returns the sum."""
        with self:
            return self._sum

    @publish(show=True, doc=True)
    def reset(self):
        """Sets the sum to zero."""
        with self:
            self._sum = 0


ROUTES = {
    ('text', 'echo'): Echoer,
    ('math', 'adder'): Adder,
}


@doc
class Gateway(VExternal):
    """VPy interop gateway: an echo at the root, /text/echo/ and /math/adder/."""

    @publish(show=True, doc=True)
    def echo(self, value):
        """Returns its argument."""
        return value

    @publish(show=True, doc=True)
    def invoke(self, obj, method, *args):
        """invoke(obj, method, *args): calls method(*args) on obj and returns the result."""
        return getattr(obj, method)(*args)

    @publish(show=True, doc=True)
    def raise_exception(self, *args):
        """Raises a VException carrying the arguments."""
        raise VException(*args)

    @publish(show=True, doc=True)
    def boom(self):
        """Raises VException('boom', 42)."""
        raise VException('boom', 42)

    @publish(show=True, doc=True)
    def fail(self):
        """Raises a plain ValueError, which VPy reports as a call error."""
        raise ValueError('not a VException')

    @publish(show=True, doc=True)
    def collect(self):
        """Runs Python's garbage collector; returns the number of objects freed."""
        return gc.collect()

    @publish(show=True, doc=True)
    def sleep(self, ms):
        """sleep(ms): waits ms milliseconds (at most 10 000), then returns ms."""
        ms = min(int(ms), 10000)
        time.sleep(ms / 1000.0)
        return ms

    @publish(show=True, doc=True)
    def urlget(self, path):
        """Returns a new object for a path tuple."""
        factory = ROUTES.get(tuple(path))
        if factory is None:
            raise VException('no object at /%s/' % '/'.join(path))
        return factory()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--keep-alive-min-send', type=int, default=None,
                        metavar='MS')
    parser.add_argument('--vts', default=None, metavar='KEYS_JSON')
    args = parser.parse_args()
    link_config = VLinkAgentConfig(hold_peer=False)
    if args.keep_alive_min_send is not None:
        link_config = VLinkAgentConfig(
            hold_peer=False,
            keep_alive=VLinkKeepAlive(min_send=args.keep_alive_min_send))

    sock = VOPService.create_socket(interface='127.0.0.1', port=0)
    port = sock.getsockname()[1]
    if args.vts is None:
        service = VOPService(lambda: Gateway(), None, sock=sock,
                             conf=VOPInsecureServiceConfig(link_config=link_config))
    else:
        k = json.load(open(args.vts))['server']
        nums = tuple(int(k[x], 16) for x in ('n', 'e', 'd', 'p', 'q'))
        key = VCrypto.lazy().rsa.key_factory.load(nums)
        service = VOPService(lambda: Gateway(), None, key=key, sock=sock,
                             conf=VOPServiceConfig(link_config=link_config))
    service.start()
    try:
        service.wait(active=True, timeout=10)
    except VNoResult:
        print('service did not become active', file=sys.stderr, flush=True)
        os._exit(1)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def watch_stdin():
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            stop.set()
    threading.Thread(target=watch_stdin, daemon=True).start()

    print('listening on 127.0.0.1:%d' % port, flush=True)
    stop.wait(MAX_LIFETIME)

    service.stop(stop_links=True, force=True)
    try:
        service.wait(stopped=True, timeout=5)
        stopped = True
    except VNoResult:
        print('service did not stop within 5 s', file=sys.stderr, flush=True)
        stopped = False
    sys.stdout.flush()
    sys.stderr.flush()
    # The reactor and processor threads are not daemons; do not let one that
    # failed to stop keep the process alive.
    os._exit(0 if stopped else 3)


if __name__ == '__main__':
    main()
