"""Where a sync puts a mirrored channel: the mirror's folder, or a bucket (mirror_dir: s3://).

The engine asks the same things of both: take the mirror's lock, open the status log, list a
subdir's package files with their (size, stamp), open its verified-file record, tell the
workers where each file goes, check the room, read and write its repodata, remove a file.

FolderTarget is the folder as it always was: files are written into place by the workers,
repodata atomically; nothing here stands between the engine and the disk.

BucketTarget keeps the files in the bucket and its own state in the local work folder
(`s3_work_dir`): downloads in progress (`staging/<channel>/<subdir>/`, where `.part` files wait
to resume), the upstream repodata cache, the status log. The lock is a lock object with a lease
(storage/lease.py). Repodata is written last, `.zst` then `.json`, each with If-Match on the
ETag read before (If-None-Match: * for a first one): a writer that changed it meanwhile is
noticed, never overwritten unseen (the sync, which holds the lock, then reads again and writes
its own: the mirrored channel is the sync's). The status log goes to the bucket too, thinned.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import msgspec

from casconsole.conda.repodata import encode_repodata, write_repodata
from casconsole.events import Event
from casconsole.layout import STATE_DIR, SYNC_LOG, VERIFIED, split_package_name, verified_path
from casconsole.settings import Settings
from casconsole.sync.events import FileDone, FileProgress, FileStarted, SubdirDone, SyncFinished, SyncStarted
from casconsole.sync.lock import SyncLock, SyncLocked
from casconsole.sync.safety import check_space, count_records, count_records_in
from casconsole.sync.status import StatusLog
from casconsole.sync.store import BucketStore, VerifiedStore

REPODATA = "repodata.json"
WRITE_TRIES = 3  # conditional repodata writes refused in a row before the sync gives up


@dataclass
class Current:
    """A subdir's repodata as it is before the sync writes it: the JSON (None: there is none),
    whether a `.zst` is beside it, and (in a bucket) the ETags the writes are conditional on."""

    data: bytes | None
    has_zst: bool
    json_etag: str | None = None
    zst_etag: str | None = None


def scan_folder(folder: Path) -> dict[str, tuple[int, int | str]]:
    """Package files in a subdir folder (regular files, not symlinks): name -> (size, mtime_ns)."""
    found: dict[str, tuple[int, int | str]] = {}
    with os.scandir(folder) as entries:
        for entry in entries:
            if split_package_name(entry.name) and not entry.name.startswith("."):
                st = entry.stat(follow_symlinks=False)
                if entry.is_file(follow_symlinks=False):
                    found[entry.name] = (st.st_size, st.st_mtime_ns)
    return found


def list_subdir(storage, channel: str, subdir: str) -> dict[str, tuple[int, int | str]]:
    """Package objects of a bucket mirror's subdir: name -> (size, ETag)."""
    prefix = f"{channel}/{subdir}/"
    found: dict[str, tuple[int, int | str]] = {}
    for info in storage.list(prefix):
        name = info.key[len(prefix) :]
        if "/" not in name and not name.startswith(".") and split_package_name(name):
            found[name] = (info.size, info.etag)
    return found


def bucket_sizes(settings: Settings, subdirs: list[str]) -> dict[str, dict[str, int]]:
    """What a dry run compares with in a bucket mirror: subdir -> package name -> size."""
    from casconsole.storage import open_storage

    storage = open_storage(settings)
    try:
        found = {sd: list_subdir(storage, settings.channel_name, sd) for sd in subdirs}
    finally:
        storage.close()
    return {sd: {fn: size for fn, (size, _) in files.items()} for sd, files in found.items()}


def sweep(folder: Path, present: set[str], wanted: set[str], started: float) -> None:
    """Remove temporary files nobody will finish: partial downloads of files that are in
    place or left the plan, and repodata temporaries left by a sync killed mid-write (older
    than this sync, so never another writer's file in progress). A bucket mirror's staging
    folder is swept the same way."""
    with os.scandir(folder) as entries:
        for entry in entries:
            name = entry.name
            if not (name.startswith(".") and name.endswith(".part")):
                continue
            fn = name[1:-5]
            if split_package_name(fn):
                stale = fn in present or fn not in wanted
            elif name.startswith(".repodata.json"):
                try:
                    stale = entry.stat(follow_symlinks=False).st_mtime < started
                except FileNotFoundError:
                    continue
            else:
                continue
            if stale:
                unlink(Path(entry.path))


def unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


class FolderTarget:
    in_bucket = False

    def __init__(self, settings: Settings):
        self.settings = settings
        self.channel_dir = Path(settings.channel_dir)

    def lock(self) -> SyncLock:
        return SyncLock(self.settings.mirror_dir).acquire()

    def status_log(self) -> StatusLog:
        return StatusLog(self.settings.mirror_dir)

    def has_repodata(self, subdir: str) -> bool:
        return (self.channel_dir / subdir / REPODATA).exists()

    def folder(self, subdir: str) -> Path:
        """Where the workers write the subdir's files."""
        folder = self.channel_dir / subdir
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def where(self, subdir: str) -> str:
        return str(self.channel_dir / subdir)

    def scan(self, subdir: str) -> dict[str, tuple[int, int | str]]:
        return scan_folder(self.channel_dir / subdir)

    def sizes(self, subdirs: list[str]) -> None:
        return None  # the plan looks at the folder itself

    def store(self, subdir: str) -> VerifiedStore:
        return VerifiedStore(verified_path(self.settings.mirror_dir, self.settings.channel_name, subdir))

    def key(self, subdir: str, fn: str) -> str | None:
        return None  # the workers put files into place themselves

    def check_space(self, download: int, repodata: int, largest: int) -> None:
        check_space(self.channel_dir, download, repodata)

    def current(self, subdir: str) -> Current:
        folder = self.channel_dir / subdir
        try:
            data = (folder / REPODATA).read_bytes()
        except OSError:
            data = None
        return Current(data, (folder / (REPODATA + ".zst")).is_file())

    def write(self, subdir: str, data: bytes, current: Current) -> None:
        write_repodata(self.channel_dir / subdir, msgspec.Raw(data))

    def remove(self, subdir: str, fn: str) -> bool:
        return unlink(self.channel_dir / subdir / fn)

    def count_records(self, subdir: str) -> int:
        return count_records(self.channel_dir / subdir / REPODATA)

    def close(self) -> None:
        pass


class BucketTarget:
    in_bucket = True

    def __init__(self, settings: Settings, warn, on_lost):
        from casconsole.storage import open_storage

        self.settings = settings
        self.storage = open_storage(settings)
        self.channel = settings.channel_name
        self.local = Path(settings.local_dir)
        self.staging = self.local / "staging" / self.channel
        self.warn = warn  # warn(subdir, message)
        self.on_lost = on_lost
        self.lease = None
        self._listings: dict[str, dict[str, tuple[int, int | str]]] = {}

    def _key(self, subdir: str, name: str) -> str:
        return f"{self.channel}/{subdir}/{name}"

    def lock(self):
        from casconsole.storage.lease import BucketLock, LeaseHeld, describe

        try:
            self.lease = BucketLock(self.storage, on_lost=self.on_lost).acquire()
        except LeaseHeld as exc:
            pid = exc.holder.get("pid") if isinstance(exc.holder.get("pid"), int) else None
            raise SyncLocked(pid, exc.where, who=describe(exc.holder)) from None
        return self.lease

    def status_log(self) -> StatusLog:
        return BucketStatusLog(self.local, self.storage)

    def has_repodata(self, subdir: str) -> bool:
        return self.storage.head(self._key(subdir, REPODATA)) is not None

    def folder(self, subdir: str) -> Path:
        folder = self.staging / subdir
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def where(self, subdir: str) -> str:
        return self.storage.where(f"{self.channel}/{subdir}")

    def scan(self, subdir: str) -> dict[str, tuple[int, int | str]]:
        """The subdir's package objects: name -> (size, ETag); listed once a sync."""
        if subdir not in self._listings:
            self._listings[subdir] = list_subdir(self.storage, self.channel, subdir)
        return self._listings[subdir]

    def sizes(self, subdirs: list[str]) -> dict[str, dict[str, int]]:
        """What the plan compares with: each subdir's package objects and their sizes."""
        return {sd: {fn: size for fn, (size, _) in self.scan(sd).items()} for sd in subdirs}

    def store(self, subdir: str) -> VerifiedStore:
        key = f"{STATE_DIR}/{VERIFIED}/{self.channel}/{subdir}.tsv"
        return BucketStore(verified_path(self.local, self.channel, subdir), self.storage, key)

    def key(self, subdir: str, fn: str) -> str | None:
        return self._key(subdir, fn)

    def check_space(self, download: int, repodata: int, largest: int) -> None:
        """The work folder holds the files in flight, not the mirror: room for the largest
        `concurrency` of them. A bucket has no free space to ask about."""
        self.local.mkdir(parents=True, exist_ok=True)
        check_space(self.local, min(download, largest), 0)

    def current(self, subdir: str) -> Current:
        from casconsole.storage import ObjectNotFound

        try:
            data, info = self.storage.get(self._key(subdir, REPODATA))
            etag: str | None = info.etag
        except ObjectNotFound:
            data, etag = None, None
        zst = self.storage.head(self._key(subdir, REPODATA + ".zst"))
        return Current(data, zst is not None, etag, zst.etag if zst is not None else None)

    def write(self, subdir: str, data: bytes, current: Current) -> None:
        """`.zst` then `.json`, each conditional on the version read before."""
        from casconsole.storage import WriteConflict

        data, zst = encode_repodata(msgspec.Raw(data))
        for attempt in range(1, WRITE_TRIES + 1):
            try:
                self._put(REPODATA + ".zst", subdir, zst, current.zst_etag)
                self._put(REPODATA, subdir, data, current.json_etag)
                return
            except WriteConflict as exc:
                if self.lease is not None:
                    self.lease.check()  # taken over from us: LeaseLost, the sync stops
                if attempt == WRITE_TRIES:
                    raise
                self.warn(subdir, f"{exc}: read again and written (this sync holds the mirror)")
                current = self.current(subdir)

    def _put(self, name: str, subdir: str, data: bytes, etag: str | None) -> None:
        self.storage.put(self._key(subdir, name), data, if_match=etag, if_none_match=etag is None)

    def remove(self, subdir: str, fn: str) -> bool:
        return self.storage.delete(self._key(subdir, fn))

    def count_records(self, subdir: str) -> int:
        current = self.current(subdir)
        return count_records_in(current.data) if current.data is not None else 0

    def close(self) -> None:
        self.storage.close()


