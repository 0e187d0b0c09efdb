"""A stock VPy (versile-python3) PLAIN client that calls a vole service in a
loop, through reloads and upgrades, for tests/operations.rs.

Usage: python vpy_loop_client.py PORT STOPFILE QUIET

QUIET is vole_node::DRAIN_QUIET in seconds.

Holds one link and calls ``echo(n)`` on it again and again until STOPFILE
exists. When a call fails it classifies the failure, drops the link,
connects again and retries the same call:

* ``closing``: the service refused the call because the link was closing
  (an exception whose text contains "closing"): the call never ran;
* ``unsent``: the link had closed before the call was made;
* ``crossed``: the link closed under the call after the client had made no
  call on it for QUIET seconds: a draining link closes then,
  and VOL has no goodbye, so such a call is lost (design.md, "Stop");
* anything else is ``other``, listed with its text: a failure.

It prints ``{"ready": true}`` after its first answered call,
``{"progress": N}`` every 100 answered calls, and at the end one summary
line ``{"done": true, ...}``: calls answered, the counts above, the most
retries one call took, connections made, and the (node id, pid) of every
node that served it (``meta.ping()``). Every wait is bounded; a watchdog
ends the process after RUN_LIMIT seconds.
"""

import json
import os
import sys
import threading
import time

from versile.quick import VUrl
from versile.reactor.io.url import VOPInsecureUrlConfig

CALL_TIMEOUT = 10.0
RUN_LIMIT = 120.0


def emit(**fields):
    sys.stdout.write(json.dumps(fields, sort_keys=True) + '\n')
    sys.stdout.flush()


def describe(e):
    return '%s: %r %r' % (type(e).__name__, e, getattr(e, 'args', ()))


class Client(object):
    def __init__(self, port, stopfile, quiet):
        self.port = port
        self.stopfile = stopfile
        self.quiet = quiet
        self.answered = 0
        self.closing = 0
        self.unsent = 0
        self.crossed = 0
        self.other = []
        self.worst_retries = 0
        self.connections = 0
        self.nodes = set()
        self.gw = None
        self.link = None
        # When the last answered call was sent: the service read it no
        # earlier, so the quiet it sees when it closes is at most the time
        # since (an answer can arrive late on a loaded machine).
        self.sent_at = 0.0

    def stopped(self):
        return os.path.exists(self.stopfile)

    def drop(self):
        if self.link is not None:
            try:
                self.link.shutdown()
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.gw = self.link = None

    def connect(self):
        self.connections += 1
        url = 'vop://127.0.0.1:%d/' % self.port
        res = VUrl.resolve_with_link(url, conf=VOPInsecureUrlConfig(), nowait=True)
        self.gw, self.link = res.result(CALL_TIMEOUT)
        pinged = time.monotonic()
        node = self.gw.meta.ping(nowait=True).result(CALL_TIMEOUT)
        self.sent_at = pinged
        self.nodes.add((int(node[0]), int(node[1])))

    def attempt(self, n):
        """'ok', 'closing', 'unsent' or 'other' for one try of echo(n)."""
        if self.link is None or not self.link._active:
            return 'unsent'
        sent = time.monotonic()
        quiet = sent - self.sent_at
        try:
            got = self.gw.echo(n, nowait=True).result(CALL_TIMEOUT)
        except Exception as e:  # noqa: BLE001 - classified below
            text = describe(e)
            if 'closing' in text:
                return 'closing'
            if quiet >= self.quiet and not self.link._active:
                return 'crossed'
            self.other.append('echo(%d) %.3f s after the previous call was sent: %s' % (n, quiet, text))
            return 'other'
        if got != n:
            self.other.append('echo(%d) answered %r' % (n, got))
            return 'other'
        self.sent_at = sent
        return 'ok'

    def call(self, n):
        retries = 0
        while not self.stopped():
            if self.gw is None:
                try:
                    self.connect()
                except Exception as e:  # noqa: BLE001 - classified below
                    text = describe(e)
                    self.drop()
                    if 'closing' in text:
                        # The ping was refused: it never ran.
                        self.closing += 1
                        retries += 1
                        self.worst_retries = max(self.worst_retries, retries)
                        continue
                    self.other.append('connect: %s' % text)
                    return
            outcome = self.attempt(n)
            if outcome == 'ok':
                self.answered += 1
                return
            self.drop()
            if outcome == 'other':
                return
            if outcome == 'closing':
                self.closing += 1
            elif outcome == 'crossed':
                self.crossed += 1
            else:
                self.unsent += 1
            retries += 1
            self.worst_retries = max(self.worst_retries, retries)

    def run(self):
        n = 0
        while not self.stopped():
            n += 1
            before = self.answered
            self.call(n)
            if self.answered > before:
                if self.answered == 1:
                    emit(ready=True)
                elif self.answered % 100 == 0:
                    emit(progress=self.answered)
            elif self.other:
                # A failure: report it rather than spin on a broken service.
                break
        self.drop()
        emit(done=True, answered=self.answered, closing=self.closing,
             unsent=self.unsent, crossed=self.crossed, other=self.other,
             worst_retries=self.worst_retries, connections=self.connections,
             nodes=sorted(self.nodes))


def watchdog():
    emit(done=True, other=['still running after %.0f s' % RUN_LIMIT])
    os._exit(3)


def main():
    if len(sys.argv) != 4:
        sys.stderr.write('usage: vpy_loop_client.py PORT STOPFILE QUIET\n')
        sys.exit(64)
    timer = threading.Timer(RUN_LIMIT, watchdog)
    timer.daemon = True
    timer.start()
    client = Client(int(sys.argv[1]), sys.argv[2], float(sys.argv[3]))
    try:
        client.run()
    except Exception as e:  # noqa: BLE001 - reported in the summary
        emit(done=True, other=['crashed: %s' % describe(e)])
        os._exit(1)
    # VPy's reactor threads are not daemons.
    os._exit(0)


if __name__ == '__main__':
    main()
