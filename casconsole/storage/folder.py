"""The storage interface on a local folder: what the mirror has always been.

Writes are atomic as everywhere else (a temporary file beside the target, fsync, rename). An
ETag is the file's inode, mtime and size: an atomic replacement makes a new inode, so any write
changes it. Conditional puts compare and rename under an `flock` of the target's folder, which
every put of this module takes, so two writers of one key are ordered; the folder's ETag is
what the reader saw, as in a bucket.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from casconsole.errors import DiskError
from casconsole.fsutil import atomic_write_bytes
from casconsole.storage.base import ObjectInfo, ObjectNotFound, Storage, WriteConflict, check_key, join

CHUNK = 1 << 20


def folder_etag(st: os.stat_result) -> str:
    return f'"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"'


def _info(key: str, st: os.stat_result) -> ObjectInfo:
    return ObjectInfo(key, st.st_size, folder_etag(st), st.st_mtime)


class FolderStorage(Storage):
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.url = str(self.root)

    def path(self, key: str) -> Path:
        """The file of `key` (the folder's own callers may read it directly)."""
        return self.root / check_key(key)

    def get(self, key: str) -> tuple[bytes, ObjectInfo]:
        path = self.path(key)
        try:
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise ObjectNotFound(f"{path}: not a file")
                return fh.read(), _info(key, st)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(f"{path}: no such file") from None
        except OSError as exc:
            raise DiskError.of(exc) from None

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        path = self.path(key)
        try:
            fh = open(path, "rb", buffering=0)  # noqa: SIM115 (closed below)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(f"{path}: no such file") from None
        with fh:
            fh.seek(start)
            left = None if end is None else max(0, end - start)
            while left is None or left > 0:
                chunk = fh.read(CHUNK if left is None else min(CHUNK, left))
                if not chunk:
                    return
                if left is not None:
                    left -= len(chunk)
                yield chunk

    def head(self, key: str) -> ObjectInfo | None:
        try:
            st = os.stat(self.path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return _info(key, st) if stat.S_ISREG(st.st_mode) else None

    @contextlib.contextmanager
    def _locked(self, folder: Path) -> Iterator[None]:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def put(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        path = self.path(key)
        try:
            with self._locked(path.parent):
                self._check(key, if_match, if_none_match)
                atomic_write_bytes(path, data)
                return folder_etag(os.stat(path))
        except OSError as exc:
            raise DiskError.of(exc) from None

    def _check(self, key: str, if_match: str | None, if_none_match: bool) -> None:
        if if_match is None and not if_none_match:
            return
        current = self.head(key)
        if if_none_match and current is not None:
            raise WriteConflict(f"{self.where(key)}: written by another writer since it was read (it exists)")
        if if_match is not None and (current is None or current.etag != if_match):
            raise WriteConflict(f"{self.where(key)}: changed by another writer since it was read")

    def put_file(self, key: str, path: str) -> str:
        target = self.path(key)
        try:
            with self._locked(target.parent):
                fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
                os.close(fd)
                try:
                    shutil.copyfile(path, tmp)
                    os.chmod(tmp, 0o644)
                    os.replace(tmp, target)
                except BaseException:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)
                    raise
                return folder_etag(os.stat(target))
        except OSError as exc:
            raise DiskError.of(exc) from None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = self.root / check_key(prefix) if prefix else self.root
        for folder, _, files in os.walk(base):
            rel = os.path.relpath(folder, self.root)
            rel = "" if rel == "." else rel
            for name in files:
                try:
                    st = os.stat(os.path.join(folder, name), follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    yield _info(join(rel, name), st)

    def list_dir(self, prefix: str = "") -> tuple[list[str], list[ObjectInfo]]:
        base = self.root / check_key(prefix) if prefix else self.root
        folders: list[str] = []
        objects: list[ObjectInfo] = []
        try:
            entries = list(os.scandir(base))
        except (FileNotFoundError, NotADirectoryError):
            return folders, objects
        except OSError as exc:
            raise DiskError.of(exc) from None
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.name)
                elif entry.is_file(follow_symlinks=False):
                    objects.append(_info(join(prefix, entry.name), entry.stat(follow_symlinks=False)))
            except FileNotFoundError:
                continue
        return sorted(folders), sorted(objects, key=lambda o: o.key)

    def delete(self, key: str) -> bool:
        try:
            os.unlink(self.path(key))
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise DiskError.of(exc) from None
        return True
