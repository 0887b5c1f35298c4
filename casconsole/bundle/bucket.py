"""A bundle's source in a bucket: an air-gap export (or a manifest) of a mirror kept in
S3-compatible storage (mirror_dir: s3://...). The connected side syncs into the bucket; the
bundle carries the same files as from a folder, read from the bucket, and the offline side
imports it into a folder as ever.

- `list_bucket`: every channel, subdir, package and index object, from one listing; a package's
  stamp is its ETag, its record the sync's verified-file record in the bucket;
- `hash_object`: an object hashed as it is read;
- `read_object`: an object's bytes in chunks, for the volumes;
- `mirror_lock`: the mirror's lock object (storage/lease.py), as a sync takes it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

from casconsole.bundle.digest import digest_chunks
from casconsole.bundle.paths import CHANNEL_INDEX_NAMES
from casconsole.layout import KNOWN_SUBDIRS, STATE_DIR, VERIFIED
from casconsole.storage import ObjectNotFound, Storage
from casconsole.sync.lock import SyncLocked
from casconsole.sync.store import BucketStore


def list_bucket(storage: Storage, stats, sink, add, journal: Path) -> tuple[list, set[str]]:
    """(found files, channel names) of the bucket mirror; `add` is state.py's `_add`; the
    stores keep their local lines in `journal` (a temporary folder: a bundle has none to keep)."""
    found: list = []
    channels: dict[str, dict[str, list]] = {}
    roots: dict[str, list] = {}
    for info in storage.list(""):
        parts = info.key.split("/")
        if parts[0].startswith("."):
            continue  # the mirror's own state: lock, records, tokens
        if len(parts) == 3 and parts[1] in KNOWN_SUBDIRS and not parts[2].startswith("."):
            channels.setdefault(parts[0], {}).setdefault(parts[1], []).append(info)
        elif len(parts) == 2 and parts[1] in CHANNEL_INDEX_NAMES:
            roots.setdefault(parts[0], []).append(info)
    for channel in sorted(channels):
        for subdir, objects in sorted(channels[channel].items()):
            key = f"{STATE_DIR}/{VERIFIED}/{channel}/{subdir}.tsv"
            store = BucketStore(journal / f"{channel}.{subdir}.tsv", storage, key)
            for info in sorted(objects, key=lambda o: o.key):
                add(found, info.key, Path(info.key), (info.size, info.etag), store, stats, sink)
        for info in roots.get(channel, []):
            add(found, info.key, Path(info.key), (info.size, info.etag), None, stats, sink)
    return found, set(channels)


def hash_object(storage: Storage, f, reported, cancel: threading.Event | None):
    """(bytes read, sha256, the ETag of the version read, its size): None when it is gone."""
    try:
        info, chunks = storage.open_read(str(f.full))
    except ObjectNotFound:
        return None
    size, sha256 = digest_chunks(chunks, reported, cancel)
    return size, sha256, info.etag, info.size


@contextlib.contextmanager
def mirror_lock(storage: Storage) -> Iterator[None]:
    """The bucket mirror's lock, held as a sync holds it; SyncLocked when one runs."""
    from casconsole.storage.lease import BucketLock, LeaseHeld, describe

    try:
        lock = BucketLock(storage).acquire()
    except LeaseHeld as exc:
        pid = exc.holder.get("pid") if isinstance(exc.holder.get("pid"), int) else None
        raise SyncLocked(pid, exc.where, who=describe(exc.holder)) from None
    try:
        yield
    finally:
        lock.release()
