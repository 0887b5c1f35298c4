"""The one fetcher of upstream repodata, for the dry run, the console and the sync alike.

- Each subdir's repodata is asked for with the ETag / Last-Modified of the copy kept from the
  last fetch (`<mirror_dir>/.cas/upstream/<channel>/<subdir>.cache`), so an unchanged upstream
  costs a 304, whichever of the three fetched it last.
- Names are tried in REPODATA_NAMES order (`.zst` first); a missing `noarch` is an empty one.
- Timeouts, resets, truncated bodies and HTTP 5xx / 408 / 429 are retried with backoff, as the
  policy says; other failures raise RepoDataError naming the URL and the reason.
- A channel given as a path or file:// URL is read from the disk.
- `abort()` (from any thread, or a signal handler) stops a fetch at once, even one whose
  transfer has stalled: the sockets its client opened are shut down, so a blocked read returns.

The requests go through `upstream/http.py`'s client, as the package files do (not httpx: its
import alone was a third of a no-op sync's 0.3 s), asking for gzip, which a server may use
for a plain `repodata.json`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import urllib.parse
import weakref
import zlib
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from casconsole.conda.repodata import (
    REPODATA_NAMES,
    RepoData,
    decode_repodata,
    decompress_named,
    empty_repodata,
    read_repodata_file,
)
from casconsole.errors import Cancelled, RepoDataError, RepoDataNotFound
from casconsole.fsutil import atomic_write_bytes
from casconsole.layout import upstream_cache_dir
from casconsole.upstream.http import (
    CertificateError,
    Connections,
    Response,
    TooManyRedirects,
    TransferError,
)
from casconsole.upstream.policy import RETRY_STATUSES, Again, NetworkPolicy

if TYPE_CHECKING:
    from casconsole.settings import Settings


@dataclass
class Fetched:
    """One subdir's upstream repodata: where it came from and its JSON bytes."""

    subdir: str
    url: str
    data: bytes | bytearray  # decompressed JSON
    not_modified: bool = False  # the copy kept from the last fetch was still current


class _CacheMeta(msgspec.Struct):
    url: str
    name: str
    etag: str | None = None
    last_modified: str | None = None


def channel_location(remote_url: str) -> tuple[str, Path | None]:
    """(normalized URL, local path or None) of a channel given as http(s)://, file:// or a path."""
    url = remote_url.rstrip("/")
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme in ("http", "https"):
        return url, None
    if scheme == "file":
        return url, Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    if scheme and len(scheme) > 1:
        raise RepoDataError(f"{remote_url}: unsupported URL scheme {scheme!r} (use http, https or file)")
    path = Path(url).expanduser().resolve()
    return path.as_uri(), path


