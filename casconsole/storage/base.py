"""The storage interface: where a mirror's files live, a folder or an S3-compatible bucket.

Keys are `/`-separated names below the storage's root (`pkgs/linux-64/repodata.json`), never
starting with `/` and holding no `.` or `..` segment. Every implementation gives the same
answers to the same calls (tests/test_storage.py runs one contract against both):

- `get(key)` the whole object and its ObjectInfo; `read(key, start, end)` its bytes in chunks;
- `head(key)` its ObjectInfo, or None; `list(prefix)` every object below a prefix (recursive),
  `list_dir(prefix)` the folders and objects just below it;
- `put(key, data)` replaces the object at once (a reader sees the old bytes or the new ones);
  with `if_match=etag` only if the object is still that version, with `if_none_match=True` only
  if there is none: otherwise WriteConflict, and nothing is written. This is what keeps two
  writers of one index from overwriting each other (docs/scale-out.md);
- `put_file(key, path)` a local file (in parts, for a large one); `delete(key)`;
- `sign(key, seconds)` a presigned GET URL (buckets only).

An ETag names one version of an object: a writer reads it with the object and hands it back
to `put(if_match=...)`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

from casconsole.errors import EXIT_STORAGE, StorageError


class BucketError(StorageError):
    """The storage refused or could not be reached: denied, bad credentials, no such bucket,
    unreachable endpoint. Stops a sync as a refusing disk does (exit 4)."""

    exit_status = EXIT_STORAGE


class ObjectNotFound(StorageError):
    """No object under that key."""


class WriteConflict(StorageError):
    """A conditional put lost: another writer changed (or created) the object since its ETag
    was read. Nothing was written; the caller reads the fresh state and tries again."""


class BadKey(StorageError):
    """A key that names nothing below the root (empty, absolute, `..`)."""


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object: its key (below the root), size, ETag (quoted, as HTTP has it) and
    modification time (Unix seconds)."""

    key: str
    size: int
    etag: str
    modified: float

    @property
    def name(self) -> str:
        return self.key.rpartition("/")[2]


def check_key(key: str) -> str:
    """`key` when it names an object below the root; BadKey otherwise."""
    if not key or key.startswith("/") or "\\" in key or "\0" in key:
        raise BadKey(f"{key!r}: not a key below the storage root")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise BadKey(f"{key!r}: not a key below the storage root")
    return key


def join(*parts: str) -> str:
    """Key parts joined with `/`, empty parts left out."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


class Storage(ABC):
    """A mirror's files: a folder (FolderStorage) or a bucket (S3Storage)."""

    url: str  # the root, as messages name it: a folder path, or s3://bucket/prefix

    def where(self, key: str = "") -> str:
        """The object's location as messages name it."""
        return f"{self.url.rstrip('/')}/{key}" if key else self.url

    @abstractmethod
    def get(self, key: str) -> tuple[bytes, ObjectInfo]:
        """The object's bytes and info; ObjectNotFound when there is none."""

    @abstractmethod
    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The object's bytes from `start` to `end` (exclusive; None: to its end), in chunks.
        ObjectNotFound (raised on the first next()) when there is none."""

    def open_read(self, key: str, start: int = 0, end: int | None = None, if_match: str | None = None):
        """(ObjectInfo, chunk iterator) of one version of the object: a bucket answers both
        with one GET; `if_match` reads only that version (else WriteConflict)."""
        info = self.head(key)
        if info is None:
            raise ObjectNotFound(f"{self.where(key)}: no such object")
        if if_match is not None and info.etag != if_match:
            raise WriteConflict(f"{self.where(key)}: changed since it was read")
        return info, self.read(key, start, end)

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """The object's info, or None when there is none."""

    @abstractmethod
    def put(self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False) -> str:
        """Write `data` under `key` at once; returns the new ETag. WriteConflict when a
        condition does not hold (nothing written)."""

    @abstractmethod
    def put_file(self, key: str, path: str) -> str:
        """Write the local file at `path` under `key`; returns the new ETag."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with the folder `prefix` (recursive); all of them for
        an empty prefix. Order is not promised."""

    @abstractmethod
    def list_dir(self, prefix: str = "") -> tuple[list[str], list[ObjectInfo]]:
        """(names of the folders, objects) just below the folder `prefix`."""

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Remove the object; whether there was one (a bucket cannot always tell: True)."""

    def sign(self, key: str, seconds: int) -> str:
        """A URL that GETs the object without credentials for `seconds`."""
        raise StorageError(f"{self.url}: a folder has no presigned URLs")

    def close(self) -> None:  # noqa: B027 (most implementations hold nothing)
        """Let go of what the storage holds (connections, descriptors)."""
