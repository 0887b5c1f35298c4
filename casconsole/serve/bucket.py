"""cas-server in front of a bucket mirror (mirror_dir: s3://...): a stateless front end.

The routing is the folder's (Site.route: the target's rules, the root URL as the mirrored
channel, private channels only under /t/<token>/), the answer comes from the bucket, worked
out in a thread of the executor since every bucket request blocks:

- `s3_serve: stream` (the default): the server reads the object and sends it on, a chunk at a
  time as the client takes it; ranges and conditional requests (If-None-Match, If-Range,
  If-Modified-Since) are answered as for a file, from the object's ETag and Last-Modified;
- `s3_serve: redirect`: after the same checks (a 304 is still answered here), a 302 to a
  presigned URL of the object, valid `s3_redirect_seconds`: the bytes go from the storage to
  the client, which sends its Range there. HEAD is answered here (a presigned GET is no HEAD).

Cache headers, for a CDN or a caching proxy in front: package files are never rewritten under
their name (a rebuild is a new name), so they get a year (`immutable`); index files get a short
max-age and their ETag, so a cache revalidates them (docs/scale-out.md).

Tokens are the object `.cas/tokens.json`, read again at most every REFRESH seconds; the health
URL reads the sync's status copy and its lock object (whose heartbeat says whether a sync runs),
at most every HEALTH_REFRESH seconds. Folder pages are made from listings. No gzip cache:
clients fetch `repodata.json.zst`.
"""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import Executor

from casconsole.errors import StorageError
from casconsole.layout import STATE_DIR, SYNC_LOG, TOKENS
from casconsole.serve.health import Health, package_version
from casconsole.serve.site import (
    SMALL_BODY,
    Response,
    Site,
    _http_date,
    _redirect,
    content_type,
    error,
    not_modified,
    parse_range,
    render_page,
)
from casconsole.serve.tokens import TokenStoreError, _parse, hash_token
from casconsole.storage import ObjectInfo, ObjectNotFound, WriteConflict
from casconsole.storage.lease import read_holder

REFRESH = 2.0  # seconds a token list read from the bucket is trusted
HEALTH_REFRESH = 5.0
PACKAGE_CACHE = "public, max-age=31536000, immutable"
INDEX_CACHE = "public, max-age=60"  # with the ETag: caches revalidate, a 304 when unchanged
OTHER_CACHE = "public, max-age=300"
INDEX_NAMES = ("repodata.json", "current_repodata.json", "repodata_from_packages.json", "channeldata.json",
               "repodata_shards.msgpack.zst", "run_exports.json")  # fmt: skip


def cache_control(name: str) -> str:
    if name.endswith((".conda", ".tar.bz2", ".whl")):
        return PACKAGE_CACHE
    if name.startswith(INDEX_NAMES):
        return INDEX_CACHE
    return OTHER_CACHE


class BucketTokens:
    """The server's view of a bucket mirror's tokens: re-read at most every REFRESH seconds;
    an unreadable or corrupt object denies every token (fail closed), reported once."""

    def __init__(self, storage, on_error=None):
        self.storage = storage
        self.key = f"{STATE_DIR}/{TOKENS}"
        self._grants: dict[str, frozenset[str]] = {}
        self._etag: str | None = None
        self._at = float("-inf")
        self._lock = threading.Lock()
        self._on_error = on_error
        self._reported: str | None = None

    def _refresh(self) -> None:
        with self._lock:
            if time.monotonic() - self._at < REFRESH:
                return
            self._at = time.monotonic()
            try:
                info = self.storage.head(self.key)
                if info is None:
                    self._grants, self._etag = {}, None
                    return
                if info.etag == self._etag:
                    return
                data, info = self.storage.get(self.key)
                records = _parse(data, self.storage.where(self.key))
            except (StorageError, TokenStoreError) as exc:
                self._grants, self._etag = {}, None
                if self._on_error is not None and str(exc) != self._reported:
                    self._reported = str(exc)
                    self._on_error(str(exc))
                return
            grants: dict[str, set[str]] = {}
            for r in records:
                grants.setdefault(r.sha256, set()).add(r.channel)
            self._grants = {h: frozenset(c) for h, c in grants.items()}
            self._etag = info.etag
            self._reported = None

    def channels(self, token: str) -> frozenset[str]:
        self._refresh()
        return self._grants.get(hash_token(token), frozenset())

    def allows(self, token: str, channel: str) -> bool:
        return channel in self.channels(token)

    def is_token(self, candidate: str) -> bool:
        """For hiding tokens in log lines, from the event loop: what was read last, no request."""
        return hash_token(candidate) in self._grants


