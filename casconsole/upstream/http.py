"""The sync's HTTP client, on the standard library's http.client: one kept-alive connection
per thread and origin, bodies read straight into the caller's buffer. It fetches the package
files (in the download workers) and the upstream repodata.

Why not httpx here (the console's plan still reads repodata with it): its pure-Python HTTP/1.1
parser hands a body over in 64 KB pieces, each copied on the way; http.client's `readinto`
fills the caller's buffer from the socket. Measured on bench/sync's 5 MB files, one thread:
12.3 ms of CPU a file through the httpx transport, 6.0 ms through http.client. Making an httpx
client also loads the CA bundle (about 40 ms) even for plain http. TLS is set up by httpx's own
`create_ssl_context`, when a first https URL needs it, so both trust the same certificates.
"""

from __future__ import annotations

import contextlib
import http.client
import select
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable

from casconsole.settings.proxy import Proxy

USER_AGENT = "casconsole"
MAX_REDIRECTS = 10
REDIRECTS = (301, 302, 303, 307, 308)


class TransferError(Exception):
    """The transfer failed on the way (connecting, TLS, the server's reply, a reset, a stall):
    another attempt may do better."""


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
        raise TransferError(f"ssl_verify: cannot load CA bundle {ssl_verify!r} ({exc})") from exc


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


class Response:
    """A response whose body is left to read; `close()` hands its connection back when the body
    was read to the end, and drops it otherwise."""

    def __init__(self, pool: Connections, key: tuple, conn: http.client.HTTPConnection, raw):
        self._pool = pool
        self._key = key
        self._conn = conn
        self._raw: http.client.HTTPResponse = raw
        self.status: int = raw.status

    def header(self, name: str) -> str | None:
        return self._raw.getheader(name)

    @property
    def socket(self) -> socket.socket | None:
        return self._conn.sock

    def readinto(self, view: memoryview) -> int:
        try:
            return self._raw.readinto(view)
        except TimeoutError:
            raise
        except (OSError, http.client.HTTPException) as exc:
            raise TransferError(describe(exc)) from None

    def close(self) -> None:
        reusable = self._raw.isclosed() and not self._raw.will_close
        if reusable:
            self._pool.keep_alive(self._key, self._conn)
        else:
            self._raw.close()
            self._conn.close()


class Connections:
    """One thread's HTTP connections, one kept alive per origin. Not shared between threads."""

    def __init__(self, timeout: float, tls: Callable[[], ssl.SSLContext], proxy: Proxy | None):
        self.timeout = timeout
        self.tls = tls
        self.proxy = proxy
        self._idle: dict[tuple, http.client.HTTPConnection] = {}

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
        """Send GET `url`; the response with its body unread. Raises TransferError or TimeoutError."""
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
        return self._send(key, conn, target, headers)

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

    def _send(self, key: tuple, conn: http.client.HTTPConnection, target: str, headers: dict) -> Response:
        try:
            conn.request("GET", target, headers=headers)
            return Response(self, key, conn, conn.getresponse())
        except TimeoutError:
            conn.close()
            raise
        except (OSError, http.client.HTTPException) as exc:
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
