"""Getting one package file into place: streamed, hashed while written, verified, linked.

A download is written to an unnamed file in its folder (sync/partfile.py), is hashed as it is
written, and is linked to `<fn>` only when its size and sha256 (md5 where the record has no
sha256) match the record. One still running after a quarter second is given its name
`.<fn>.part` first, so that an interrupted sync leaves it to resume. Files of DIRECT_MIN bytes
and more are written with O_DIRECT, around the page cache (why: sync/partfile.py).

A `.part` left by an interrupted sync is resumed with a Range request where the server allows
it (its bytes are hashed first); a resumed file that does not verify is fetched again from the
start. Timeouts, connection errors, truncated bodies, wrong bytes and HTTP 5xx / 408
/ 429 are retried with exponential backoff; other HTTP errors fail the file at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from casconsole.errors import Cancelled
from casconsole.events import Event
from casconsole.sync import upload
from casconsole.sync.events import FileProgress, FileRetry, FileStarted
from casconsole.sync.partfile import BLOCK, Part, Writer, probe_unnamed
from casconsole.sync.store import Verified
from casconsole.upstream.http import Connections, Response, TooManyRedirects, TransferError
from casconsole.upstream.policy import NetworkPolicy

CHUNK = 1 << 20  # bytes read and hashed at a time; the download buffer's size too
DIRECT_MIN = 1 << 20  # files from this size on are written with O_DIRECT (sync/partfile.py)
WINDOW_MIN = 32 << 10  # bytes: the smallest read of a download; it grows up to CHUNK
WINDOW_WAIT = 0.02  # seconds: a read that waits longer halves the next one's window
PROGRESS_EVERY = 0.25  # seconds between FileProgress events of one file


class _Retry(Exception):
    """This attempt failed in a way another attempt may not; `fresh` drops the partial file."""

    def __init__(self, reason: str, fresh: bool = False):
        super().__init__(reason)
        self.fresh = fresh


class _Fail(Exception):
    """This file cannot be had (HTTP 404, a local error): no retry."""


@dataclass
class FileJob:
    """One file of the plan: where it comes from, where it goes, what it must hash to."""

    subdir: str
    fn: str
    url: str
    folder: str  # where it goes (a str, not a Path: thousands are made and sent to workers)
    size: int
    sha256: str | None
    md5: str | None
    check_first: bool = False  # a file is at `dest` already: hash it, download only if bad
    key: str | None = None  # a bucket mirror's: the object's key, where the verified file goes

    @property
    def dest(self) -> str:
        return f"{self.folder}/{self.fn}"

    def wire(self) -> tuple:
        """The fields as a plain tuple: what the parent sends a worker (cheaper to pickle)."""
        return (self.subdir, self.fn, self.url, self.folder, self.size, self.sha256, self.md5,
                self.check_first, self.key)  # fmt: skip

    @classmethod
    def from_wire(cls, wire: tuple) -> FileJob:
        return cls(*wire)

    @property
    def part(self) -> str:
        return f"{self.folder}/.{self.fn}.part"


@dataclass
class Outcome:
    job: FileJob
    ok: bool
    action: str = "downloaded"  # downloaded | checked | repaired
    reason: str = ""
    attempts: int = 0
    fetched: int = 0
    resumed: bool = False
    corrupt: str = ""  # why the file found at dest did not verify
    errno: int = 0  # the OSError's errno when the disk refused the file (ENOSPC, EROFS, ...)
    verified: Verified | None = None

    def wire(self) -> tuple:
        """Everything but the job, as plain values: what a worker sends its parent (pickling
        two dataclasses a file cost the parent more than the rest of its bookkeeping)."""
        v = self.verified
        verified = (v.size, v.stamp, v.sha256, v.md5) if v is not None else None
        return (self.ok, self.action, self.reason, self.attempts, self.fetched, self.resumed,
                self.corrupt, self.errno, verified)  # fmt: skip

    @classmethod
    def from_wire(cls, job: FileJob, wire: tuple) -> Outcome:
        *fields, verified = wire
        return cls(job, *fields, verified=Verified(*verified) if verified is not None else None)


class _Hashes:
    """sha256 always (it is what the verified-file record keeps), md5 only when needed."""

    def __init__(self, want_md5: bool):
        self.sha256 = hashlib.sha256()
        self.md5 = hashlib.md5() if want_md5 else None

    def update(self, data: bytes | memoryview) -> None:
        self.sha256.update(data)
        if self.md5 is not None:
            self.md5.update(data)

    def mismatch(self, job: FileJob) -> str | None:
        """Why the digests do not match the record, or None."""
        sha = self.sha256.hexdigest()
        if job.sha256:
            return None if sha == job.sha256.lower() else f"sha256 mismatch (got {sha[:12]}…)"
        md5 = self.md5.hexdigest() if self.md5 is not None else ""
        return None if md5 == (job.md5 or "").lower() else f"md5 mismatch (got {md5[:12]}…)"

    def verified(self, st: os.stat_result) -> Verified:
        return Verified(
            st.st_size, st.st_mtime_ns, self.sha256.hexdigest(), self.md5.hexdigest() if self.md5 else ""
        )


def hash_file(path: str | Path, job: FileJob, cancel: threading.Event) -> tuple[_Hashes, int]:
    """Hash the file at `path` (never following a symlink); returns the hashes and bytes read."""
    hashes = _Hashes(not job.sha256)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    total = 0
    try:
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while True:
            if cancel.is_set():
                raise Cancelled
            n = os.readv(fd, [buf])
            if not n:
                break
            hashes.update(view[:n])
            total += n
    finally:
        os.close(fd)
    return hashes, total


class Fetcher:
    """Downloads FileJobs; shared by a worker's threads, each with its own kept-alive
    connections and buffer. `cancel()` stops every transfer at once.
    """

    def __init__(
        self, policy: NetworkPolicy, emit: Callable[[Event], None], cancel: threading.Event, uploader=None
    ):
        self.policy = policy
        self.uploader = uploader  # sync.upload.Uploader, for a bucket mirror's jobs
        self.timeout = policy.timeout
        self.retries = policy.retries
        self.tls = policy.tls()  # one for all the threads' connections
        self.emit = emit
        self.cancel_event = cancel
        self._active: dict[int, Response] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._folders: dict[str, int | None] = {}

    def _open(self, job: FileJob) -> Part:
        return Part.open(job, self._folder(job.folder))

    def _folder(self, folder: str) -> int | None:
        """A descriptor of `folder` to make unnamed files in and link them from, or None where
        that does not work (no O_TMPFILE, no /proc): checked once a folder, with a probe file."""
        with self._lock:
            if folder not in self._folders:
                self._folders[folder] = probe_unnamed(folder)
            return self._folders[folder]

    def close(self) -> None:
        """Close the folder descriptors (the fetcher is done)."""
        with self._lock:
            for fd in self._folders.values():
                if fd is not None:
                    os.close(fd)
            self._folders.clear()

    def _connections(self) -> Connections:
        conns = getattr(self._local, "connections", None)
        if conns is None:
            conns = self._local.connections = self.policy.connections(self.tls)
        return conns

    def _buffer(self) -> memoryview:
        """This thread's download buffer: page-aligned (an anonymous mapping), as O_DIRECT wants."""
        view = getattr(self._local, "buffer", None)
        if view is None:
            view = self._local.buffer = memoryview(mmap.mmap(-1, CHUNK + BLOCK))
        return view

    def close_thread(self) -> None:
        """Close the calling thread's connections (it fetches no more)."""
        conns = getattr(self._local, "connections", None)
        if conns is not None:
            conns.close()

    # ---- cancelling

    def cancel(self) -> None:
        """Stop: set the flag and shut down the sockets of transfers blocked in a read."""
        self.cancel_event.set()
        with self._lock:
            responses = list(self._active.values())
        for response in responses:
            sock = response.socket
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _sleep(self, seconds: float) -> None:
        if self.cancel_event.wait(seconds):
            raise Cancelled

    # ---- one file

    def run(self, job: FileJob) -> Outcome:
        """Get `job` into place; never raises but Cancelled.

        An error nobody foresaw (a bug, a record upstream made to break us) fails this file
        only: the sync goes on and writes its repodata without it.
        """
        try:
            return self._run(job)
        except Cancelled:
            raise
        except Exception as exc:
            return Outcome(job, False, reason=f"unexpected error: {type(exc).__name__}: {exc}"[:300])

    def _run(self, job: FileJob) -> Outcome:
        corrupt = ""
        if job.check_first:
            outcome = self._check(job)
            if outcome.ok or outcome.reason:
                return outcome
            corrupt = outcome.corrupt
        outcome = self._download(job)
        if corrupt:
            outcome.corrupt = corrupt
            if outcome.ok:
                outcome.action = "repaired"
        return outcome

    def _check(self, job: FileJob) -> Outcome:
        """Hash a file already at its final name: ok, or `corrupt` says why it must be fetched."""
        if job.key is not None:  # in the bucket: hashed from there
            hashes = _Hashes(not job.sha256)
            etag, total, why = self.uploader.check(job.key, job.size, hashes, self.cancel_event)
            why = why or (f"size {total}, expected {job.size}" if total != job.size else hashes.mismatch(job))
            if why:
                return Outcome(job, False, corrupt=why)
            return Outcome(job, True, action="checked", verified=upload.verified(hashes, total, etag))
        try:
            st = os.stat(job.dest, follow_symlinks=False)
            hashes, total = hash_file(job.dest, job, self.cancel_event)
        except OSError as exc:
            return Outcome(job, False, corrupt=f"unreadable ({exc.strerror})")
        if total != job.size or st.st_size != total:
            return Outcome(job, False, corrupt=f"size {total}, expected {job.size}")
        why = hashes.mismatch(job)
        if why:
            return Outcome(job, False, corrupt=why)
        return Outcome(job, True, action="checked", verified=hashes.verified(st))

    def _download(self, job: FileJob) -> Outcome:
        attempts = 0
        fetched = 0
        resumed = False
        reason = ""
        fresh = False
        while True:
            attempts += 1
            if self.cancel_event.is_set():
                raise Cancelled
            start_fresh, fresh = fresh, False
            try:
                result = self._attempt(job, start_fresh)
            except _Retry as exc:
                reason, fresh = str(exc), exc.fresh
                fetched += getattr(exc, "fetched", 0)
            except _Fail as exc:
                return Outcome(job, False, reason=str(exc), attempts=attempts, fetched=fetched)
            except TimeoutError:
                reason = f"timed out (no data for {self.timeout:g} s)"
            except TransferError as exc:
                if self.cancel_event.is_set():
                    raise Cancelled from None
                reason = str(exc)
            except OSError as exc:
                reason = f"cannot write: {exc.strerror or exc}"
                return Outcome(job, False, reason=reason, attempts=attempts, errno=exc.errno or 0)
            except upload.UploadFailed as exc:  # the bucket's client retried it already
                reason, error = str(exc), exc.errno
                return Outcome(job, False, reason=reason, attempts=attempts, fetched=fetched, errno=error)
            else:
                verified, got, was_resumed = result
                return Outcome(
                    job,
                    True,
                    attempts=attempts,
                    fetched=fetched + got,
                    resumed=resumed or was_resumed,
                    verified=verified,
                )
            if self.cancel_event.is_set():
                raise Cancelled
            if attempts > self.retries:
                return Outcome(job, False, reason=reason, attempts=attempts, fetched=fetched)
            delay = self.policy.backoff(attempts)
            self.emit(FileRetry(job.subdir, job.fn, attempts, reason, round(delay, 2)))
            self._sleep(delay)

    def _attempt(self, job: FileJob, fresh: bool) -> tuple[Verified, int, bool]:
        """One GET; returns (verified entry, bytes received, resumed) or raises."""
        part = self._open(job)
        fd = part.fd
        received = 0
        try:
            if fresh:  # what is there did not verify: start over, even if this attempt fails early
                os.ftruncate(fd, 0)
            on_disk = offset = os.fstat(fd).st_size if part.named else 0  # unnamed: new, empty
            if offset > job.size:
                offset = 0
            hashes = _Hashes(not job.sha256)
            if offset:
                hashes, offset = self._hash_part(job.part, job, offset)
            if offset == job.size:  # complete already: only verifying is left
                return self._finish(job, part, hashes, 0, resumed=True)
            with self._body(job, offset) as (readinto, start):
                if start == 0:
                    hashes = _Hashes(not job.sha256)
                if on_disk != start:
                    os.ftruncate(fd, start)
                if start:
                    os.lseek(fd, start, os.SEEK_SET)
                # a transfer is announced when it resumes, or once it has run a while: the
                # many small files that come and go in milliseconds are reported done only
                announced = start > 0
                if announced:
                    self.emit(FileStarted(job.subdir, job.fn, job.size, start))
                # uploaded to a bucket, the file is read back at once: through the page cache
                direct = job.key is None and job.size - start >= DIRECT_MIN and start % BLOCK == 0
                writer = Writer(fd, direct=direct)
                buffer = self._buffer()
                filled = 0
                done = start
                # a read returns once its window is full: the window grows while reads come
                # back at once and shrinks when they wait, so a slow transfer still reports
                # progress and a fast one is read in few calls
                window = WINDOW_MIN
                last = now = time.monotonic()
                while True:
                    if self.cancel_event.is_set():
                        raise Cancelled
                    asked = now
                    try:
                        n = readinto(buffer[filled : filled + window])
                    except TransferError as exc:
                        if self.cancel_event.is_set():
                            raise Cancelled from None
                        raise _Retry(f"truncated after {done:,} of {job.size:,} bytes ({exc})") from None
                    if done + n > job.size:
                        raise _Retry(f"more bytes than the {job.size:,} of the record", fresh=True)
                    hashes.update(buffer[filled : filled + n])
                    filled += n
                    done += n
                    received += n
                    # on disk as it comes, so an interrupted file can resume; with O_DIRECT,
                    # an unaligned rest waits at the buffer's start for the next read
                    written = writer.write(buffer[:filled], final=not n)
                    if written < filled:
                        buffer[: filled - written] = buffer[written:filled]
                    filled -= written
                    if not n:
                        break
                    now = time.monotonic()
                    if now - asked < WINDOW_WAIT:
                        window = min(window * 2, CHUNK)
                    elif window > WINDOW_MIN:
                        window //= 2
                    if now - last >= PROGRESS_EVERY:
                        last = now
                        if not announced:
                            announced = True
                            part.name()  # a transfer that takes a while can be resumed
                            self.emit(FileStarted(job.subdir, job.fn, job.size, start))
                        self.emit(FileProgress(job.subdir, job.fn, done, job.size))
            if done < job.size:
                raise _Retry(f"truncated: got {done:,} of {job.size:,} bytes")
            return self._finish(job, part, hashes, received, resumed=start > 0)
        except _Retry as exc:
            exc.fetched = received  # type: ignore[attr-defined]
            if not exc.fresh:
                part.keep()
            raise
        except (TimeoutError, TransferError, Cancelled):
            part.keep()
            raise
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _body(self, job: FileJob, offset: int) -> Iterator[tuple[Callable[[memoryview], int], int]]:
        """A `readinto` for the file's bytes from `offset` (or from 0, when the source cannot
        start there) and where they start: an HTTP response, or a local file for file://."""
        if job.url.startswith("file:"):
            path = urllib.parse.unquote(urllib.parse.urlsplit(job.url).path)
            try:
                fh = open(path, "rb", buffering=0)  # noqa: SIM115 (closed below)
            except FileNotFoundError:
                raise _Fail(f"not found: {path}") from None
            except OSError as exc:  # the upstream's file, not the mirror's disk
                raise _Fail(f"cannot read {path}: {exc.strerror or exc}") from None
            with fh:
                fh.seek(offset)
                yield fh.readinto, offset
            return
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            response = self._connections().get(job.url, headers)
        except TooManyRedirects as exc:
            raise _Fail(str(exc)) from None
        key = id(response)
        with self._lock:
            self._active[key] = response
        try:
            yield response.readinto, self._check_response(response, job, offset)
        finally:
            with self._lock:
                self._active.pop(key, None)
            response.close()

    def _hash_part(self, part: str, job: FileJob, offset: int) -> tuple[_Hashes, int]:
        hashes, total = hash_file(part, job, self.cancel_event)
        return hashes, min(total, offset)

    def _check_response(self, response: Response, job: FileJob, offset: int) -> int:
        """The offset the body starts at (0 when the server sent the whole file)."""
        status = response.status
        if status == 206 and offset:
            content_range = response.header("Content-Range") or ""
            if content_range.startswith(f"bytes {offset}-"):
                return offset
            raise _Retry(f"unexpected Content-Range {content_range!r}", fresh=True)
        if status == 200:
            return 0
        if status == 416:
            raise _Retry("server refused the range of the partial file", fresh=True)
        if status >= 500 or status in (408, 429):
            raise _Retry(f"HTTP {status}")
        raise _Fail(f"HTTP {status}")

    def _finish(self, job: FileJob, part: Part, hashes: _Hashes, received: int, resumed: bool):
        fd = part.fd
        st = os.fstat(fd)
        if st.st_size != job.size:
            raise _Retry(f"size {st.st_size}, expected {job.size}", fresh=True)
        why = hashes.mismatch(job)
        if why:
            raise _Retry(why + (" after resuming" if resumed else ""), fresh=True)
        if job.key is not None:  # a bucket mirror: up it goes, then the local copy
            try:
                etag = self.uploader.upload(job.key, fd)
            except upload.UploadFailed:
                part.keep()  # complete and verified: the next attempt uploads it without fetching it
                raise
            if part.named:
                upload.drop_local(job.part)
            return upload.verified(hashes, st.st_size, etag), received, resumed
        if st.st_mode & 0o777 != 0o644:  # readable by the web server whatever the umask
            os.fchmod(fd, 0o644)
        part.place()  # keeps size and mtime: `st` is the verified file's
        return hashes.verified(st), received, resumed
