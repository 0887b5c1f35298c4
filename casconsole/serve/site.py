"""What cas-server answers: request target -> file, directory page or error.

Everything here is synchronous and cheap per request (a handful of syscalls); the slow
parts - compressing a new repodata version, listing a huge directory - run in a thread
pool and never in the event loop. Connection handling lives in `http.py`.
"""

from __future__ import annotations

import contextlib
import email.utils
import html
import os
import stat
import time
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import Executor
from pathlib import Path
from urllib.parse import quote, unquote_to_bytes

from casconsole.layout import KNOWN_SUBDIRS, PYPI_DIR
from casconsole.serve.gzipcache import GzipCache
from casconsole.serve.health import HEALTH_PATH, Health
from casconsole.serve.pypi import PypiRoutes
from casconsole.serve.tokens import TokenChecker

SMALL_BODY = 64 * 1024  # up to this size a body is read and sent with its headers in one write
GZIP_MIN = 1024  # smaller JSON is not worth a second file
TOKEN_PREFIX = "t"  # /t/<token>/<channel>/..., the anaconda.org form
AUTH_PATH = "/.cas/auth"  # token check for nginx's auth_request (see server_nginx)

_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY  # NONBLOCK: no FIFO hangs
_HAVE_PROC_FD = os.path.isdir("/proc/self/fd")