# events of the status log's copy in the bucket: a sync's course without its files one by one
_THIN_OUT = (FileStarted, FileProgress, FileDone)


class BucketStatusLog(StatusLog):
    """The status log of a bucket mirror: whole in the local work folder, and its lines but the
    files' own (started, progress, done) copied to the bucket's `.cas/sync.jsonl` when the sync
    starts, as each subdir is settled and when it finishes, for the front ends' health URL and
    for `cas-sync --status` on another machine. A copy that cannot be written is a warning in
    the local log; the sync goes on."""

    def __init__(self, local: Path, storage):
        super().__init__(local)
        self.storage = storage
        self.key = f"{STATE_DIR}/{SYNC_LOG}"
        self._lines: list[bytes] = []
        self._failed = False

    def __call__(self, event: Event) -> None:
        super().__call__(event)
        if isinstance(event, _THIN_OUT):
            return
        from casconsole.sync.status import event_line

        self._lines.append(event_line(event))
        if isinstance(event, (SyncStarted, SubdirDone, SyncFinished)) and not self._failed:
            from casconsole.errors import StorageError

            try:
                self.storage.put(self.key, b"".join(self._lines))
            except StorageError as exc:
                self._failed = True
                super().__call__(_warning(f"status log copy: {exc}; not written from here on"))


def _warning(message: str) -> Event:
    from casconsole.sync.events import SyncWarning

    return SyncWarning("", message)


def bucket_status(settings: Settings):
    """`cas-sync --status` of a bucket mirror: the local status log when this machine ran its
    syncs, else the copy in the bucket. Whether a sync runs is the lock's to say there (its
    heartbeat), not a pid of another machine."""
    import tempfile

    from casconsole.errors import StorageError
    from casconsole.storage import open_storage
    from casconsole.storage.lease import read_holder
    from casconsole.sync.status import read_status

    status = read_status(settings.local_dir)
    if status.state != "none":
        return status
    storage = open_storage(settings)
    try:
        data, _ = storage.get(f"{STATE_DIR}/{SYNC_LOG}")
        holder = read_holder(storage)
    except StorageError:
        return status
    finally:
        storage.close()
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / STATE_DIR / SYNC_LOG
        copy.parent.mkdir()
        copy.write_bytes(data)
        status = read_status(Path(tmp))
    if status.state in ("running", "interrupted"):
        status.state = "running" if holder is not None and holder.get("alive") else "interrupted"
    return status