class BucketHealth(Health):
    """The health document of a bucket mirror: the status copy the sync writes to the bucket,
    and its lock object (a sync runs while its heartbeat is fresh)."""

    def __init__(self, storage):
        self.storage = storage
        self.version = package_version()
        self._started = self._finished = None
        self._offset = 0
        self._body: bytes | None = None
        self._at = float("-inf")
        self._lock = threading.Lock()

    def body(self) -> bytes:
        with self._lock:
            if self._body is None or time.monotonic() - self._at >= HEALTH_REFRESH:
                self._body, self._at = super().body(), time.monotonic()
            return self._body

    def _sync(self) -> dict:
        self._started = self._finished = None
        self._offset = 0
        try:
            data, _ = self.storage.get(f"{STATE_DIR}/{SYNC_LOG}")
        except ObjectNotFound:
            return {"state": "none"}
        except StorageError as exc:
            return {"state": "unknown", "error": str(exc)}
        self._take(data, 0)
        out = self._summary()
        if self._started is not None and self._finished is None:
            try:
                holder = read_holder(self.storage)
            except StorageError:
                holder = None
            out["state"] = "running" if holder is not None and holder.get("alive") else "interrupted"
        return out


class BucketSite(Site):
    """A Site whose files are a bucket's objects; every answer is worked out in a thread."""

    def __init__(self, storage, private_channels, tokens, executor: Executor, channel=None, health=None,
                 mode: str = "stream", redirect_seconds: int = 3600):  # fmt: skip
        self.storage = storage
        self.root = self.prefix = ""
        self._routing(private_channels, tokens, executor, channel, health)
        self.gzip = None
        self.mode = mode
        self.redirect_seconds = redirect_seconds
        self.pypi = None  # the PyPI mirror is kept in a mirror folder only

    def handle(self, method: bytes, target: bytes, headers: dict[bytes, bytes]):
        """Always a Future: the routing too runs in the thread (a token check may read the
        bucket), and so do the health URL and nginx's auth requests."""
        return self.executor.submit(self._handle, method, target, headers), _same

    def _handle(self, method: bytes, target: bytes, headers: dict[bytes, bytes]) -> Response:
        routed = self.route(method, target, headers)
        if isinstance(routed, Response):
            return routed
        segs, trailing, asked, _token, granted, log_path = routed
        key = "/".join(segs)
        try:
            if key and not trailing:
                for _ in range(3):  # the object replaced between its HEAD and its GET: again
                    info = self.storage.head(key)
                    if info is None:
                        break
                    try:
                        return self._object(method, info, segs, headers, log_path)
                    except (WriteConflict, ObjectNotFound):
                        continue
                folders, objects = self.storage.list_dir(key)
                return _redirect(asked, log_path) if folders or objects else error(404, log_path)
            return self._folder(key, segs, granted, log_path)
        except StorageError as exc:  # the bucket failed this front end: said once per request
            print(f"cas-server: {exc}", file=sys.stderr, flush=True)
            return error(502, log_path, "Bad Gateway")

    def _object(self, method: bytes, info: ObjectInfo, segs: list[str], headers, log_path: str) -> Response:
        name = segs[-1]
        size, etag = info.size, info.etag
        last_modified = _http_date(int(info.modified))
        validators = [
            f"ETag: {etag}",
            f"Last-Modified: {last_modified}",
            f"Cache-Control: {cache_control(name)}",
        ]
        if not_modified(headers, etag, info.modified):
            return Response(304, validators, log_path=log_path)
        if self.mode == "redirect" and method == b"GET":
            url = self.storage.sign(info.key, self.redirect_seconds)
            resp = Response(302, [f"Location: {url}", "Content-Length: 0", "Cache-Control: no-store"],
                            log_path=log_path)  # fmt: skip
            return resp
        status, first, count = 200, 0, size
        rng = headers.get(b"range")
        if rng is not None and self._if_range(headers.get(b"if-range"), etag, last_modified):
            parsed = parse_range(rng, size)
            if parsed is False:
                resp = error(416, log_path, "Range Not Satisfiable")
                resp.headers.append(f"Content-Range: bytes */{size}")
                return resp
            if parsed is not None:
                first, last = parsed
                status, count = 206, last - first + 1
                validators.append(f"Content-Range: bytes {first}-{last}/{size}")
        head = [f"Content-Type: {content_type(name)}", f"Content-Length: {count}", "Accept-Ranges: bytes"]
        resp = Response(status, [*head, *validators], log_path=log_path)
        if method == b"HEAD" or count == 0:
            return resp
        # one GET, only of the version whose headers these are (else WriteConflict: again)
        _, chunks = self.storage.open_read(info.key, first, first + count, if_match=etag)
        if count <= SMALL_BODY:
            resp.body = b"".join(chunks)
        else:
            resp.stream = chunks
        return resp

    def _folder(self, key: str, segs: list[str], granted: frozenset[str], log_path: str) -> Response:
        folders, objects = self.storage.list_dir(key)
        if key and not folders and not objects:
            return error(404, log_path)
        rows = []
        for name in folders:
            if name.startswith("."):
                continue
            if not segs and name in self.private and name not in granted:
                continue  # the root lists channels: hide the private ones this request cannot see
            rows.append((False, name, True, 0, 0.0))
        for info in objects:
            if not info.name.startswith("."):
                rows.append((True, info.name, False, info.size, info.modified))
        return self._page_response(render_page(segs, rows), log_path)


def _same(resp: Response) -> Response:
    return resp
