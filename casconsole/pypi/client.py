"""The simple-index client: project pages, PEP 658 metadata files and file sizes, fetched
through the PyPI side's own network policy.

The PyPI index is reached with its own proxy and TLS settings (`pypi.proxy`, `pypi.ssl_verify`),
not the conda upstream's: a site may need a proxy for PyPI but not for its channels (the FAQ's
question). Timeouts and retries are the mirror's (`timeout`, `retries`). Requests go over the
policy's kept-alive `http.client` connections (`upstream/http.py`, the bulk path), a few
threads at a time, each with its own: a project page is a small request, and many of them make a
sync, where httpx's per-request cost dominated (measured on loopback: 40 pages in 80 ms through
httpx in 8 threads, 10 ms through one kept-alive http.client connection). Failures that another
attempt may cure (timeouts, resets, 5xx, 408, 429) are retried with the policy's backoff.

PEP 658 metadata files are kept under `<mirror_dir>/.cas/upstream/pypi/metadata/<sha256>`
(content-addressed, checked on every read), so a dry run followed by a sync, or a no-op sync,
fetches each only once.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading
import urllib.parse
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from packaging.utils import NormalizedName

from casconsole.fsutil import atomic_write_bytes
from casconsole.layout import UPSTREAM_CACHE, state_dir
from casconsole.pypi.simple import ACCEPT, DistFile, PageError, ProjectPage, parse_page
from casconsole.settings import Settings
from casconsole.upstream.http import MAX_REDIRECTS, REDIRECTS, Connections, Response, TransferError
from casconsole.upstream.policy import RETRY_STATUSES, Again, NetworkPolicy

THREADS = 4  # requests at a time: parallel over a real network, few enough on 2 cores
MAX_PAGE = 64 << 20  # bytes: the largest project page read (PyPI's biggest are a few MB)
MAX_METADATA = 8 << 20
T = TypeVar("T")


def pypi_policy(settings: Settings) -> NetworkPolicy:
    """The PyPI side's network policy: its own proxy and TLS, the mirror's timeout and retries."""
    return NetworkPolicy(settings.timeout, settings.retries, settings.pypi.ssl_verify, settings.pypi.proxy)


class IndexClient:
    """Fetches from the index of `settings.pypi.index_url`; `abort()` from any thread stops it."""

    def __init__(
        self,
        settings: Settings,
        cancel: threading.Event | None = None,
        on_retry: Callable[[str, str, float], None] | None = None,
    ):
        index = settings.pypi.index_url
        if not index:
            raise PageError("pypi.index_url is not set: name the simple index to mirror from")
        self.index_url = index.rstrip("/") + "/"
        self.policy = pypi_policy(settings)
        self.cancel = cancel or threading.Event()
        self.on_retry = on_retry
        self.cache = state_dir(settings.mirror_dir) / UPSTREAM_CACHE / "pypi" / "metadata"
        self._tls = self.policy.tls()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[Connections] = []
        self._active: set[Response] = set()

    def __enter__(self) -> IndexClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            connections, self._all = self._all, []
        for conns in connections:
            conns.close()

    def abort(self) -> None:
        """Cancel, and shut the sockets of transfers in flight (safe from a signal handler)."""
        self.cancel.set()
        for response in list(self._active):
            sock = response.socket
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _connections(self) -> Connections:
        conns = getattr(self._local, "connections", None)
        if conns is None:
            conns = self._local.connections = self.policy.connections(self._tls)
            with self._lock:
                self._all.append(conns)
        return conns

    def project_url(self, name: str) -> str:
        return f"{self.index_url}{urllib.parse.quote(name)}/"

    # ---- what is fetched

    def page(self, name: NormalizedName) -> ProjectPage | None:
        """The project's page; None when the index has no such project (404, 410)."""
        url = self.project_url(name)

        def once() -> ProjectPage | None:
            status, headers, body, final = self._get(url, {"Accept": ACCEPT}, MAX_PAGE)
            if status in (404, 410):
                return None
            if status >= 300:
                raise PageError(f"{url}: HTTP {status}")
            return parse_page(body, headers.get("content-type", ""), final, name)

        return self._retrying(url, once)

    def pages(self, names: Iterable[NormalizedName]) -> dict[NormalizedName, ProjectPage | None]:
        """Several pages, THREADS at a time; the first error raised stops the rest."""
        return self._each(list(names), self.page)

    def metadata(self, dist: DistFile) -> bytes | None:
        """The file's PEP 658 metadata, checked against its sha256 when the index gave one;
        None when the index does not serve it after all (404)."""
        digest = dist.metadata_sha256
        kept = self.cache / digest if digest else None
        if kept is not None:
            with contextlib.suppress(OSError):
                data = kept.read_bytes()
                if hashlib.sha256(data).hexdigest() == digest:
                    return data
        url = dist.metadata_url

        def once() -> bytes | None:
            status, _, body, _ = self._get(url, {}, MAX_METADATA)
            if status in (404, 410):
                return None
            if status >= 300:
                raise PageError(f"{url}: HTTP {status}")
            if digest and hashlib.sha256(body).hexdigest() != digest:
                raise Again(f"{url}: sha256 mismatch")
            return bytes(body)

        data = self._retrying(url, once)
        if data is not None and kept is not None:
            with contextlib.suppress(OSError):  # a cache that cannot be written is only slower
                atomic_write_bytes(kept, data)
        return data

    def metadata_of(self, dists: Iterable[DistFile]) -> dict[DistFile, bytes | None]:
        return self._each(list(dists), self.metadata)

    def size(self, dist: DistFile) -> int:
        """The file's size, from a one-byte range request (a PEP 503 page does not say it)."""

        def once() -> int:
            status, headers, _, _ = self._get(dist.url, {"Range": "bytes=0-0"}, 0)
            total = headers.get("content-range", "").rpartition("/")[2]
            length = total if status == 206 else headers.get("content-length", "") if status == 200 else ""
            if not length.isdigit():
                raise PageError(f"{dist.url}: HTTP {status}, no size known")
            return int(length)

        return self._retrying(dist.url, once)

    def sizes(self, dists: Iterable[DistFile]) -> dict[DistFile, int]:
        return self._each(list(dists), self.size)

    # ---- the machinery

    def _each(self, items: list, fetch: Callable) -> dict:
        if len(items) <= 1:
            return {item: fetch(item) for item in items}
        with ThreadPoolExecutor(min(THREADS, len(items)), thread_name_prefix="cas-pypi") as pool:
            futures = {item: pool.submit(fetch, item) for item in items}
            try:
                return {item: future.result() for item, future in futures.items()}
            except BaseException:
                self.cancel.set()  # the others stop at their next request
                raise

    def _retrying(self, url: str, once: Callable[[], T]) -> T:
        on_retry = self.on_retry
        heard = None if on_retry is None else lambda reason, delay: on_retry(url, reason, delay)
        return self.policy.retrying(once, self.cancel, PageError, heard)

    def _get(self, url: str, headers: dict[str, str], limit: int) -> tuple[int, dict[str, str], bytes, str]:
        """(status, headers, body up to `limit` bytes, final URL): redirects followed."""
        headers = {"Accept-Encoding": "gzip", **headers}
        for _ in range(MAX_REDIRECTS + 1):
            try:
                response = self._connections().get_once(url, headers)
            except (TimeoutError, TransferError) as exc:
                raise self.policy.again(url, exc, self.cancel) from None
            location = response.header("Location")
            if response.status in REDIRECTS and location:
                response.close()
                url = urllib.parse.urljoin(url, location)
                continue
            try:
                return self._read(url, response, limit)
            finally:
                response.close()
        raise PageError(f"{url}: more than {MAX_REDIRECTS} redirects")

    def _read(self, url: str, response: Response, limit: int) -> tuple[int, dict[str, str], bytes, str]:
        status = response.status
        if status in RETRY_STATUSES:
            raise Again(f"{url}: HTTP {status}")
        names = ("content-type", "content-range", "content-length", "content-encoding")
        headers = {name: value for name in names if (value := response.header(name)) is not None}
        if status >= 300 or not limit:
            return status, headers, b"", url
        body = bytearray()
        chunk = memoryview(bytearray(1 << 16))
        self._active.add(response)
        try:
            while n := response.readinto(chunk):
                body += chunk[:n]
                if len(body) > limit:
                    raise PageError(f"{url}: larger than {limit >> 20} MiB")
        except (TimeoutError, TransferError) as exc:
            raise self.policy.again(url, exc, self.cancel) from None
        finally:
            self._active.discard(response)
        length = headers.get("content-length", "")
        if length.isdigit() and len(body) != int(length):
            raise Again(f"{url}: truncated ({len(body):,} of {int(length):,} bytes)")
        if headers.get("content-encoding", "").lower() == "gzip":
            body = bytearray(_gunzip(url, bytes(body), limit))
        return status, headers, bytes(body), url


def _gunzip(url: str, data: bytes, limit: int) -> bytes:
    """A gzip body, decompressed to at most `limit` bytes (a bomb is refused, not expanded)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise PageError(f"{url}: not valid gzip ({exc})") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise PageError(f"{url}: larger than {limit >> 20} MiB once decompressed")
    return out
