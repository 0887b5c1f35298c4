"""The simple-index client: project pages, PEP 658 metadata files and file sizes, fetched
through the PyPI side's own network policy.

The PyPI index is reached with its own proxy and TLS settings (`pypi.proxy`, `pypi.ssl_verify`),
not the conda upstream's: a site may need a proxy for PyPI but not for its channels (the FAQ's
question). Timeouts and retries are the mirror's (`timeout`, `retries`). Pages are fetched a few
at a time in threads over one httpx client (kept-alive connections); failures that another
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
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from packaging.utils import NormalizedName

from casconsole.errors import Cancelled
from casconsole.fsutil import atomic_write_bytes
from casconsole.layout import UPSTREAM_CACHE, state_dir
from casconsole.pypi.simple import ACCEPT, DistFile, PageError, ProjectPage, parse_page
from casconsole.settings import Settings
from casconsole.upstream.http import TransferError
from casconsole.upstream.policy import RETRY_STATUSES, NetworkPolicy

if TYPE_CHECKING:
    import httpx

THREADS = 8  # pages fetched at a time
MAX_PAGE = 64 << 20  # bytes: the largest project page read (PyPI's biggest are a few MB)
MAX_METADATA = 8 << 20
T = TypeVar("T")


def pypi_policy(settings: Settings) -> NetworkPolicy:
    """The PyPI side's network policy: its own proxy and TLS, the mirror's timeout and retries."""
    return NetworkPolicy(settings.timeout, settings.retries, settings.pypi.ssl_verify, settings.pypi.proxy)


class _Again(Exception):
    """A failure another attempt may cure."""


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
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()

    def __enter__(self) -> IndexClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def abort(self) -> None:
        """Cancel, and shut the sockets of transfers in flight (safe from a signal handler)."""
        self.cancel.set()
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _trace(self, event: str, info: dict) -> None:
        # httpcore's trace hook: remember each connection's socket, for abort()
        if event.endswith((".connect_tcp.complete", ".start_tls.complete")):
            stream = info.get("return_value")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                self._sockets.add(sock)
            if self.cancel.is_set():
                raise Cancelled

    def client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                try:
                    self._client = self.policy.metadata_client()
                except TransferError as exc:  # pypi.ssl_verify names a CA bundle that cannot be used
                    raise PageError(f"pypi.ssl_verify: {exc}") from None
            return self._client

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
                raise _Again(f"{url}: sha256 mismatch")
            return bytes(body)

        data = self._retrying(url, once)
        if data is not None and kept is not None:
            with contextlib.suppress(OSError):  # a cache that cannot be written is only slower
                atomic_write_bytes(kept, data)
        return data

    def metadata_of(self, dists: Iterable[DistFile]) -> dict[DistFile, bytes | None]:
        return self._each(list(dists), self.metadata)

    def size(self, dist: DistFile) -> int:
        """The file's size from a HEAD request (a PEP 503 page does not say it)."""

        def once() -> int:
            status, headers, _, _ = self._get(dist.url, {"Accept-Encoding": "identity"}, 0, method="HEAD")
            length = headers.get("content-length", "")
            if status >= 300 or not length.isdigit():
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
        attempt = 0
        while True:
            attempt += 1
            if self.cancel.is_set():
                raise Cancelled
            try:
                return once()
            except _Again as exc:
                if self.cancel.is_set():
                    raise Cancelled from None
                if attempt > self.policy.retries:
                    raise PageError(f"{exc} (after {attempt} attempt{'s' * (attempt > 1)})") from None
                delay = self.policy.backoff(attempt)
                if self.on_retry is not None:
                    self.on_retry(url, str(exc), delay)
                if self.cancel.wait(delay):
                    raise Cancelled from None

    def _get(
        self, url: str, headers: dict[str, str], limit: int, method: str = "GET"
    ) -> tuple[int, dict[str, str], bytes, str]:
        """(status, headers, body up to `limit` bytes, final URL after redirects)."""
        import httpx

        client = self.client()
        try:
            with client.stream(method, url, headers=headers, extensions={"trace": self._trace}) as response:
                status = response.status_code
                if status in RETRY_STATUSES:
                    raise _Again(f"{url}: HTTP {status}")
                body = bytearray()
                if status < 300 and method == "GET":
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > limit:
                            raise PageError(f"{url}: larger than {limit >> 20} MiB")
                return status, dict(response.headers), bytes(body), str(response.url)
        except httpx.TimeoutException:
            raise _Again(f"{url}: timed out (no data for {self.policy.timeout:g} s)") from None
        except (httpx.TooManyRedirects, httpx.UnsupportedProtocol) as exc:
            raise PageError(f"{url}: {exc}") from None
        except httpx.HTTPError as exc:
            if self.cancel.is_set():
                raise Cancelled from None
            raise _Again(f"{url}: {type(exc).__name__}: {exc}") from None