CONTENT_TYPES = {
    ".json": "application/json",
    ".conda": "application/octet-stream",
    ".bz2": "application/x-bzip2",
    ".zst": "application/zstd",
    ".gz": "application/gzip",
    ".html": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
    ".sh": "application/x-sh",
    ".whl": "application/zip",
    ".zip": "application/zip",
    ".xml": "application/xml",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
_COMPRESSIBLE = (".json",)

_NOT_FOUND_BODY = b"404 Not Found\n"


class Response:
    """A response ready to write: status, header lines, and a body or a file range."""

    __slots__ = ("body", "close", "count", "fd", "headers", "log_path", "offset", "status", "stream")

    def __init__(self, status: int, headers: list[str], body: bytes = b"", log_path: str = ""):
        self.status = status
        self.headers = headers
        self.body = body
        self.fd = -1  # >= 0: send `count` bytes from `offset` of this file after the headers
        self.offset = 0
        self.count = 0
        self.close = False  # close the connection after this response
        self.log_path = log_path
        # the body's chunks, when they come from elsewhere (a bucket): each next() is called in a
        # thread of the executor, one at a time, as the client takes the last one
        self.stream = None


def error(status: int, log_path: str = "", text: str = "") -> Response:
    body = _NOT_FOUND_BODY if status == 404 else f"{status} {text}\n".encode()
    resp = Response(
        status,
        ["Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(body)}"],
        body,
        log_path,
    )
    resp.close = status == 400  # whatever else the client sent cannot be trusted
    return resp


class _BadRequest(Exception):
    pass


class _Hidden(Exception):
    pass


def split_target(target: bytes) -> tuple[list[str], bool]:
    """Request target -> (path segments, trailing slash).

    Each segment is percent-decoded once. Encoded separators (%2f, %5c), NUL and backslashes
    are refused (_BadRequest); `.`, `..` and any dot-name are hidden (_Hidden): nothing
    under a dot-folder (`.cas/tokens.json`, writers' `.part` files) is ever served. Empty
    segments (double slashes) are dropped, which is harmless since segments are joined
    under the root by us and never interpreted as an absolute path.
    """
    if target[:1] != b"/":
        if target[:7].lower() == b"http://" or target[:8].lower() == b"https://":
            slash = target.find(b"/", target.find(b"//") + 2)
            target = target[slash:] if slash >= 0 else b"/"
        else:
            raise _BadRequest
    q = target.find(b"?")
    if q >= 0:
        target = target[:q]
    h = target.find(b"#")
    if h >= 0:
        target = target[:h]
    if b"\\" in target or b"\0" in target:
        raise _BadRequest
    if b"%" not in target:  # the common case, in one pass
        segs = [seg for seg in target.decode("utf-8", "surrogateescape").split("/") if seg]
        if any(seg[0] == "." for seg in segs):
            raise _Hidden
        return segs, target.endswith(b"/")
    segs = []
    for raw in target.split(b"/"):
        if not raw:
            continue
        if b"%" in raw:
            raw = unquote_to_bytes(raw)
            if b"/" in raw or b"\\" in raw or b"\0" in raw:
                raise _BadRequest
        # file names are bytes on POSIX: names that are not UTF-8 still map to their file
        seg = raw.decode("utf-8", "surrogateescape")
        if seg[0] == ".":
            raise _Hidden
        segs.append(seg)
    return segs, target.endswith(b"/")


def _redirect(segs: list[str], log_path: str) -> Response:
    """301 to the folder's URL with a slash: rebuilt from the segments, so it always starts
    with one slash (a raw `//host/x` would be a scheme-relative URL to another site)."""
    location = "/" + "".join(quote(s.encode("utf-8", "surrogateescape"), safe="") + "/" for s in segs)
    resp = error(301, log_path, "Moved Permanently")
    resp.headers.append(f"Location: {location}")
    return resp


def content_type(name: str) -> str:
    dot = name.rfind(".")
    return (
        CONTENT_TYPES.get(name[dot:].lower(), "application/octet-stream")
        if dot > 0
        else ("application/octet-stream")
    )


def accepts_gzip(value: bytes | None) -> bool:
    if not value or b"gzip" not in value.lower():
        return False
    for part in value.lower().split(b","):
        name, _, params = part.partition(b";")
        if name.strip() == b"gzip":
            q = params.strip()
            if q.startswith(b"q="):
                try:
                    return float(q[2:]) > 0
                except ValueError:
                    return False
            return True
    return False


def parse_range(value: bytes, size: int) -> tuple[int, int] | bool | None:
    """A single `bytes=` range -> (first, last); None to ignore the header; False if unsatisfiable."""
    value = value.strip()
    if not value.lower().startswith(b"bytes="):
        return None
    spec = value[6:].strip()
    if b"," in spec:
        return None  # multiple ranges: answering the whole file is allowed and simpler
    first, dash, last = spec.partition(b"-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    try:
        if not first:  # suffix range: the last N bytes
            n = int(last)
            if n < 0 or not last.isdigit():
                return None
            if n == 0 or size == 0:
                return False
            return max(0, size - n), size - 1
        if not first.isdigit() or (last and not last.isdigit()):
            return None
        a = int(first)
        b = int(last) if last else size - 1
    except ValueError:
        return None
    if last and b < a:
        return None  # syntactically invalid: ignored
    if a >= size:
        return False
    return a, min(b, size - 1)


def _etag_matches(header: bytes, etag: str) -> bool:
    """If-None-Match uses the weak comparison: W/ prefixes are ignored."""
    if header.strip() == b"*":
        return True
    tag = etag.encode()
    for part in header.split(b","):
        part = part.strip()
        if part.startswith(b"W/"):
            part = part[2:]
        if part == tag:
            return True
    return False


def _http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def _parse_http_date(value: bytes) -> float | None:
    """An HTTP date as a timestamp; None for one that cannot be read, has no zone, or lies in
    the future (a validator from the future says nothing about this file: RFC 9110 13.1.3)."""
    try:
        parsed = email.utils.parsedate_to_datetime(value.decode("latin-1"))
        ts = parsed.timestamp() if parsed.tzinfo else None
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return ts if ts is not None and ts <= time.time() else None


def not_modified(headers: dict[bytes, bytes], etag: str, modified: float) -> bool:
    """Whether a conditional GET or HEAD is answered 304: If-None-Match decides when sent,
    else If-Modified-Since (RFC 9110 13.2.2), for the file or object of this ETag and time."""
    inm = headers.get(b"if-none-match")
    if inm is not None:
        return _etag_matches(inm, etag)
    ims = headers.get(b"if-modified-since")
    since = _parse_http_date(ims) if ims is not None else None
    return since is not None and int(modified) <= since


class Site:
    """Maps requests to the mirror tree; one per worker process.

    `channel` is the mirrored channel (`channel_name`): the mirror's root URL is a channel
    too, `/<subdir>/...` answering from `<root>/<channel>/<subdir>/...`, as the FAQ's
    `.condarc` (`http://<mirror>:8080`) has it. `health` answers the health URL.
    """

    def __init__(
        self,
        root: Path,
        private_channels: Iterable[str],
        tokens: TokenChecker,
        gzip_cache: GzipCache | None,
        executor: Executor,
        channel: str | None = None,
        health: Health | None = None,
        pypi_private: Iterable[str] = (),
    ):
        self.root = os.path.realpath(root)
        self.prefix = self.root.rstrip("/") + "/"
        self._routing(private_channels, tokens, executor, channel, health)
        self.gzip = gzip_cache
        # the PyPI mirror under /pypi/ (serve/pypi.py); `pypi` in private_channels makes all of it private
        self.pypi = PypiRoutes(self.root, pypi_private, PYPI_DIR in self.private)
        self._dates: dict[int, str] = {}
        self._pages: OrderedDict[tuple, bytes] = OrderedDict()

    # ---------------------------------------------------------------- routing

    def _routing(self, private_channels: Iterable[str], tokens: TokenChecker, executor: Executor,
                 channel: str | None, health: Health | None) -> None:  # fmt: skip
        """What `route` reads, for this site and a bucket's (serve/bucket.py)."""
        self.private = frozenset(private_channels)
        # a request naming a private channel in another case is refused, not served: on a
        # case-insensitive filesystem it would open the private folder
        self._private_folded = frozenset(c.casefold() for c in self.private)
        self.tokens = tokens
        self.executor = executor
        self.channel = channel
        self.health = health

    def handle(self, method: bytes, target: bytes, headers: dict[bytes, bytes]):
        """A Response, or a Future of one when the answer needs a thread (directory pages)."""
        routed = self.route(method, target, headers)
        if isinstance(routed, Response):
            return routed
        segs, trailing, asked, token, granted, log_path = routed
        path = self.prefix + "/".join(segs) if segs else self.root
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError:
            return error(404, log_path)
        try:
            st = os.fstat(fd)
            if not self._contained(fd, path, token, granted):
                os.close(fd)
                return error(404, log_path)
            if stat.S_ISREG(st.st_mode) and not trailing:
                return self._file(method, fd, st, segs, headers, log_path)
            os.close(fd)
            if stat.S_ISDIR(st.st_mode):
                if not trailing:
                    return _redirect(asked, log_path)
                return self._directory(path, st, segs, granted, log_path)
            return error(404, log_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise

    def route(self, method: bytes, target: bytes, headers: dict[bytes, bytes]):
        """The request target as (segments under the root, trailing slash, segments as asked,
        token, channels the token grants, path for the log), or the Response that ends it here:
        bad or hidden targets, the token check, the health URL, private channels refused."""
        try:
            segs, trailing = split_target(target)
        except _BadRequest:
            return error(400, text="Bad Request")
        except _Hidden:
            path = target.split(b"?", 1)[0]
            if path == AUTH_PATH.encode():
                return self._auth(headers)
            if path == HEALTH_PATH.encode() and self.health is not None:
                return self._health()
            return error(404)

        asked = segs  # as requested: what a redirect repeats
        token = None
        log_path = "/" + "/".join(segs) + ("/" if trailing and segs else "")
        if segs and segs[0] == TOKEN_PREFIX:
            if len(segs) < 2:
                return error(404, log_path)
            token = segs[1]
            segs = segs[2:]
            log_path = "/t/<token>/" + "/".join(segs) + ("/" if trailing and segs else "")
        if segs and segs[0] in KNOWN_SUBDIRS and self.channel:
            segs = [self.channel, *segs]  # the root URL as the mirrored channel
        elif segs and segs[0] == PYPI_DIR and self.pypi is not None:
            return self._pypi(method, segs, trailing, token, headers, log_path)
        granted: frozenset[str] = frozenset()
        if self._private_folded and segs and segs[0].casefold() in self._private_folded:
            if token is None or segs[0] not in self.private:
                return error(404, log_path)
            granted = self.tokens.channels(token)
            if segs[0] not in granted:
                return error(404, log_path)
        elif token is not None and not segs and self.private:
            granted = self.tokens.channels(token)  # for the root page only
        return segs, trailing, asked, token, granted, log_path

    def _pypi(self, method, segs, trailing, token, headers, log_path) -> Response:
        """The simple index under /pypi/ (serve/pypi.py decides; files are served as files)."""

        def granted() -> bool:
            return token is not None and PYPI_DIR in self.tokens.channels(token)

        kind, detail = self.pypi.route(segs, trailing, headers, granted)
        if kind == "redirect":
            return _redirect([*([TOKEN_PREFIX, token] if token is not None else []), *detail], log_path)
        if kind == "root":
            body, ctype = detail
            headers_out = [f"Content-Type: {ctype}", f"Content-Length: {len(body)}", "Vary: Accept"]
            return Response(200, headers_out, body if method != b"HEAD" else b"", log_path)
        if kind == "406":
            return error(406, log_path, "Not Acceptable")
        if kind not in ("page", "file"):
            return error(404, log_path)
        path, ctype = detail if kind == "page" else (detail, None)
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError:
            return error(404, log_path)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not self._contained(fd, path, token, frozenset()):
            os.close(fd)
            return error(404, log_path)
        resp = self._file(method, fd, st, path[len(self.prefix) :].split("/"), headers, log_path)
        if ctype is not None:  # the page's type as negotiated, not its file name's
            resp.headers = [h for h in resp.headers if not h.startswith("Content-Type:")]
            resp.headers += [f"Content-Type: {ctype}", "Vary: Accept"]
        return resp

    def _health(self) -> Response:
        assert self.health is not None
        body = self.health.body()
        return Response(
            200,
            ["Content-Type: application/json", f"Content-Length: {len(body)}", "Cache-Control: no-store"],
            body,
            HEALTH_PATH,
        )

    def _contained(self, fd: int, path: str, token: str | None, granted: frozenset[str]) -> bool:
        """Is the file actually opened inside the root, and visible to this request?

        The kernel's path of the open descriptor is checked, not the requested path, so a
        symlink anywhere on the way (or swapped in between two checks) cannot lead outside.
        """
        real = os.readlink(f"/proc/self/fd/{fd}") if _HAVE_PROC_FD else os.path.realpath(path)
        if real == path:
            return True
        if real.endswith(" (deleted)"):  # replaced since we opened it: still the same file
            real = real[: -len(" (deleted)")]
            if real == path:
                return True
        if real == self.root:
            return True
        if not real.startswith(self.prefix):
            return False
        # reached through a symlink inside the root: the target must be visible too
        rel = real[len(self.prefix) :].split("/")
        if any(seg.startswith(".") for seg in rel):
            return False
        return rel[0] not in self.private or rel[0] in granted

    # ---------------------------------------------------------------- files

    def _last_modified(self, mtime: float) -> str:
        sec = int(mtime)
        text = self._dates.get(sec)
        if text is None:
            if len(self._dates) > 4096:
                self._dates.clear()
            text = self._dates[sec] = _http_date(sec)
        return text

    def _file(self, method, fd, st, segs, headers, log_path) -> Response:
        name = segs[-1] if segs else ""
        size = st.st_size
        etag = f'"{st.st_mtime_ns:x}-{size:x}"'
        last_modified = self._last_modified(st.st_mtime)
        extra = []
        ctype = content_type(name)

        if self.gzip is not None and name.endswith(_COMPRESSIBLE) and size >= GZIP_MIN:
            extra.append("Vary: Accept-Encoding")
            if accepts_gzip(headers.get(b"accept-encoding")):
                gz = self.gzip.open("/".join(segs), fd, st)
                if gz is not None:
                    os.close(fd)
                    fd, size = gz
                    etag = etag[:-1] + '-gz"'
                    extra.append("Content-Encoding: gzip")

        validators = [f"ETag: {etag}", f"Last-Modified: {last_modified}", *extra]
        if not_modified(headers, etag, st.st_mtime):
            os.close(fd)
            return Response(304, validators, log_path=log_path)

        status, first, count = 200, 0, size
        rng = headers.get(b"range")
        if rng is not None and self._if_range(headers.get(b"if-range"), etag, last_modified):
            parsed = parse_range(rng, size)
            if parsed is False:
                os.close(fd)
                resp = error(416, log_path, "Range Not Satisfiable")
                resp.headers.append(f"Content-Range: bytes */{size}")
                return resp
            if parsed is not None:
                first, last = parsed
                status, count = 206, last - first + 1
                validators.append(f"Content-Range: bytes {first}-{last}/{size}")

        resp = Response(
            status,
            [
                f"Content-Type: {ctype}",
                f"Content-Length: {count}",
                "Accept-Ranges: bytes",
                *validators,
            ],
            log_path=log_path,
        )
        if method == b"HEAD" or count == 0:
            os.close(fd)
        elif count <= SMALL_BODY:
            try:
                resp.body = os.pread(fd, count, first)
            finally:
                os.close(fd)
            if len(resp.body) != count:  # truncated in place under us: headers now lie
                resp.close = True
        else:
            resp.fd, resp.offset, resp.count = fd, first, count
        return resp

    @staticmethod
    def _if_range(value: bytes | None, etag: str, last_modified: str) -> bool:
        if value is None:
            return True
        value = value.strip()
        if value.startswith(b'"'):
            return value == etag.encode()
        return value == last_modified.encode()

    # ---------------------------------------------------------------- directories

    def _directory(self, path, st, segs, granted, log_path):
        visible = None
        if not segs:  # the root lists channels: hide the private ones this request cannot see
            visible = frozenset(granted)
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, tuple(segs), visible)
        page = self._pages.get(key)
        if page is not None:
            self._pages.move_to_end(key)
            return self._page_response(page, log_path)
        fut = self.executor.submit(self._render_page, path, segs, visible)

        def finish(page: bytes) -> Response:
            self._pages[key] = page
            while len(self._pages) > 64:
                self._pages.popitem(last=False)
            return self._page_response(page, log_path)

        return fut, finish

    @staticmethod
    def _page_response(page: bytes, log_path: str) -> Response:
        return Response(
            200,
            [
                "Content-Type: text/html; charset=utf-8",
                f"Content-Length: {len(page)}",
                "Referrer-Policy: no-referrer",  # a link followed from a token URL keeps it
            ],
            page,
            log_path,
        )

    def _render_page(self, path: str, segs: list[str], visible: frozenset[str] | None) -> bytes:
        rows = []
        with os.scandir(path) as it:
            for entry in it:
                name = entry.name
                if name.startswith("."):
                    continue
                if visible is not None and name in self.private and name not in visible:
                    continue
                try:
                    if entry.is_symlink():
                        real = os.path.realpath(entry.path)
                        if real != self.root and not real.startswith(self.prefix):
                            continue
                        rel = real[len(self.prefix) :].split("/")
                        if any(s.startswith(".") for s in rel) or rel[0] in self.private:
                            continue  # what it leads to is never served from here
                    est = entry.stat()
                except OSError:
                    continue
                is_dir = stat.S_ISDIR(est.st_mode)
                rows.append((not is_dir, name, is_dir, est.st_size, est.st_mtime))
        return render_page(segs, rows)

    # ---------------------------------------------------------------- nginx auth_request

    def _auth(self, headers: dict[bytes, bytes]) -> Response:
        """204 if X-Original-URI is /t/<token>/<private channel>/... with a valid token."""
        uri = headers.get(b"x-original-uri", b"")
        try:
            segs, _ = split_target(uri)
        except (_BadRequest, _Hidden):
            segs = []
        ok = False
        if len(segs) >= 3 and segs[0] == TOKEN_PREFIX:
            channel = self.channel if segs[2] in KNOWN_SUBDIRS and self.channel else segs[2]
            ok = channel in self.private and self.tokens.allows(segs[1], channel)
        if ok:
            return Response(204, [], log_path=AUTH_PATH)
        return error(403, AUTH_PATH, "Forbidden")


def render_page(segs: list[str], rows: list[tuple]) -> bytes:
    """A folder's page: rows of (not a folder, name, is a folder, size, mtime), sorted here."""
    rows.sort()
    title = html.escape("/" + "".join(s + "/" for s in segs))
    out = [
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>Index of {title}</title></head>\n<body><h1>Index of {title}</h1>\n"
        "<table>\n<tr><th>Name</th><th>Size</th><th>Modified (UTC)</th></tr>\n"
    ]
    if segs:
        out.append("<tr><td><a href='../'>../</a></td><td></td><td></td></tr>\n")
    for _, name, is_dir, size, mtime in rows:
        shown = name + "/" if is_dir else name
        href = quote(shown.encode("utf-8", "surrogateescape"))
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(mtime))
        out.append(
            f"<tr><td><a href='{href}'>{html.escape(shown)}</a></td>"
            f"<td>{'' if is_dir else size}</td><td>{when}</td></tr>\n"
        )
    out.append("</table></body></html>\n")
    return "".join(out).encode("utf-8", "surrogateescape")
