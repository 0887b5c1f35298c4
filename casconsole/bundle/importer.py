"""Import: check a whole bundle, then apply it to the mirror in the order that keeps it served.

    bundle = open_bundle(folder, trusted_key)        # manifest parsed, signature checked
    plan = plan_import(mirror_dir, bundle)           # compared with the mirror (lock held)
    stats = run_import(plan, sink)
    # or all of it, under the mirror's lock: import_bundle(mirror_dir, folder, trusted_key, ...)

1. Refuse, with nothing changed, a bundle made against another state of the mirror (its `base`
   is not this mirror's state digest), a mirror without room, or an earlier import of another
   bundle that was cut off.
2. Check: every volume is there with its size, and every carried file's bytes hash to the
   manifest's sha256. The files to apply are copied meanwhile into `.cas/import/` (hidden,
   never served), so the stick is read once. Any mismatch: the copies are removed, nothing else
   was touched.
3. A journal (`.cas/bundle-import.json`) names the bundle being applied; then the files are
   renamed into place (each atomically) and recorded in the verified-file store; after an
   fsync, the index files (repodata, compressed copies first); then the deletions. A client
   never sees repodata naming a file that is missing: new files are in place before any
   repodata names them, old ones leave after no repodata does.
4. The journal goes. An import cut off (SIGKILL included) is completed by running it again:
   the journal lets it past the base check, and every step skips what is done already. A
   second import of a bundle already applied finds nothing to do and changes nothing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from casconsole.bundle.digest import digest_chunks
from casconsole.bundle.events import (
    CHANGED,
    CHECKING,
    DELETED,
    DELETING,
    INDEX,
    NEW,
    PLACING,
    BundleFinished,
    Counts,
    FileDone,
    StageStarted,
)
from casconsole.bundle.export import size_text
from casconsole.bundle.manifest import Bundle, Carried, open_bundle
from casconsole.bundle.paths import FILE, index_order, is_conda_package
from casconsole.bundle.state import (
    BundleError,
    Digest,
    MirrorState,
    Reported,
    now_text,
    scan_mirror,
)
from casconsole.bundle.volumes import VolumeProblem, VolumeReader, free_space, fsync_folder
from casconsole.errors import Cancelled, DiskError, os_error_message
from casconsole.events import Sink, null_sink
from casconsole.fsutil import atomic_write_bytes
from casconsole.layout import state_dir, verified_path
from casconsole.sync.lock import SyncLock
from casconsole.sync.store import Verified, VerifiedStore

JOURNAL = "bundle-import.json"
STAGING = "import"
RESERVE = 16 << 20  # room left free on the mirror beyond what the import writes


class _Journal(msgspec.Struct, forbid_unknown_fields=True):
    bundle: Digest  # the sha256 of the manifest being applied
    folder: str
    started: str


def journal_path(mirror_dir: Path) -> Path:
    return state_dir(mirror_dir) / JOURNAL


def read_journal(mirror_dir: Path) -> _Journal | None:
    path = journal_path(mirror_dir)
    try:
        return msgspec.json.decode(path.read_bytes(), type=_Journal)
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError) as exc:
        raise BundleError(
            f"{path}: unreadable ({exc}); it records an import that was cut off: run that import "
            "again, or remove the file to give it up"
        ) from None


def short(digest: str | None) -> str:
    return (digest or "none").removeprefix("sha256:")[:12]


@dataclass
class ImportPlan:
    """What importing `bundle` into the mirror would change, and whether it may."""

    mirror_dir: Path
    bundle: Bundle
    state: MirrorState
    counts: Counts
    place: list[int]  # indexes into the manifest's files: files to put in place
    index: list[int]  # index files to write, in writing order
    delete: list[str]  # paths present now that the bundle deletes
    resuming: bool  # an import of this bundle was cut off: complete it
    journal: _Journal | None
    free: int
    escapes: list[str] = field(default_factory=list)  # destinations that lead out of the mirror
    blocked: list[str] = field(default_factory=list)  # destinations where a folder stands

    @property
    def already(self) -> bool:
        """Nothing to do: the mirror holds what the bundle would make of it."""
        return not (self.place or self.index or self.delete)

    @property
    def base_matches(self) -> bool:
        base = self.bundle.manifest.base
        return base is None or base == self.state.digest

    @property
    def needed(self) -> int:
        files = self.bundle.manifest.files
        return sum(files[i].size for i in (*self.place, *self.index))

    def changes(self) -> list[tuple[str, str, int]]:
        """(path, new | changed | index | deleted, size) of everything the import does."""
        files = self.bundle.manifest.files
        out = [
            (files[i].path, CHANGED if files[i].path in self.state.files else NEW, files[i].size)
            for i in self.place
        ]
        out += [(files[i].path, INDEX, files[i].size) for i in self.index]
        out += [(p, DELETED, 0) for p in self.delete]
        return out

    def problem(self) -> str | None:
        """Why the bundle must not be applied to this mirror now, or None."""
        m = self.bundle.manifest
        if self.journal is not None and not self.resuming:
            return (
                f"an import of another bundle ({self.journal.folder}, started {self.journal.started}) "
                f"was cut off: run it again to complete it first, or remove {journal_path(self.mirror_dir)} "
                "to give it up"
            )
        if self.escapes:
            return f"{self.escapes[0]}: leads out of the mirror (a symlink?); nothing is written through one"
        if self.blocked:
            return f"{self.mirror_dir / self.blocked[0]}: a folder stands where the bundle puts a file"
        if not self.already and not self.resuming and not self.base_matches:
            return (
                f"{self.bundle.folder} was made against another state of this mirror (its base is "
                f"{short(m.base)}, this mirror is {short(self.state.digest)}): write a manifest here "
                "(cas-sync --manifest FILE) and export again --since it"
            )
        return None

    def space_problem(self) -> str | None:
        if not self.already and self.needed + RESERVE > self.free:
            return (
                f"{self.mirror_dir}: the import writes {size_text(self.needed)}, and only "
                f"{size_text(self.free)} is free there"
            )
        return None

    def summary(self) -> str:
        m = self.bundle.manifest
        made = "the whole mirror" if m.base is None else f"since state {short(m.base)}"
        signed = (
            f"signed, checked with {self.bundle.verified_by}"
            if self.bundle.verified_by
            else ("signed (no bundle_trusted_key to check it with)" if self.bundle.signed else "unsigned")
        )
        what = "nothing to do: already imported" if self.already else self.counts.text(size_text)
        resume = "; completing an import that was cut off" if self.resuming else ""
        return f"bundle {self.bundle.folder} ({made}, {signed}): {what}{resume}"


def plan_import(
    mirror_dir: Path,
    bundle: Bundle,
    *,
    rehash: bool = False,
    sink: Sink | None = None,
    cancel: threading.Event | None = None,
) -> ImportPlan:
    """Compare the bundle with the mirror (the caller holds the mirror's lock)."""
    mirror_dir = Path(mirror_dir)
    journal = read_journal(mirror_dir)
    state, _ = scan_mirror(mirror_dir, rehash=rehash, sink=sink, cancel=cancel, finish=False)
    counts = Counts()
    place: list[int] = []
    index: list[int] = []
    files = bundle.manifest.files
    for i, f in enumerate(files):
        now = state.files.get(f.path)
        if now is not None and (now.size, now.sha256) == (f.size, f.sha256):
            counts.same += 1
            continue
        counts.bytes += f.size
        if f.kind == FILE:
            place.append(i)
            counts.new += now is None
            counts.changed += now is not None
        else:
            index.append(i)
            counts.index += 1
    index.sort(key=lambda i: index_order(files[i].path))
    delete = [p for p in bundle.manifest.delete if os.path.lexists(mirror_dir / p)]
    counts.deleted = sum(1 for p in delete if (e := state.files.get(p)) is None or e.kind == FILE)
    resuming = journal is not None and journal.bundle == bundle.digest
    plan = ImportPlan(
        mirror_dir, bundle, state, counts, place, index, delete, resuming, journal, free_space(mirror_dir)
    )
    plan.escapes = _escapes(mirror_dir, [files[i].path for i in (*place, *index)] + delete)
    plan.blocked = [files[i].path for i in (*place, *index) if (mirror_dir / files[i].path).is_dir()]
    return plan


def _escapes(mirror_dir: Path, paths: list[str]) -> list[str]:
    """Paths whose folder (or its nearest existing ancestor) resolves outside the mirror."""
    root = os.path.realpath(mirror_dir)
    out, seen = [], set()
    for path in paths:
        folder = os.path.dirname(path)
        if folder in seen:
            continue
        seen.add(folder)
        where = mirror_dir / folder
        while not where.exists() and where != mirror_dir:
            where = where.parent
        real = os.path.realpath(where)
        if real != root and not real.startswith(root + os.sep):
            out.append(path)
    return out


@dataclass
class ImportStats:
    counts: Counts
    already: bool = False
    resumed: bool = False
    identical: bool = False  # the mirror's state is now the state the bundle was made from
    digest: str = ""  # the mirror's state digest afterwards
    seconds: float = 0.0
    summary: str = ""


def run_import(
    plan: ImportPlan, *, sink: Sink | None = None, cancel: threading.Event | None = None
) -> ImportStats:
    """Apply the plan (the caller holds the mirror's lock); see the module docstring."""
    sink = sink or null_sink
    started = time.monotonic()
    problem = plan.problem()
    if problem:
        raise BundleError(problem)
    problem = plan.space_problem()
    if problem:
        raise DiskError(problem)
    stats = ImportStats(plan.counts, already=plan.already, resumed=plan.resuming)
    try:
        if not plan.already:
            staging = _check_and_stage(plan, sink, cancel)
            _write_journal(plan)
            _apply(plan, staging, sink, cancel)
        with contextlib.suppress(FileNotFoundError):
            journal_path(plan.mirror_dir).unlink()
        shutil.rmtree(state_dir(plan.mirror_dir) / STAGING, ignore_errors=True)
    except OSError as exc:
        raise DiskError(f"the import stopped: {_disk_message(exc)}; run it again to complete it") from None
    after, _ = scan_mirror(plan.mirror_dir, finish=False)
    stats.digest = after.digest
    stats.identical = after.digest == plan.bundle.manifest.target
    stats.seconds = time.monotonic() - started
    if plan.already:
        stats.summary = f"{plan.bundle.folder}: already imported; nothing changed"
    else:
        stats.summary = f"imported {plan.bundle.folder}: {plan.counts.text(size_text)}"
    if stats.identical:
        stats.summary += "; the mirror now matches its source file for file"
    elif not plan.already:
        stats.summary += (
            "; the mirror holds files its source does not (channels of its own, or files a "
            "whole-mirror bundle does not delete)"
        )
    sink(BundleFinished("import", stats.summary, stats.seconds))
    return stats


def _check_and_stage(plan: ImportPlan, sink: Sink, cancel: threading.Event | None) -> Path:
    """Hash every carried file from the volumes; copy those to apply into the staging folder.
    BundleError (and the copies removed) at the first volume missing or byte wrong."""
    bundle, files = plan.bundle, plan.bundle.manifest.files
    staging = state_dir(plan.mirror_dir) / STAGING
    wanted = set(plan.place) | set(plan.index)
    volumes = [(v.name, v.size) for v in bundle.manifest.volumes]
    reader = VolumeReader(bundle.folder, volumes)
    ok = False
    try:
        reader.check()
        staging.mkdir(parents=True, exist_ok=True)
        sink(StageStarted(CHECKING, len(files), bundle.manifest.bytes))
        for i, f in enumerate(files):
            if cancel is not None and cancel.is_set():
                raise Cancelled
            reported = Reported(sink, CHECKING)
            _copy_checked(reader, f, staging / f"{i:07d}" if i in wanted else None, reported, cancel)
            sink(FileDone(CHECKING, f.path, f.size - reported.bytes))
        ok = True
    except VolumeProblem as exc:
        raise BundleError(f"{exc}; nothing was changed") from None
    finally:
        reader.close()
        if not ok:
            shutil.rmtree(staging, ignore_errors=True)
    return staging


def _copy_checked(
    reader: VolumeReader, f: Carried, dest: Path | None, reported: Reported, cancel: threading.Event | None
) -> None:
    out = open(dest, "wb") if dest is not None else None  # noqa: SIM115 (closed below)
    try:
        _, sha256 = digest_chunks(reader.read(f.offset, f.size), reported, cancel, out=out)
        if out is not None and f.kind != FILE:
            out.flush()
            os.fsync(out.fileno())  # index files are few: each is durable before it is renamed
    finally:
        if out is not None:
            out.close()
    if sha256 != f.sha256:
        raise BundleError(
            f"{reader.folder}: {f.path} does not match its sha256 in the manifest: the bundle is damaged "
            "or was changed; nothing was changed"
        )


def _write_journal(plan: ImportPlan) -> None:
    journal = _Journal(plan.bundle.digest, str(plan.bundle.folder), now_text())
    atomic_write_bytes(journal_path(plan.mirror_dir), msgspec.json.encode(journal) + b"\n")


def _apply(plan: ImportPlan, staging: Path, sink: Sink, cancel: threading.Event | None) -> None:
    files, mirror = plan.bundle.manifest.files, plan.mirror_dir
    stores: dict[tuple[str, str], VerifiedStore] = {}
    try:
        sink(StageStarted(PLACING, len(plan.place), sum(files[i].size for i in plan.place)))
        for i in plan.place:
            if cancel is not None and cancel.is_set():
                raise Cancelled
            f = files[i]
            _place(staging / f"{i:07d}", mirror / f.path)
            if is_conda_package(f.path):
                channel, subdir, name = f.path.split("/")
                st = (mirror / f.path).stat()
                _store(stores, mirror, channel, subdir).add(name, Verified(f.size, st.st_mtime_ns, f.sha256))
            sink(FileDone(PLACING, f.path, f.size))
        for store in stores.values():
            store.flush()
        os.sync()  # every file is on disk before any repodata names it
        sink(StageStarted(INDEX, len(plan.index), sum(files[i].size for i in plan.index)))
        for i in plan.index:
            f = files[i]
            _place(staging / f"{i:07d}", mirror / f.path)
            sink(FileDone(INDEX, f.path, f.size))
        for folder in {(mirror / files[i].path).parent for i in plan.index}:
            fsync_folder(folder)
        sink(StageStarted(DELETING, len(plan.delete), 0))
        for path in plan.delete:
            with contextlib.suppress(FileNotFoundError):
                (mirror / path).unlink()
            if is_conda_package(path):
                channel, subdir, name = path.split("/")
                _store(stores, mirror, channel, subdir).forget(name)
            sink(FileDone(DELETING, path, 0))
    finally:
        for store in stores.values():
            store.close()


def _store(stores: dict, mirror: Path, channel: str, subdir: str) -> VerifiedStore:
    key = (channel, subdir)
    if key not in stores:
        stores[key] = VerifiedStore(verified_path(mirror, channel, subdir))
    return stores[key]


def _place(staged: Path, final: Path) -> None:
    """Rename the staged copy to its final name; across filesystems (a channel mounted from
    another disk), copy it beside the final name first, then rename."""
    final.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(staged, 0o644)
    try:
        os.replace(staged, final)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        beside = final.with_name(f".{final.name}.import.part")
        shutil.copyfile(staged, beside)
        os.chmod(beside, 0o644)
        os.replace(beside, final)
        staged.unlink()


def _disk_message(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return f"{os_error_message(exc)}: the mirror's disk is full"
    return os_error_message(exc)


def import_bundle(
    mirror_dir: Path,
    folder: Path,
    *,
    trusted_key: Path | None = None,
    rehash: bool = False,
    sink: Sink | None = None,
    cancel: threading.Event | None = None,
    on_plan=None,
) -> ImportStats:
    """Open, plan and apply a bundle under the mirror's lock; `on_plan(plan)` is called before
    anything is checked or changed (the CLI states what the import will do there)."""
    bundle = open_bundle(folder, trusted_key)
    mirror_dir = Path(mirror_dir)
    with SyncLock(mirror_dir):
        plan = plan_import(mirror_dir, bundle, rehash=rehash, sink=sink, cancel=cancel)
        if on_plan is not None:
            on_plan(plan)
        return run_import(plan, sink=sink, cancel=cancel)
