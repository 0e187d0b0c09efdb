"""A stock Versile Python (VPy) service, run by vole as an external node.

    vole serve --nodes 2 --node-command 'python3 examples/python/vpy_node.py'

vole's controller binds the listening socket, starts N copies of this
program and supervises them (restarts with backoff, no orphans, a
coordinated stop, ``vole status``). Each copy finds the socket the way
systemd socket activation passes it: at descriptor 3, with ``LISTEN_FDS=1``
and ``LISTEN_PID`` equal to its own pid; ``VOLE_NODE_ID`` says which node it
is. Nothing else about the service is vole-specific: the same program
serves under systemd's ``.socket`` units.

The gateway:

    echo(x)     returns x
    node()      [node id, pid]: which node served the call
    add(a, b)   a + b
    fail()      raises VException('failed on purpose')

It speaks PLAIN (``VOPInsecureServiceConfig``): VPy's own encrypted transport
(VTS) is not yet offered by vole's clients. SIGTERM stops it gracefully
(links closed when idle); vole sends SIGKILL after the grace period.
Requires ``pip install versile-python3`` (Python 3.11 or earlier).
"""

import os
import signal
import socket
import sys
import threading

from versile.quick import VException, VExternal, VNoResult, VOPService, doc, publish
from versile.reactor.io.link import VLinkAgentConfig
from versile.reactor.io.service import VOPInsecureServiceConfig

LISTEN_FDS_START = 3


def activated_socket():
    """The listening socket passed by socket activation; exits if there is none."""
    if os.environ.get('LISTEN_PID') != str(os.getpid()):
        sys.exit('vpy_node: LISTEN_PID is not this process: start me with '
                 'vole serve --node-command, or from a systemd socket unit')
    if int(os.environ.get('LISTEN_FDS', '0')) < 1:
        sys.exit('vpy_node: LISTEN_FDS: no listening socket was passed')
    sock = socket.socket(fileno=LISTEN_FDS_START)
    # Later children (none here) must not inherit the variables.
    for name in ('LISTEN_PID', 'LISTEN_FDS', 'LISTEN_FDNAMES'):
        os.environ.pop(name, None)
    return sock


NODE_ID = int(os.environ.get('VOLE_NODE_ID', '0'))


@doc
class Gateway(VExternal):
    """A VPy service running as a vole node."""

    @publish(show=True, doc=True)
    def echo(self, value):
        """Returns its argument."""
        return value

    @publish(show=True, doc=True)
    def node(self):
        """[node id, pid] of the node that served the call."""
        return (NODE_ID, os.getpid())

    @publish(show=True, doc=True)
    def add(self, a, b):
        """Returns a + b."""
        return a + b

    @publish(show=True, doc=True)
    def fail(self):
        """Raises a VException on purpose."""
        raise VException('failed on purpose')


def main():
    sock = activated_socket()
    service = VOPService(lambda: Gateway(), None, sock=sock,
                         conf=VOPInsecureServiceConfig(
                             link_config=VLinkAgentConfig(hold_peer=False)))
    service.start()
    try:
        service.wait(active=True, timeout=10)
    except VNoResult:
        sys.exit('vpy_node: the service did not start')
    print('vpy node %d serving (pid %d)' % (NODE_ID, os.getpid()), flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    print('vpy node %d stopping' % NODE_ID, flush=True)
    service.stop(stop_links=True)
    try:
        service.wait(stopped=True, timeout=10)
    except VNoResult:
        print('vpy node %d: links did not close in 10 s' % NODE_ID, flush=True)
    sys.stdout.flush()
    # VPy's reactor threads are not daemons: do not let one keep the
    # process alive once the service is stopped.
    os._exit(0)


if __name__ == '__main__':
    main()
