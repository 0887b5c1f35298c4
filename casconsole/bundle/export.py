"""Export: the files another mirror lacks (or holds wrong), its new index files, its
deletions, written as volumes and a manifest, optionally signed.

    plan = plan_export(mirror_dir, target, base=read_state(since), volume_size=...)
    stats = run_export(plan, sign_key=None, sink=sink)
    # or both, under the mirror's lock: export_bundle(mirror_dir, target, since=..., ...)

Against a base state (`--since`, the offline side's `cas-sync --manifest`), a file is carried
when the base lacks it or holds other bytes under its name; a base file is deleted when the
mirror lacks it and its channel is one of the mirror's (a channel only the other side has, its
own, is left alone). Without a base, every file is carried and nothing is deleted.

Before anything is written the plan states the size, and the export refuses a target without
the room, or a volume size its FAT filesystem cannot hold. Volumes go first, then
`manifest.json` (atomically), then its signature: a bundle whose export stopped early has no
manifest and is refused by the import.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import humanize

from casconsole.bundle.digest import digest_chunks
from casconsole.bundle.events import (
    CHANGED,
    DELETED,
    NEW,
    WRITING,
    BundleFinished,
    Counts,
    FileDone,
    StageStarted,
)
from casconsole.bundle.manifest import MANIFEST, SIGNATURE, Carried, Manifest, Volume
from casconsole.bundle.paths import FILE, INDEX, index_order
from casconsole.bundle.signing import load_private_key, sign
from casconsole.bundle.state import (
    BundleError,
    Entry,
    MirrorState,
    Reported,
    now_text,
    read_state,
    scan_mirror,
)
from casconsole.bundle.volumes import (
    FAT_MAX_FILE,
    MAX_VOLUMES,
    PART_SUFFIX,
    VOLUME_NAME,
    VolumeWriter,
    filesystem_type,
    free_space,
    fsync_folder,
    is_fat,
    volumes_needed,
)
from casconsole.errors import Cancelled, DiskError, StorageError, os_error_message
from casconsole.events import Sink, null_sink
from casconsole.fsutil import atomic_write_bytes
from casconsole.sync.lock import SyncLock

RESERVE = 1 << 20  # room kept free on the target beyond the bundle itself
ENTRY_BYTES = 200  # a manifest line, for the size estimate


def size_text(n: int) -> str:
    return humanize.naturalsize(n, format="%.1f")


def binary_size(n: int) -> str:
    """Volume sizes in the units they are given in: 4.0 GiB, 700.0 MiB."""
    return humanize.naturalsize(n, binary=True, format="%.1f")


def compare(state: MirrorState, base: MirrorState | None) -> tuple[list[Entry], list[str], Counts]:
    """What to carry (files by path, then index files in writing order), what to delete."""
    counts = Counts()
    carried: list[Entry] = []
    for path in sorted(state.files):
        entry = state.files[path]
        old = base.files.get(path) if base is not None else None
        if old is not None and (old.size, old.sha256) == (entry.size, entry.sha256):
            counts.same += 1
            continue
        carried.append(entry)
        counts.bytes += entry.size
        if entry.kind == INDEX:
            counts.index += 1
        elif old is None:
            counts.new += 1
        else:
            counts.changed += 1
    carried.sort(key=lambda e: (e.kind != FILE, index_order(e.path) if e.kind == INDEX else e.path))
    deleted: list[str] = []
    if base is not None:
        channels = state.channel_names or state.channels()
        deleted = sorted(p for p in base.files if p not in state.files and p.split("/", 1)[0] in channels)
        counts.deleted = sum(1 for p in deleted if base.files[p].kind == FILE)
    return carried, deleted, counts


@dataclass
class ExportPlan:
    """What an export will write, and whether the target can hold it."""

    mirror_dir: Path  # or a bucket mirror's Storage
    target: Path
    state: MirrorState
    base: MirrorState | None
    base_path: Path | None
    carried: list[Entry]
    delete: list[str]
    counts: Counts
    volume_size: int
    free: int
    fstype: str
    reclaimable: int = 0  # bytes of a former bundle in the target, replaced by this one

    @property
    def volumes(self) -> int:
        return volumes_needed(self.counts.bytes, self.volume_size)

    @property
    def size(self) -> int:
        """The bundle's size on the target: volumes and manifest (an estimate for the latter)."""
        return self.counts.bytes + ENTRY_BYTES * (len(self.carried) + len(self.delete)) + 4096

    def summary(self) -> str:
        against = f"since {self.base_path}" if self.base_path else "the whole mirror"
        return (
            f"bundle of {_where(self.mirror_dir)} ({against}): {self.counts.text(size_text)}; "
            f"{self.volumes} volume(s) of at most {binary_size(self.volume_size)}"
        )

    def changes(self) -> list[tuple[str, str, int]]:
        """(path, new | changed | index | deleted, size) of everything the bundle does."""
        out = []
        for e in self.carried:
            old = self.base.files.get(e.path) if self.base is not None else None
            out.append((e.path, INDEX if e.kind == INDEX else CHANGED if old is not None else NEW, e.size))
        out += [(p, DELETED, 0) for p in self.delete]
        return out

    def problem(self) -> str | None:
        """Why the export cannot be written to the target, or None."""
        if self.volumes > MAX_VOLUMES:
            return (
                f"{self.volumes} volumes of {binary_size(self.volume_size)} would be needed, more than "
                f"{MAX_VOLUMES}: use a larger --volume-size"
            )
        if is_fat(self.fstype) and self.volume_size > FAT_MAX_FILE:
            return (
                f"{self.target} is on a FAT filesystem ({self.fstype}), which holds files of at most "
                f"4 GiB - 1 byte: use a --volume-size below 4G (the default is 4 GiB - 1 MiB)"
            )
        return None

    def space_problem(self) -> str | None:
        """The target's lack of room, if it lacks it: a disk refusal (exit 4), told before writing."""
        if self.size + RESERVE > self.free + self.reclaimable:
            return (
                f"{self.target}: the bundle needs {size_text(self.size)}, and only "
                f"{size_text(self.free + self.reclaimable)} is free there"
            )
        return None


