"""Gzipped copies of JSON files for cas-server, made once per file version in a thread."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Executor, Future
from pathlib import Path

GZIP_LEVEL = 6  # done once per file version; 9 costs twice the time for ~1% less


class GzipCache:
    """Gzipped copies of JSON files, made once per file version and shared by all workers.

    A copy is named by the file's path hash and (inode, size, mtime): a rewritten file gets a
    new name, so a copy can never be served for a version it was not made from. The first
    requests for a new version get the plain file while a thread compresses it; a file lock
    keeps two workers from compressing the same version at once.
    """

    def __init__(self, directory: Path, executor: Executor, on_error: Callable[[str], None]):
        self.dir = str(directory)
        self.executor = executor
        self.on_error = on_error
        self.pending: dict[str, float] = {}  # path -> not before (monotonic)
        self._prefixes: dict[str, str] = {}

    def _prefix(self, rel: str) -> str:
        prefix = self._prefixes.get(rel)
        if prefix is None:
            if len(self._prefixes) > 10000:
                self._prefixes.clear()
            prefix = hashlib.sha256(rel.encode()).hexdigest()[:32]
            self._prefixes[rel] = prefix
        return prefix

    def open(self, rel: str, fd: int, st: os.stat_result) -> tuple[int, int] | None:
        """(fd, size) of the gzipped copy of this version, or None (and compress it soon)."""
        prefix = self._prefix(rel)
        name = f"{prefix}-{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}.gz"
        path = f"{self.dir}/{name}"
        try:
            gfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if path not in self.pending or self.pending[path] < time.monotonic():
                self.pending[path] = float("inf")
                source = os.dup(fd)  # compress exactly the version that was opened
                fut = self.executor.submit(self._compress, source, prefix, name)
                fut.add_done_callback(self._done(path))
            return None
        except OSError:
            return None
        return gfd, os.fstat(gfd).st_size

    def _done(self, path: str) -> Callable[[Future], None]:
        def done(fut: Future) -> None:
            # dict ops are atomic under the GIL; when another worker held the lock, ask
            # again in a second rather than on every request meanwhile
            exc = fut.exception()
            if exc is None and fut.result() == "busy":
                self.pending[path] = time.monotonic() + 1.0
            else:
                self.pending.pop(path, None)
            if exc is not None:
                self.on_error(f"gzip cache: {exc}")

        return done

    def _compress(self, source: int, prefix: str, name: str) -> str:
        try:
            lock = os.open(f"{self.dir}/{prefix}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return "busy"  # another worker is on it
                target = f"{self.dir}/{name}"
                if os.path.exists(target):
                    return "done"
                comp = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
                fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".", suffix=".part")
                try:
                    with os.fdopen(fd, "wb") as out:
                        offset = 0
                        while chunk := os.pread(source, 1 << 20, offset):
                            offset += len(chunk)
                            out.write(comp.compress(chunk))
                        out.write(comp.flush())
                    os.replace(tmp, target)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                    raise
                for old in os.listdir(self.dir):  # older versions of the same file
                    if old.startswith(prefix + "-") and old != name:
                        with contextlib.suppress(OSError):
                            os.unlink(f"{self.dir}/{old}")
                return "done"
            finally:
                os.close(lock)
        finally:
            os.close(source)
