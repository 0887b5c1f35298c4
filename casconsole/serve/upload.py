"""Uploads: `PUT /t/<token>/<channel>/<subdir>/<file>` from a token with upload rights.

The request's head is judged as soon as it is parsed (`begin`): the token's rights, the path, the
declared size against `upload_max_size`, the free space. Anything refused is answered before a
byte of the body is read, and nothing is written. An accepted body is streamed by the connection
straight into a staging file under a dot-folder of the subdir (`index/publish.py`: never served,
never indexed), then checked, moved into place and the subdir reindexed in a thread
(`finish`), so the event loop keeps serving while a channel is indexed.

Who may do what: a private channel the token cannot read answers 404, the same as everywhere
(its existence is not revealed); anything else without upload rights is 403, as is the mirrored
channel (cas-sync writes it, from upstream).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl

from casconsole.errors import DiskError
from casconsole.index.publish import (
    BUSY,
    CONFLICT,
    PublishError,
    discard_staged,
    problem_with_name,
    publish_package,
    staging_path,
)
from casconsole.layout import KNOWN_SUBDIRS, channel_name_problem
from casconsole.serve.logs import describe
from casconsole.serve.site import TOKEN_PREFIX, Response, Site, _BadRequest, _Hidden, error, split_target

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


@dataclass(frozen=True)
class UploadOptions:
    max_size: int = 4 << 30  # upload_max_size
    timeout: float = 120.0  # upload_timeout: seconds a body may send nothing


class Upload:
    """One upload arriving: its staging file open for writing, its bytes counted."""

    __slots__ = ("channel", "fd", "fn", "force", "made", "max_size", "size", "staged", "subdir", "where")

    def __init__(
        self, channel: Path, subdir: str, fn: str, staged: Path, fd: int, force: bool, made, max_size
    ):
        self.channel = channel
        self.subdir = subdir
        self.fn = fn
        self.staged = staged
        self.fd = fd
        self.force = force
        self.made: list[Path] = made  # folders made for it, removed again if it fails
        self.max_size = max_size
        self.size = 0
        self.where = f"{channel.name}/{subdir}/{fn}"

    def write(self, data: bytes) -> Response | None:
        """Append a piece of the body; a Response when the upload must be refused (then it is
        already aborted)."""
        self.size += len(data)
        if self.size > self.max_size:
            self.abort()
            return _refusal(413, f"{self.where}: larger than upload_max_size ({self.max_size:,} bytes)")
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as exc:
            self.abort()
            return _disk_refusal(exc, self.where)
        return None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def abort(self) -> None:
        """Forget it: the staging file and the folders made for it are removed."""
        self.close()
        discard_staged(self.staged)
        self.unmake()

    def unmake(self) -> None:
        for folder in reversed(self.made):
            with contextlib.suppress(OSError):  # not empty: another upload is using it
                folder.rmdir()
        self.made = []


class Uploads:
    """A worker's uploads: `begin` on the event loop when a PUT's head is complete, `finish` (a
    thread) once its body is."""

    def __init__(self, site: Site, options: UploadOptions, executor: Executor):
        self.site = site
        self.options = options
        self.timeout = options.timeout
        self.executor = executor
        self._private_folded = frozenset(c.casefold() for c in site.private)

    # ---------------------------------------------------------------- the head

    def begin(self, target: bytes, headers: dict[bytes, bytes]) -> Upload | Response:
        try:
            segs, trailing = split_target(target)
        except _BadRequest:
            return error(400, text="Bad Request")
        except _Hidden:
            return error(404)
        token = None
        if segs and segs[0] == TOKEN_PREFIX and len(segs) >= 2:
            token, segs = segs[1], segs[2:]
        if segs and segs[0] in KNOWN_SUBDIRS and self.site.channel:
            segs = [self.site.channel, *segs]  # the root URL form: the mirrored channel
        channel = segs[0] if segs else ""
        tokens = self.site.tokens
        if channel.casefold() in self._private_folded and (
            token is None or channel not in self.site.private or not tokens.allows(token, channel)
        ):
            return error(404)  # as for a GET: a private channel is not revealed
        if token is None:
            return _refusal(
                403,
                "uploads need a token with upload rights: PUT /t/<token>/<channel>/<subdir>/<file>",
            )
        if channel == self.site.channel:
            return _refusal(
                403, f"{channel} is the mirrored channel, written by cas-sync: it takes no uploads"
            )
        if not channel or not tokens.may_upload(token, channel):
            hint = "cas-server token add CHANNEL --upload"
            return _refusal(403, f"this token has no upload rights on {channel or '/'!r} ({hint})")
        if len(segs) != 3 or trailing or channel_name_problem(channel) or channel == TOKEN_PREFIX:
            return _refusal(400, "expected PUT /t/<token>/<channel>/<subdir>/<file>")
        subdir, fn = segs[1], segs[2]
        problem = problem_with_name(subdir, fn)
        if problem:
            return _refusal(400, problem)
        force = _force(target)
        if force is None:
            return _refusal(400, "the only query parameter is force=1 (replace other bytes)")
        length = headers.get(b"content-length")
        if length is None and b"transfer-encoding" not in headers:
            return _refusal(411, "send the package as the body, with its Content-Length")
        size = int(length) if length is not None else 0  # digits only: llhttp checked them
        if length is not None and size == 0:
            return _refusal(400, f"{channel}/{subdir}/{fn}: the body is empty")
        if size > self.options.max_size:
            return _refusal(
                413, f"{channel}/{subdir}/{fn}: larger than upload_max_size ({self.options.max_size:,} bytes)"
            )
        return self._open(channel, subdir, fn, force, size)

    def _open(self, channel: str, subdir: str, fn: str, force: bool, size: int) -> Upload | Response:
        root = Path(self.site.root)
        folder = root / channel / subdir
        made: list[Path] = []
        staged: Path | None = None
        try:
            for path in (root / channel, folder):
                with contextlib.suppress(FileExistsError):
                    path.mkdir()
                    made.append(path)
            if os.path.realpath(folder) != str(folder):
                for path in reversed(made):
                    path.rmdir()
                return _refusal(403, f"{channel}/{subdir} is reached through a symlink: it takes no uploads")
            if size and _free_space(folder) < size:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder))
            staged = staging_path(root / channel, subdir, fn)
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if staged is not None:
                discard_staged(staged)
            for path in reversed(made):
                with contextlib.suppress(OSError):
                    path.rmdir()
            return _disk_refusal(exc, f"{channel}/{subdir}/{fn}")
        return Upload(root / channel, subdir, fn, staged, fd, force, made, self.options.max_size)

    # ---------------------------------------------------------------- the body is in

    def finish(self, upload: Upload) -> Future:
        """Publish a complete upload in a thread; the future's result is the Response."""
        upload.close()
        return self.executor.submit(self._publish, upload)

    def _publish(self, upload: Upload) -> Response:
        try:
            done = publish_package(
                upload.channel,
                upload.subdir,
                upload.fn,
                upload.staged,
                force=upload.force,
                wait=self.options.timeout,
            )
        except PublishError as exc:
            upload.unmake()
            status = {CONFLICT: 409, BUSY: 503}.get(exc.reason, 422)
            return _refusal(status, str(exc))
        except DiskError as exc:
            upload.unmake()
            print(f"cas-server: upload {upload.where}: {exc}", file=sys.stderr)
            full = getattr(exc.__cause__, "errno", None) in _NO_SPACE
            return _refusal(507 if full else 500, f"{upload.where}: the server could not store it")
        except Exception as exc:  # one upload fails, the worker serves on
            upload.unmake()
            print(f"cas-server: upload {upload.where}: {describe(exc)}", file=sys.stderr)
            return _refusal(500, f"{upload.where}: the server could not publish it")
        discard_staged(upload.staged)
        history = str(done.history.relative_to(upload.channel)) if done.history else None
        print(
            f"cas-server: upload {upload.where}: {done.outcome} ({done.size:,} bytes); "
            f"{upload.subdir} indexed, {done.packages} package{'s' if done.packages != 1 else ''}",
            file=sys.stderr,
        )
        body = {
            "status": done.outcome,
            "channel": upload.channel.name,
            "subdir": done.subdir,
            "fn": done.fn,
            "size": done.size,
            "sha256": done.sha256,
            "packages": done.packages,
            "history": history,
        }
        data = json.dumps(body, indent=1).encode() + b"\n"
        return Response(
            201 if done.outcome == "created" else 200,
            ["Content-Type: application/json", f"Content-Length: {len(data)}", "Cache-Control: no-store"],
            data,
        )


