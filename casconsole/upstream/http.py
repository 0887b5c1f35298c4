"""The sync's HTTP client: one kept-alive connection per thread and origin, requests written
in one piece, responses parsed by llhttp (httptools: the strict parser cas-server uses too) and
bodies read straight into the caller's buffer. It fetches the package files (in the download
workers) and the upstream repodata (`upstream/repodata.py`).

Why not httpx: its pure-Python HTTP/1.1 parser hands a body over in 64 KB pieces, each copied
on the way (measured on bench/sync's 5 MB files, one thread: 12.3 ms of CPU a file through the
httpx transport, 6.0 ms through http.client); importing it costs a no-op sync 0.07-0.13 s, and
making a client loads a CA bundle even for plain http. Why not http.client's responses: it parses
each response's headers with the `email` package, a third of a small file's CPU (bench/sync's
3,000 files of 20 KB: 0.07-0.12 ms a response against 0.01-0.05 ms with llhttp). http.client
still opens the connections (a proxy's CONNECT tunnel, TLS with the hostname checked); TLS is
set up by httpx's own `create_ssl_context`, when a first https URL needs it, so the console's
httpx clients and these trust the same certificates.

A body with a Content-Length is read from the socket into the caller's buffer once the headers
are parsed (no copy); a chunked one, or one that ends with the connection, through the parser.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import select
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable

import httptools

from casconsole.errors import Cancelled
from casconsole.settings.proxy import Proxy

USER_AGENT = "casconsole"
MAX_REDIRECTS = 10
REDIRECTS = (301, 302, 303, 307, 308)


class TransferError(Exception):
    """The transfer failed on the way (connecting, TLS, the server's reply, a reset, a stall):
    another attempt may do better."""


class CertificateError(TransferError):
    """The CA bundle `ssl_verify` names cannot be loaded: no attempt will do better."""


class TooManyRedirects(Exception):
    """More redirects than MAX_REDIRECTS: a loop, most likely."""


def tls_context(ssl_verify: bool | str) -> ssl.SSLContext:
    """The TLS context for `ssl_verify` (true, false, or a CA bundle path), as httpx makes it."""
    import httpx  # here: a download worker fetching over plain http never pays for the import

    try:
        if isinstance(ssl_verify, str):
            return ssl.create_default_context(cafile=ssl_verify)
        return httpx.create_ssl_context(verify=ssl_verify, trust_env=False)
    except (OSError, ssl.SSLError) as exc:
        raise CertificateError(f"ssl_verify: cannot load CA bundle {ssl_verify!r} ({exc})") from exc


class LazyTLS:
    """The TLS context for `ssl_verify`, made when a first https URL needs it (a plain-http
    upstream never loads a CA bundle), then shared by every connection given this object."""

    def __init__(self, ssl_verify: bool | str):
        self.ssl_verify = ssl_verify
        self._context: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    def __call__(self) -> ssl.SSLContext:
        with self._lock:
            if self._context is None:
                self._context = tls_context(self.ssl_verify)
            return self._context


class _Message:
    """llhttp's callbacks for one response: its headers, whether they are complete, the body
    bytes the parser handed over and not read yet, and whether the message is complete."""

    __slots__ = ("body", "complete", "headers", "headers_done", "keep_alive", "parser", "status")

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.complete = False
        self.body: list[bytes] = []
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        # asked here: once the message is complete the parser is reset for the next one
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self.keep_alive and self.parser.should_keep_alive()
        self.complete = True


class Response:
    """A response whose body is left to read; `close()` hands its connection back when the body
    was read to the end, and drops it otherwise."""

    def __init__(self, pool: Connections, key: tuple, conn: http.client.HTTPConnection):
        self._pool = pool
        self._key = key
        self._conn = conn
        self._sock: socket.socket = conn.sock
        self._message = message = _Message()
        self._parser = message.parser
        self._buffer = pool.buffer
        self._pending = memoryview(b"")  # body bytes received, not handed over yet
        while not message.headers_done:
            self._feed()
        self.status: int = message.status
        length = message.headers.get("content-length")
        # a Content-Length body (not chunked) is read from the socket itself: `_left` bytes
        self._left: int | None = None
        if not message.complete and "transfer-encoding" not in message.headers and length is not None:
            # llhttp has checked the value; what it already handed over counts
            self._left = int(length) - sum(map(len, message.body))
        self._take_body()

    @property
    def headers(self) -> dict[str, str]:
        """The headers, names in lower case (repeated ones joined with ", ")."""
        return self._message.headers

    def header(self, name: str) -> str | None:
        return self._message.headers.get(name.lower())

    @property
    def socket(self) -> socket.socket | None:
        return self._sock

    def _feed(self) -> int:
        """Receive what the socket has and parse it; the number of bytes (0: the peer closed)."""
        try:
            n = self._sock.recv_into(self._buffer)
        except TimeoutError:
            raise
        except OSError as exc:
            raise TransferError(describe(exc)) from None
        if not n:
            if not self._message.headers_done:
                raise TransferError("the server closed the connection without a response")
            return 0
        try:
            self._parser.feed_data(self._buffer[:n])
        except httptools.HttpParserUpgrade:
            raise TransferError("the server switched protocols") from None
        except httptools.HttpParserError as exc:
            raise TransferError(f"malformed response ({exc})") from None
        return n

    def _take_body(self) -> None:
        body = self._message.body
        if body:
            self._pending = memoryview(body[0] if len(body) == 1 else b"".join(body))
            body.clear()

    def _done(self) -> bool:
        return self._message.complete if self._left is None else self._left == 0

    def readinto(self, view: memoryview) -> int:
        """Body bytes into `view`; 0 at the end of the body, or where the connection closed
        before it (as http.client does: the caller, who knows the size, sees what is missing
        and keeps what came). TimeoutError when no byte came for the timeout."""
        if self._pending:
            n = min(len(view), len(self._pending))
            view[:n] = self._pending[:n]
            self._pending = self._pending[n:]
            return n
        if self._done() or not len(view):
            return 0
        if self._left is not None:  # the body as it is, from the socket into the caller's buffer
            try:
                n = self._sock.recv_into(view, min(len(view), self._left))
            except TimeoutError:
                raise
            except OSError as exc:
                raise TransferError(describe(exc)) from None
            if not n:
                self._message.keep_alive = False
                return 0
            self._left -= n
            return n
        while not self._pending:  # chunked, or until the connection closes: through the parser
            if self._message.complete:
                return 0
            if not self._feed():  # the end, if its length was that of the connection
                self._message.keep_alive = False
                return 0
            self._take_body()
        return self.readinto(view)

    def read_all(self, cancel: threading.Event | None = None) -> bytearray:
        """The rest of the body: into one buffer of its Content-Length when it has one (a 133 MB
        repodata is held once, not as pieces and their join). Cancelled when `cancel` is set."""
        if self._left is not None:
            out = bytearray(len(self._pending) + self._left)
            with memoryview(out) as view:
                got = 0
                while got < len(out):
                    if cancel is not None and cancel.is_set():
                        raise Cancelled
                    n = self.readinto(view[got:])
                    if not n:
                        raise TransferError(f"truncated, {got:,} of {len(out):,} bytes")
                    got += n
            return out
        out = bytearray()
        with memoryview(bytearray(1 << 16)) as scratch:
            while n := self.readinto(scratch):
                if cancel is not None and cancel.is_set():
                    raise Cancelled
                out += scratch[:n]
        if not self._message.complete and "transfer-encoding" in self._message.headers:
            raise TransferError("truncated: the connection closed before the end of the body")
        return out

    def close(self) -> None:
        self._message.parser = None  # it and the parser refer to each other: no cycle left behind
        if not self._pending and self._done() and self._message.keep_alive:
            self._pool.keep_alive(self._key, self._conn)
        else:
            self._conn.close()


class Connections:
    """One thread's HTTP connections, one kept alive per origin. Not shared between threads."""

    def __init__(
        self,
        timeout: float,
        tls: Callable[[], ssl.SSLContext],
        proxy: Proxy | None,
        on_connect: Callable[[socket.socket], None] | None = None,
    ):
        self.timeout = timeout
        self.tls = tls
        self.proxy = proxy
        self.on_connect = on_connect  # told of each socket opened (what an abort would shut down)
        self._idle: dict[tuple, http.client.HTTPConnection] = {}
        self.buffer = memoryview(bytearray(RECEIVE))  # where responses are received and parsed

    def get(self, url: str, headers: dict[str, str]) -> Response:
        """GET `url`, redirects followed; the response with its body unread.
        Raises TransferError, TimeoutError or TooManyRedirects."""
        for _ in range(MAX_REDIRECTS + 1):
            response = self.get_once(url, headers)
            location = response.header("Location")
            if response.status not in REDIRECTS or not location:
                return response
            response.close()
            url = urllib.parse.urljoin(url, location)
        raise TooManyRedirects(f"more than {MAX_REDIRECTS} redirects")

    def get_once(self, url: str, headers: dict[str, str]) -> Response:
        """Send GET `url`; the response with its body unread. Raises TransferError or TimeoutError
        (http.client.InvalidURL for a URL that cannot be asked for, before any connection)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise TransferError(f"cannot fetch {url!r}")
        https = parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        key = (https, parts.hostname, port)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        headers = {"Host": parts.netloc.rpartition("@")[2], "User-Agent": USER_AGENT, **headers}
        if self.proxy is not None and not https:  # plain http through a proxy: absolute-form
            target = urllib.parse.urlunsplit(("http", parts.netloc, target, "", ""))
            if self.proxy.authorization:
                headers["Proxy-Authorization"] = self.proxy.authorization
        request = _request(target, headers)
        conn = self._idle.pop(key, None)
        if conn is None or _closed_by_server(conn):
            conn = self._connect(https, parts.hostname, port)
            try:
                conn.connect()
            except TimeoutError:
                conn.close()
                raise
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                where = (
                    f"proxy {self.proxy.host}:{self.proxy.port}" if self.proxy else f"{parts.hostname}:{port}"
                )
                raise TransferError(f"cannot connect to {where} ({describe(exc)})") from None
            if self.on_connect is not None:
                try:
                    self.on_connect(conn.sock)
                except BaseException:
                    conn.close()
                    raise
        return self._send(key, conn, request)

    def _connect(self, https: bool, host: str, port: int) -> http.client.HTTPConnection:
        proxy = self.proxy
        if proxy is None:
            if https:
                return http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self.tls())
            return http.client.HTTPConnection(host, port, timeout=self.timeout)
        if https:  # a CONNECT tunnel through the proxy, TLS inside it
            tls = self.tls()
            conn = http.client.HTTPSConnection(proxy.host, proxy.port, timeout=self.timeout, context=tls)
            tunnel = {"Proxy-Authorization": proxy.authorization} if proxy.authorization else None
            conn.set_tunnel(host, port, headers=tunnel)
            return conn
        return http.client.HTTPConnection(proxy.host, proxy.port, timeout=self.timeout)

    def _send(self, key: tuple, conn: http.client.HTTPConnection, request: bytes) -> Response:
        try:
            conn.sock.sendall(request)
            return Response(self, key, conn)
        except TimeoutError:
            conn.close()
            raise
        except TransferError:
            conn.close()
            raise
        except OSError as exc:
            conn.close()
            raise TransferError(describe(exc)) from None

    def keep_alive(self, key: tuple, conn: http.client.HTTPConnection) -> None:
        """Keep `conn`, its last response read to the end, for the next request to `key`'s origin."""
        self._idle[key] = conn

    def close(self) -> None:
        for conn in self._idle.values():
            with contextlib.suppress(OSError):
                conn.close()
        self._idle.clear()


RECEIVE = 1 << 16  # bytes received at a time while a response's headers are parsed
_UNSAFE_TARGET = re.compile(r"[^\x21-\x7e]")  # what a request target may not hold (raw)
_UNSAFE_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # nor a header value


def _request(target: str, headers: dict[str, str]) -> bytes:
    """A GET request in one piece. A target or value that would let it say more than it should
    (upstream's file names are quoted before they get here) raises http.client.InvalidURL, a
    ValueError, as http.client did: a bug or a hostile record, not a transfer to retry."""
    if _UNSAFE_TARGET.search(target):
        raise http.client.InvalidURL(f"cannot ask for {target!r}: not a valid request target")
    lines = [f"GET {target} HTTP/1.1"]
    for name, value in headers.items():
        if _UNSAFE_VALUE.search(value):
            raise http.client.InvalidURL(f"cannot send a {name} header of {value!r}")
        lines.append(f"{name}: {value}")
    try:
        return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
    except UnicodeEncodeError:
        raise http.client.InvalidURL(f"cannot ask for {target!r}: not ASCII") from None


def _closed_by_server(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle kept-alive connection has something to read: the server closed it (or
    sent what nobody asked for). Checked before reuse, as a request sent on it would fail."""
    sock = conn.sock
    if sock is None:
        return True
    readable = select.select([sock], [], [], 0)[0]
    if readable:
        conn.close()
    return bool(readable)


def describe(exc: BaseException) -> str:
    """A short reason for a failed transfer, e.g. 'ConnectionRefusedError: [Errno 111] ...'."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: {exc.verify_message or exc} (CERTIFICATE_VERIFY_FAILED)"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