def plan_export(
    mirror_dir: Path,
    target: Path,
    *,
    since: Path | None = None,
    volume_size: int,
    rehash: bool = False,
    sink: Sink | None = None,
    cancel: threading.Event | None = None,
) -> ExportPlan:
    """Scan the mirror (the caller holds its lock), compare with the base, look at the target."""
    base = read_state(since) if since is not None else None
    target = Path(target)
    reclaimable = _former_bundle_size(target)
    state, _ = scan_mirror(mirror_dir, rehash=rehash, sink=sink, cancel=cancel, finish=False)
    carried, delete, counts = compare(state, base)
    mirror = Path(mirror_dir) if isinstance(mirror_dir, (str, os.PathLike)) else mirror_dir
    return ExportPlan(
        mirror, target, state, base, since, carried, delete, counts, volume_size,
        free_space(target), filesystem_type(target), reclaimable,
    )  # fmt: skip


def _former_bundle_size(target: Path) -> int:
    """Bytes held by a former bundle in `target`; BundleError if it holds anything else."""
    try:
        names = os.listdir(target)
    except FileNotFoundError:
        return 0
    except NotADirectoryError:
        raise BundleError(f"{target}: not a folder") from None
    except OSError as exc:
        raise BundleError(f"cannot look into the target: {os_error_message(exc)}") from None
    others = [n for n in names if not _is_bundle_file(n)]
    if others:
        shown = ", ".join(sorted(others)[:3]) + (", ..." if len(others) > 3 else "")
        raise BundleError(
            f"{target} holds other files ({shown}): "
            "export into an empty folder (or one holding a former bundle, which is replaced)"
        )
    return sum((target / n).stat().st_size for n in names)


def _is_bundle_file(name: str) -> bool:
    plain = name[1:].removesuffix(PART_SUFFIX) if name.startswith(".") else name
    if name.startswith(".") and name.endswith(PART_SUFFIX) and plain.startswith(MANIFEST):
        return True  # an atomic write of the manifest, cut short
    return plain in (MANIFEST, SIGNATURE) or bool(VOLUME_NAME.match(plain))


@dataclass
class ExportStats:
    counts: Counts
    target: Path
    volumes: list[tuple[str, int]] = field(default_factory=list)
    signed: bool = False
    seconds: float = 0.0
    summary: str = ""


