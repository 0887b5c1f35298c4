"""The record of verified files: name -> (size, stamp, sha256, md5) of what the sync checked.

A re-sync trusts a file whose size and stamp are those recorded when it was last hashed, so
nothing is read again unless it changed. The stamp is a file's mtime (nanoseconds), or a bucket
object's ETag. One text file per subdir under `<mirror_dir>/.cas/verified/<channel>/<subdir>.tsv`,
a line per file: `fn<TAB>size<TAB>stamp<TAB>sha256<TAB>md5` (md5 empty unless the record had no
sha256), or `fn<TAB>-` for a file forgotten. A line is appended (line-buffered) as each file is
verified, so a sync killed at any moment has recorded what it verified; `compact()` rewrites
the file from memory atomically. A line cut short by a kill does not parse and is ignored.

A bucket mirror's record (BucketStore) is that same file in the bucket, rewritten whole by
`compact()` when a subdir is settled, with the lines appended meanwhile kept in the local work
folder: a sync killed before the rewrite leaves them there, and the next sync on this machine
reads the bucket's file and then those lines.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

FLUSH_EVERY = 0.1  # seconds an appended line may wait in the buffer


@dataclass(frozen=True)
class Verified:
    size: int
    stamp: int | str  # a file's mtime in nanoseconds, or a bucket object's ETag
    sha256: str
    md5: str = ""

    def matches_stat(self, st: os.stat_result) -> bool:
        return st.st_size == self.size and st.st_mtime_ns == self.stamp

    def matches(self, size: int, stamp: int | str) -> bool:
        return size == self.size and stamp == self.stamp

    def matches_record(self, size: int, sha256: str | None, md5: str | None) -> bool:
        """The digests agree with a repodata record (sha256 when it has one, else md5)."""
        if size != self.size:
            return False
        if sha256:
            return sha256.lower() == self.sha256
        if md5:
            return bool(self.md5) and md5.lower() == self.md5
        return False


class VerifiedStore:
    """The verified files of one mirrored subdir; thread-safe for `add` and `forget`."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, Verified] = {}
        self._lock = threading.Lock()
        self._fh = None
        self._flushed_at = 0.0
        self._load()

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        entries = self.entries
        for line in data.decode("utf-8", "replace").split("\n"):
            parts = line.split("\t")
            if len(parts) == 2 and parts[1] == "-":
                entries.pop(parts[0], None)
            elif len(parts) == 5 and len(parts[3]) == 64:
                stamp = parts[2]
                try:
                    size = int(parts[1])
                    entries[parts[0]] = Verified(size, int(stamp) if stamp.isdigit() else stamp, *parts[3:])
                except ValueError:
                    continue

    def get(self, fn: str) -> Verified | None:
        return self.entries.get(fn)

    def _append(self, line: str) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self._fh.write(line)
        # flushed a tenth of a second at a time, not a line a file: a line lost to a crash
        # only makes the next sync hash that file again
        now = time.monotonic()
        if now - self._flushed_at >= FLUSH_EVERY:
            self._fh.flush()
            self._flushed_at = now

    def add(self, fn: str, entry: Verified) -> None:
        with self._lock:
            self.entries[fn] = entry
            self._append(f"{fn}\t{entry.size}\t{entry.stamp}\t{entry.sha256}\t{entry.md5}\n")

    def forget(self, fn: str) -> None:
        with self._lock:
            if self.entries.pop(fn, None) is not None:
                self._append(f"{fn}\t-\n")

    def flush(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.flush()

    def compact(self, keep: set[str] | None = None) -> None:
        """Rewrite the file from memory (only the names in `keep`, when given), atomically."""
        with self._lock:
            if keep is not None:
                self.entries = {fn: e for fn, e in self.entries.items() if fn in keep}
            lines = [f"{fn}\t{e.size}\t{e.stamp}\t{e.sha256}\t{e.md5}\n" for fn, e in self.entries.items()]
            if self._fh is not None:
                self._fh.close()
                self._fh = None
            self._rewrite("".join(lines).encode("utf-8"))

    def _rewrite(self, data: bytes) -> None:
        from casconsole.fsutil import atomic_write_bytes  # here: download workers import this module

        atomic_write_bytes(self.path, data)

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                with contextlib.suppress(OSError):
                    self._fh.close()
                self._fh = None


class BucketStore(VerifiedStore):
    """The verified files of a subdir of a bucket mirror: the record in the bucket (`key`,
    through `storage`), with the lines appended since its last rewrite in the local `path`."""

    def __init__(self, path: Path, storage, key: str):
        self.storage = storage
        self.key = key
        super().__init__(path)

    def _load(self) -> None:
        from casconsole.storage import ObjectNotFound

        try:
            data, _ = self.storage.get(self.key)
        except ObjectNotFound:
            data = b""
        self._parse(data)
        super()._load()  # what a sync killed before its rewrite appended here

    def _rewrite(self, data: bytes) -> None:
        self.storage.put(self.key, data)  # the sync holds the mirror's lock: nobody else writes it
        super()._rewrite(b"")  # all of it is in the bucket now
