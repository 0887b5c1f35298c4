"""A download worker's side of a bucket mirror: a verified file goes up to the bucket, and a
file already in the bucket is hashed from there.

The download itself is the folder case's (fetch.py): streamed into a file of the local work
folder (unnamed until it needs a `.part` name), hashed while written. Only once its size and
digest match the record is it uploaded (in parts when large), read back through
`/proc/self/fd` so an unnamed file needs no name; then the local copy goes. An upload that
fails leaves the file as `.<fn>.part`, complete: the retry, or the next sync, verifies and
uploads it without fetching it again. Nothing reaches the bucket's final name unverified.
"""

from __future__ import annotations

import errno
import os
import threading

from casconsole.errors import Cancelled, StorageError
from casconsole.storage import BucketError, ObjectNotFound
from casconsole.storage.s3 import S3Config, S3Storage
from casconsole.sync.store import Verified


class UploadFailed(Exception):
    """The bucket refused the upload; `errno` is EACCES when it would refuse every file (denied,
    bad credentials): the sync then stops, as for a disk that refuses."""

    def __init__(self, reason: str, error: int = 0):
        super().__init__(reason)
        self.errno = error


class Uploader:
    """One per worker process: an S3Storage shared by its threads (the client is thread-safe)."""

    def __init__(self, config: S3Config):
        self.storage = S3Storage(config)

    def upload(self, key: str, fd: int) -> str:
        """Upload the file open at `fd` under `key`; its ETag. UploadFailed on a refusal."""
        try:
            return self.storage.put_file(key, f"/proc/self/fd/{fd}")
        except StorageError as exc:
            refused = isinstance(exc, BucketError) and ("denied" in str(exc) or "credentials" in str(exc))
            raise UploadFailed(f"upload: {exc}", errno.EACCES if refused else 0) from None

    def check(self, key: str, size: int, hashes, cancel: threading.Event) -> tuple[str, int, str]:
        """Hash the object at `key` into `hashes`: (its ETag, bytes read, why it cannot be read
        or "")."""
        try:
            info, chunks = self.storage.open_read(key)
            total = 0
            for chunk in chunks:
                if cancel.is_set():
                    raise Cancelled
                hashes.update(chunk)
                total += len(chunk)
        except ObjectNotFound:
            return "", 0, "not in the bucket"
        except StorageError as exc:
            return "", 0, f"unreadable ({exc})"
        return info.etag, total, ""


def verified(hashes, size: int, etag: str) -> Verified:
    return Verified(size, etag, hashes.sha256.hexdigest(), hashes.md5.hexdigest() if hashes.md5 else "")


def drop_local(path: str) -> None:
    """The local copy of a file now in the bucket."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