def run_export(
    plan: ExportPlan,
    *,
    sign_key: Path | None = None,
    sink: Sink | None = None,
    cancel: threading.Event | None = None,
) -> ExportStats:
    """Write the bundle the plan describes (the caller holds the mirror's lock)."""
    sink = sink or null_sink
    started = time.monotonic()
    problem = plan.problem()
    if problem:
        raise StorageError(problem)
    problem = plan.space_problem()
    if problem:
        raise DiskError(problem)
    if sign_key is not None:
        load_private_key(sign_key)  # a bad key is told before hours of writing
    target = plan.target
    try:
        target.mkdir(parents=True, exist_ok=True)
        _remove_former_bundle(target)
    except OSError as exc:
        raise DiskError(f"cannot prepare the target: {os_error_message(exc)}") from None
    writer = VolumeWriter(target, plan.volume_size)
    files: list[Carried] = []
    offset = 0
    sink(StageStarted(WRITING, len(plan.carried), plan.counts.bytes))
    try:
        for entry in plan.carried:
            if cancel is not None and cancel.is_set():
                raise Cancelled
            reported = Reported(sink, WRITING)
            _copy_into(plan.mirror_dir, entry, writer, reported, cancel)
            files.append(Carried(entry.path, entry.size, entry.sha256, entry.kind, offset))
            offset += entry.size
            sink(FileDone(WRITING, entry.path, entry.size - reported.bytes))
        volumes = writer.close()
        manifest = Manifest(
            base=plan.base.digest if plan.base is not None else None,
            target=plan.state.digest,
            volume_size=plan.volume_size,
            volumes=[Volume(name, size) for name, size in volumes],
            files=files,
            delete=plan.delete,
            source=_where(plan.mirror_dir),
            created=now_text(),
        )
        data = manifest.to_bytes()
        atomic_write_bytes(target / MANIFEST, data)
        if sign_key is not None:
            atomic_write_bytes(target / SIGNATURE, sign(sign_key, data))
        fsync_folder(target)
    except OSError as exc:
        writer.abort()
        raise DiskError(f"cannot write the bundle: {_disk_message(exc)}") from None
    except BaseException:
        writer.abort()
        raise
    stats = ExportStats(plan.counts, target, volumes, sign_key is not None, time.monotonic() - started)
    stats.summary = f"wrote {target}: {plan.counts.text(size_text)} in {len(volumes)} volume(s)" + (
        ", signed" if stats.signed else ""
    )
    sink(BundleFinished("export", stats.summary, stats.seconds))
    return stats


def _where(mirror) -> str:
    return str(getattr(mirror, "url", mirror))


def _chunks(mirror, path: str) -> Iterator[bytes]:
    """The file's bytes in chunks: from the folder, or from the bucket's object."""
    if not isinstance(mirror, Path):
        yield from mirror.read(path)
        return
    with open(mirror / path, "rb", buffering=0) as fh:
        while chunk := fh.read(1 << 20):
            yield chunk


def _copy_into(
    mirror, entry: Entry, writer: VolumeWriter, reported: Reported, cancel: threading.Event | None
) -> None:
    """Append the file to the volumes, checking it is still the file the scan saw."""
    from casconsole.storage import ObjectNotFound

    source = f"{_where(mirror)}/{entry.path}"
    try:
        size, sha256 = digest_chunks(_chunks(mirror, entry.path), reported, cancel, out=writer)
    except (FileNotFoundError, ObjectNotFound):
        raise BundleError(f"{source}: removed while it was being exported") from None
    if size != entry.size or sha256 != entry.sha256:
        raise BundleError(f"{source}: changed while it was being exported (not by a sync: the lock is held)")


def _remove_former_bundle(target: Path) -> None:
    """A former bundle's files, the manifest first: its volumes never pair with another manifest."""
    names = sorted(os.listdir(target), key=lambda n: (n != MANIFEST, n != SIGNATURE, n))
    for name in names:
        if _is_bundle_file(name):
            (target / name).unlink()


def _disk_message(exc: OSError) -> str:
    if exc.errno == errno.EFBIG:
        return (
            f"{os_error_message(exc)}: the target's filesystem holds no file this large "
            "(FAT32: 4 GiB - 1 byte); use a smaller --volume-size"
        )
    if exc.errno == errno.ENOSPC:
        return f"{os_error_message(exc)}: the target is full"
    return os_error_message(exc)


def export_bundle(
    mirror_dir: Path,
    target: Path,
    *,
    since: Path | None = None,
    volume_size: int,
    sign_key: Path | None = None,
    rehash: bool = False,
    sink: Sink | None = None,
    cancel: threading.Event | None = None,
    on_plan=None,
) -> ExportStats:
    """Plan and write a bundle under the mirror's lock; `on_plan(plan)` is called before writing
    (the CLI states the size there). `mirror_dir` may be a bucket mirror's Storage."""
    if not isinstance(mirror_dir, (str, os.PathLike)):
        from casconsole.bundle.bucket import mirror_lock

        lock = mirror_lock(mirror_dir)
    elif not Path(mirror_dir).is_dir():
        raise BundleError(f"{mirror_dir}: no mirror there (mirror_dir)")
    else:
        lock = SyncLock(Path(mirror_dir))
    with lock:
        plan = plan_export(
            mirror_dir, target, since=since, volume_size=volume_size, rehash=rehash, sink=sink, cancel=cancel
        )
        if on_plan is not None:
            on_plan(plan)
        return run_export(plan, sign_key=sign_key, sink=sink, cancel=cancel)