def _force(target: bytes) -> bool | None:
    """The `force` query flag: False when absent, None when the query is not understood."""
    _, _, query = target.partition(b"?")
    query = query.partition(b"#")[0]
    if not query:
        return False
    try:
        pairs = parse_qsl(query.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        return None
    force = False
    for name, value in pairs:
        if name != "force" or value.lower() not in (*_TRUE, *_FALSE, ""):
            return None
        force = value.lower() in (*_TRUE, "")
    return force


def _free_space(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def _refusal(status: int, message: str) -> Response:
    """An answer with a one-line reason (what cas-upload shows, and curl prints). The access log
    shows the request line itself (its token hidden)."""
    resp = error(status, text=_REASONS.get(status, "Error"))
    if status != 404:
        body = f"{status} {_REASONS.get(status, 'Error')}: {message}\n".encode()
        resp.body = body
        resp.headers = ["Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(body)}"]
    if status == 503:
        resp.headers.append("Retry-After: 5")
    return resp


def _disk_refusal(exc: OSError, where: str) -> Response:
    if exc.errno in _NO_SPACE:
        return _refusal(507, f"{where}: not enough free space on the server")
    denied = exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
    hint = " (uploads need the mirror writable by cas-server)" if denied else ""
    print(f"cas-server: upload {where}: {exc.filename or ''}: {exc.strerror or exc}{hint}", file=sys.stderr)
    return _refusal(500, f"{where}: the server cannot write into the channel")


_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    411: "Length Required",
    413: "Content Too Large",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    503: "Service Unavailable",
    507: "Insufficient Storage",
}