class Upstream:
    """An upstream channel, reached by one policy with one client and one cache.

    `on_retry(subdir, reason, delay)` hears about each failed attempt that is tried again.
    `cancel` (a threading.Event) stops a fetch between reads. Use as a context manager, or
    call `close()`.
    """

    def __init__(
        self,
        remote_url: str,
        policy: NetworkPolicy | None = None,
        cache_dir: Path | None = None,
        *,
        cancel: threading.Event | None = None,
        on_retry: Callable[[str, str, float], None] | None = None,
    ):
        self.base, self.local = channel_location(remote_url)
        self.policy = policy or NetworkPolicy()
        self.cache_dir = cache_dir
        self.cancel = cancel or threading.Event()
        self.on_retry = on_retry
        self._tls = self.policy.tls()  # made when a first https URL needs it
        self._local = threading.local()  # each thread's connections (a fetch runs ahead in one)
        self._connections: list[Connections] = []
        self._lock = threading.Lock()
        # every socket the connections opened: what abort() shuts down
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()

    @classmethod
    def of(cls, settings: Settings, **kwargs) -> Upstream:
        """The upstream of `settings`, its cache under the mirror's state folder; none where
        the mirror does not exist yet (a dry run before the first sync creates nothing)."""
        mirror = Path(settings.local_dir)  # a bucket mirror's cache is in its local work folder
        cache = upstream_cache_dir(mirror, settings.channel_name) if mirror.is_dir() else None
        return cls(settings.remote_url, NetworkPolicy.of(settings), cache, **kwargs)

    def __enter__(self) -> Upstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for conns in connections:
            conns.close()

    def abort(self) -> None:
        """Cancel, and shut down the sockets of transfers in flight: a read blocked on a stalled
        upstream returns at once. Safe from another thread and from a signal handler (no lock)."""
        self.cancel.set()
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _opened(self, sock: socket.socket) -> None:
        self._sockets.add(sock)
        if self.cancel.is_set():  # aborted while connecting: do not start the transfer
            raise Cancelled

    def client(self) -> Connections:
        """This thread's connections to upstream."""
        conns = getattr(self._local, "connections", None)
        if conns is None:
            proxy = self.policy.parsed_proxy()
            conns = self._local.connections = Connections(self.policy.timeout, self._tls, proxy, self._opened)
            with self._lock:
                self._connections.append(conns)
        return conns

    # ---- fetching

    def fetch(self, subdir: str) -> Fetched:
        """A subdir's repodata, conditional on the kept copy, retried as the policy says."""
        if self.local is not None:
            return self._fetch_local(subdir)
        on_retry = self.on_retry
        return self.policy.retrying(
            lambda: self._fetch_once(subdir),
            self.cancel,
            RepoDataError,
            None if on_retry is None else lambda reason, delay: on_retry(subdir, reason, delay),
        )

    def repodata(self, subdir: str) -> RepoData:
        return self.decode(self.fetch(subdir))

    @staticmethod
    def decode(fetched: Fetched, plan_only: bool = False) -> RepoData:
        return decode_repodata(fetched.data, fetched.subdir, fetched.url, plan_only)

    def _fetch_local(self, subdir: str) -> Fetched:
        assert self.local is not None
        found = read_repodata_file(self.local / subdir)
        if found is None:
            if subdir == "noarch":
                return Fetched(subdir, f"{self.base}/noarch/repodata.json", empty_repodata("noarch"))
            raise RepoDataNotFound(f"{self.local / subdir}: no repodata.json here")
        name, data = found
        return Fetched(subdir, f"{self.base}/{subdir}/{name}", data)

    def _fetch_once(self, subdir: str) -> Fetched:
        cached = self._read_cache(subdir)
        if cached is not None:
            meta, body = cached
            headers = {}
            if meta.etag:
                headers["If-None-Match"] = meta.etag
            if meta.last_modified:
                headers["If-Modified-Since"] = meta.last_modified
            if headers:
                status, reply_headers, content = self._get(meta.url, headers)
                if status == 304:
                    try:
                        data = decompress_named(meta.url, meta.name, body)
                    except RepoDataError:  # the kept copy is damaged: ask for the whole file
                        self._drop_cache(subdir)
                        return self._fetch_once(subdir)
                    return Fetched(subdir, meta.url, data, not_modified=True)
                if status < 300:
                    return self._keep(subdir, meta.url, meta.name, reply_headers, content)
                if status not in (403, 404):
                    raise RepoDataError(f"{meta.url}: HTTP {status}")
        for name in REPODATA_NAMES:
            url = f"{self.base}/{subdir}/{name}"
            status, reply_headers, content = self._get(url, {})
            if status in (403, 404):
                continue
            if status >= 300:
                raise RepoDataError(f"{url}: HTTP {status}")
            return self._keep(subdir, url, name, reply_headers, content)
        if subdir == "noarch":
            return Fetched(subdir, f"{self.base}/noarch/repodata.json", empty_repodata("noarch"))
        raise RepoDataNotFound(f"{self.base}/{subdir}/: no repodata.json there")

    def _get(self, url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes | bytearray]:
        """GET `url`: (status, validators, body read in full when the status is below 300)."""
        try:
            response = self.client().get(url, {"Accept-Encoding": "gzip", **headers})
        except (TooManyRedirects, CertificateError) as exc:
            raise RepoDataError(f"{url}: {exc}") from None
        except (TimeoutError, TransferError) as exc:
            raise self.policy.again(url, exc, self.cancel) from None
        try:
            status = response.status
            if status in RETRY_STATUSES:
                raise Again(f"{url}: HTTP {status}")
            validators = {k: v for k in ("ETag", "Last-Modified") if (v := response.header(k))}
            body = self._read_body(url, response) if status < 300 else b""
            return status, validators, body
        except (TimeoutError, TransferError) as exc:
            raise self.policy.again(url, exc, self.cancel) from None
        finally:
            response.close()

    def _read_body(self, url: str, response: Response) -> bytes | bytearray:
        """The body, decoded when it was sent gzip-encoded; one buffer of its Content-Length
        when it has one (537 MB of peak memory for a 133 MB repodata read as pieces and their
        join, 161 MB this way), checking `cancel` as it comes."""
        body = response.read_all(self.cancel)
        encoding = (response.header("Content-Encoding") or "identity").strip().lower()
        if encoding == "identity":
            return body
        if encoding not in ("gzip", "x-gzip", "deflate"):
            raise RepoDataError(f"{url}: sent with Content-Encoding {encoding!r}, which was not asked for")
        try:
            return zlib.decompress(body, wbits=47)  # a gzip or zlib header, whichever it has
        except zlib.error as exc:
            raise Again(f"{url}: {encoding} body cut short or damaged ({exc})") from None

    def _keep(
        self, subdir: str, url: str, name: str, validators: dict[str, str], body: bytes | bytearray
    ) -> Fetched:
        try:
            data = decompress_named(url, name, body)
        except RepoDataError as exc:  # cut short on the way, most likely: ask again
            raise Again(str(exc)) from None
        meta = _CacheMeta(url, name, validators.get("ETag"), validators.get("Last-Modified"))
        if meta.etag or meta.last_modified:
            self._write_cache(subdir, meta, body)
        return Fetched(subdir, url, data)

    # ---- the kept copies

    def _cache_path(self, subdir: str) -> Path | None:
        return self.cache_dir / f"{subdir}.cache" if self.cache_dir is not None else None

    def _read_cache(self, subdir: str) -> tuple[_CacheMeta, bytes] | None:
        """The kept copy: a JSON header line, then the body as upstream served it."""
        path = self._cache_path(subdir)
        if path is None:
            return None
        try:
            header, _, body = path.read_bytes().partition(b"\n")
            meta = msgspec.json.decode(header, type=_CacheMeta)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            return None
        if not meta.url.startswith(f"{self.base}/{subdir}/"):
            return None  # kept for another upstream
        return meta, body

    def _drop_cache(self, subdir: str) -> None:
        path = self._cache_path(subdir)
        if path is not None:
            try:
                path.unlink()
            except OSError:
                pass

    def _write_cache(self, subdir: str, meta: _CacheMeta, body: bytes | bytearray) -> None:
        path = self._cache_path(subdir)
        if path is None:
            return
        # not synced to disk: a lost copy only makes the next request unconditional; a mirror
        # that cannot be written (a dry run as another user) simply keeps no copy
        try:
            atomic_write_bytes(path, msgspec.json.encode(meta) + b"\n" + body, durable=False)
        except OSError:
            pass


