"""One cas-server worker's accepting side: a listening socket on the event loop, its
connections (`http.Connection`, or TLS ones), its uploads, the once-a-second timeout sweep, the
drain on SIGTERM."""

from __future__ import annotations

import asyncio
import errno
import socket
import time

from casconsole.serve.http import CLIENT_TIMEOUT, Connection
from casconsole.serve.logs import AccessLog
from casconsole.serve.redact import redact
from casconsole.serve.site import Site
from casconsole.serve.upload import Uploads

MAX_CONNECTIONS = 10000  # per worker; beyond it new connections wait in the kernel's backlog


class Worker:
    """Accepts connections on one listening socket and serves them until `stop()`.

    `wrap(sock)`, when given, turns an accepted socket into a Connection of another kind
    (TLS); by default connections are plain.
    """

    def __init__(
        self, sock: socket.socket, site: Site, log: AccessLog, loop, wrap=None, timeout=None, uploads=None
    ):
        self.sock = sock
        self.timeout: float = timeout or CLIENT_TIMEOUT
        self.site = site
        self.uploads: Uploads | None = uploads  # None: a PUT gets 405
        self.log = log
        self.loop = loop
        self.wrap = wrap
        self.conns: set[Connection] = set()
        self.accepting = False
        self.stopping = False
        self._sweeper: asyncio.TimerHandle | None = None

    def redact(self, text: str) -> str:
        return redact(text, self.site.tokens.is_token)

    def start(self) -> None:
        self.sock.setblocking(False)
        self._accept_on()
        self._sweeper = self.loop.call_later(1.0, self._sweep)

    def _accept_on(self) -> None:
        if not self.accepting and not self.stopping:
            self.loop.add_reader(self.sock.fileno(), self._accept)
            self.accepting = True

    def _accept_off(self) -> None:
        if self.accepting:
            self.loop.remove_reader(self.sock.fileno())
            self.accepting = False

    def _accept(self) -> None:
        for _ in range(64):
            if len(self.conns) >= MAX_CONNECTIONS:
                self._accept_off()
                return
            try:
                csock, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._accept_off()  # out of descriptors: retry on the next sweep
                    return
                if exc.errno == errno.ECONNABORTED:
                    continue
                raise
            csock.setblocking(False)
            if csock.family != socket.AF_UNIX:
                csock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = addr[0] if isinstance(addr, tuple) else "-"
            conn = self.wrap(self, csock, peer) if self.wrap else Connection(self, csock, peer)
            self.conns.add(conn)

    def closed(self, conn: Connection) -> None:
        self.conns.discard(conn)
        if not self.accepting and not self.stopping and len(self.conns) < MAX_CONNECTIONS:
            self._accept_on()

    def _sweep(self) -> None:
        now = time.monotonic()
        for conn in list(self.conns):
            conn.check_timeout(now)
        if not self.stopping:
            if not self.accepting and len(self.conns) < MAX_CONNECTIONS:
                self._accept_on()
            self._sweeper = self.loop.call_later(1.0, self._sweep)

    def stop(self) -> None:
        """Stop accepting; idle connections close now, busy ones after their response."""
        self.stopping = True
        self._accept_off()
        self.sock.close()
        for conn in list(self.conns):
            conn.shutdown()

    async def drain(self, grace: float) -> None:
        deadline = time.monotonic() + grace
        while self.conns and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.conns):
            conn.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.log.flush()