def fetch_upstream(
    settings: Settings,
    subdirs: Iterable[str] | None = None,
    *,
    cancel: threading.Event | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    missing: MutableMapping[str, str] | None = None,
    plan_only: bool = False,
) -> dict[str, RepoData]:
    """The upstream repodata of each subdir the settings name, fetched through their cache.

    The next subdir's download (and decompression, which release the GIL) runs in a thread
    while this one is decoded (which holds it); one file ahead at most, so memory stays bounded
    (the first two subdirs' downloads start together).
    `progress(subdir, n, total)` is called as each subdir's fetch begins to be awaited.
    With `missing`, a subdir that upstream does not carry (no repodata of any name) is left out
    of the result and put there with the reason, instead of raising RepoDataNotFound.
    A Ctrl-C (or any exception) on the way stops the fetch running ahead at once.
    With `plan_only`, the records hold only what a plan reads (conda/repodata.py's PlanRecord).
    """
    subdirs = list(subdirs or settings.subdirs)
    out: dict[str, RepoData] = {}
    with Upstream.of(settings, cancel=cancel) as upstream:
        try:
            # the first two start together: once a decode holds the GIL, a fetch started then
            # waits for it (its reads need the GIL between the releasing calls)
            ahead = [_Ahead(upstream.fetch, subdir) for subdir in subdirs[:2]]
            for n, subdir in enumerate(subdirs):
                if progress is not None:
                    progress(subdir, n + 1, len(subdirs))
                try:
                    fetched = ahead.pop(0).result()
                except RepoDataNotFound as exc:
                    if missing is None:
                        raise
                    missing[subdir] = str(exc)
                    fetched = None
                if not ahead and n + 1 < len(subdirs):  # then one file ahead at most
                    ahead.append(_Ahead(upstream.fetch, subdirs[n + 1]))
                if fetched is not None:
                    out[subdir] = upstream.decode(fetched, plan_only)
                    del fetched
        except BaseException:
            upstream.abort()  # the fetch ahead stops now, not after its timeout
            raise
    return out


class _Ahead:
    """One fetch running in a daemon thread while the caller decodes the previous one: a fetch
    left behind by a Ctrl-C never holds up the process's exit (a pool's thread would)."""

    def __init__(self, fetch: Callable[[str], Fetched], subdir: str):
        self._done = threading.Event()
        self._result: Fetched | None = None
        self._error: BaseException | None = None
        threading.Thread(target=self._run, args=(fetch, subdir), daemon=True, name="fetch-repodata").start()

    def _run(self, fetch: Callable[[str], Fetched], subdir: str) -> None:
        try:
            self._result = fetch(subdir)
        except BaseException as exc:  # handed to the caller, in its thread
            self._error = exc
        finally:
            self._done.set()

    def result(self) -> Fetched:
        self._done.wait()  # a Ctrl-C interrupts the wait
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


def load_repodata(remote_url: str, subdir: str, policy: NetworkPolicy | None = None) -> RepoData:
    """One subdir's repodata, uncached (a channel on disk, or a quick look upstream)."""
    with Upstream(remote_url, policy) as upstream:
        return upstream.repodata(subdir)
