"""The PyPI side of a sync: a section of `casconsole.sync.Sync`, run after the channel (or alone,
`cas-sync --pypi-only`), under the same lock, into the same status log, with the same events.

1. fetch the pages of the projects asked for and plan (`PypiPlan`), through the PyPI side's own
   network policy;
2. compare the kept files with `<mirror_dir>/pypi/files/<project>/`: a file whose size and mtime
   are those the verified-file store recorded (`.cas/verified/pypi/files.tsv`) is trusted, one of
   the right size but not recorded (or every file, with `--verify`) is hashed, the rest are
   downloaded by the sync's own workers (FileJob, WorkerPool: streamed, hashed, resumable,
   placed atomically);
3. with the closure on, read the requirements of the wheels just downloaded that the index gave
   no PEP 658 metadata for, and download what they add, until nothing new comes;
4. write each wheel's `.metadata` (PEP 658, from its METADATA), then the project pages from the
   files present and verified (last, atomically: a page never names a missing file), then remove
   the files that left the plan, unless more than `max_prune` of them would go (the prune guard
   holds the whole section back: no page rewritten, nothing removed) or `prune` is off.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from casconsole.errors import Cancelled
from casconsole.fsutil import atomic_write_bytes
from casconsole.layout import PYPI_DIR, PYPI_METADATA_SUFFIX, verified_path
from casconsole.pypi.client import IndexClient, pypi_policy
from casconsole.pypi.closure import MetadataError, wheel_metadata
from casconsole.pypi.plan import PypiPlan, Row, files_dir, scan_files
from casconsole.pypi.publish import Published, published_projects, simple_dir, write_project
from casconsole.redact import redact_url
from casconsole.sync.events import (
    FileDone,
    FileFailed,
    FileRemoved,
    RepodataFetched,
    SubdirDone,
    SubdirPlanned,
    SyncWarning,
)
from casconsole.sync.fetch import FileJob, Outcome
from casconsole.sync.safety import check_space, storage_failure
from casconsole.sync.store import Verified, VerifiedStore

if TYPE_CHECKING:
    from casconsole.settings import Settings
    from casconsole.sync.engine import Sync

NAME = PYPI_DIR  # the "subdir" the section's events carry


def store_path(mirror_dir: Path) -> Path:
    return verified_path(mirror_dir, PYPI_DIR, "files")


@dataclass
class _State:
    """What the section knows of the disk and what came of the downloads."""

    store: VerifiedStore
    on_disk: dict[str, os.stat_result]
    wanted: dict[str, Row] = field(default_factory=dict)  # key -> row, kept by the plan
    present: set[str] = field(default_factory=set)  # keys verified, now or as they complete
    bad: dict[str, str] = field(default_factory=dict)
    files: int = 0
    bytes: int = 0
    check: int = 0
    check_bytes: int = 0
    downloaded: int = 0
    failed: int = 0


class PypiSection:
    """The PyPI mirror as a section of a sync (see the module docstring)."""

    name = NAME

    def __init__(self, settings: Settings):
        self.settings = settings
        self.source = settings.pypi.index_url or ""
        self._client: IndexClient | None = None
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()
        client = self._client
        if client is not None:
            client.abort()

    def run(self, sync: Sync) -> None:
        def retrying(url: str, reason: str, delay: float) -> None:
            sync.emit(SyncWarning(NAME, f"{reason}; trying again in {delay:.1f} s"))

        with IndexClient(self.settings, cancel=sync.cancel_event, on_retry=retrying) as client:
            self._client = client
            try:
                _Run(self.settings, sync, client).run()
            finally:
                self._client = None


class _Run:
    def __init__(self, settings: Settings, sync: Sync, client: IndexClient):
        self.settings = settings
        self.mirror = Path(settings.mirror_dir)
        self.files = files_dir(self.mirror)
        self.sync = sync
        self.client = client
        self.emit = sync.emit

    def run(self) -> None:
        s, sync = self.settings, self.sync
        # a first sync downloads for sure: its workers start now and get ready (an interpreter
        # each) while the index is read, as the channel's do while its repodata is fetched
        first = not any(self.files.glob("*/*"))
        self.pool = sync.worker_pool(None, pypi_policy(s)) if first else None
        try:
            self._run()
        finally:
            if self.pool is not None:
                self.pool.close()

    def _run(self) -> None:
        s, sync = self.settings, self.sync
        plan = PypiPlan.build(s, self.client)
        self.emit(RepodataFetched(NAME, redact_url(s.pypi.index_url or ""), len(plan.rows), False))
        for warning in plan.warnings():
            if not warning.endswith("read from the wheel once downloaded"):
                self.emit(SyncWarning(NAME, warning))
        self.files.mkdir(parents=True, exist_ok=True)
        state = _State(VerifiedStore(store_path(self.mirror)), scan_files(self.mirror))
        try:
            jobs = self._compare(plan, state, plan.kept())
            while True:
                if sync.cancelled:
                    raise Cancelled
                self._announce(plan, state)
                check_space(self.files, state.bytes, 0)
                self._download(jobs, state)
                if not (s.pypi.closure and plan.unresolved):
                    break
                added = plan.resolve(self.client, on_disk=lambda d: self._verified_path(d, state))
                plan.learn_sizes(self.client)
                jobs = self._compare(plan, state, [r for r in plan.kept() if r.key not in state.wanted])
                if not added or not jobs:
                    break
            for label, why in sorted(plan.metadata_warnings.items()):
                self.emit(SyncWarning(NAME, f"{label}: {why}"))
            self._settle(plan, state)
        finally:
            state.store.close()

    # ---------------------------------------------------------------- planning the files

    def _trusted(self, row: Row, state: _State) -> bool:
        """A file on disk as the verified-file store recorded it, with the digest the index gives."""
        st, entry = state.on_disk.get(row.key), state.store.get(row.key)
        if self.sync.verify or st is None or entry is None or not entry.matches_stat(st):
            return False
        size = row.dist.size if row.dist.size is not None else st.st_size
        return entry.matches_record(size, row.dist.sha256, row.dist.md5)

    def _compare(self, plan: PypiPlan, state: _State, rows: Iterable[Row]) -> list[FileJob]:
        rows = [row for row in rows if row.key not in state.wanted]
        unknown = [row for row in rows if row.dist.size is None and not self._trusted(row, state)]
        if unknown:  # a PEP 503 page gives no sizes: the download must know what to expect
            sizes = self.client.sizes(row.dist for row in unknown)
            for row in unknown:
                row.dist = dataclasses.replace(row.dist, size=sizes[row.dist])
        jobs = []
        folders: dict[str, Path] = {}
        for row in rows:
            key, dist = row.key, row.dist
            state.wanted[key] = row
            if self._trusted(row, state):
                state.present.add(key)
                continue
            folder = folders.get(dist.project)
            if folder is None:
                folder = folders[dist.project] = self.files / dist.project
                folder.mkdir(exist_ok=True)
            st = state.on_disk.get(key)
            size = dist.size if dist.size is not None else -1
            job = FileJob(NAME, dist.filename, dist.url, str(folder), size, dist.sha256, dist.md5)
            if st is not None and st.st_size == size:
                job.check_first = True
                state.check += 1
                state.check_bytes += size
            else:
                state.files += 1
                state.bytes += max(size, 0)
                if st is not None:
                    state.bad[key] = f"size {st.st_size}, expected {size}"
            jobs.append(job)
        stats = self.sync.stats
        stats.files += sum(1 for j in jobs if not j.check_first)
        stats.bytes += sum(max(j.size, 0) for j in jobs if not j.check_first)
        return jobs

    def _announce(self, plan: PypiPlan, state: _State) -> None:
        leaving = [k for k in state.on_disk if k not in state.wanted]
        self.emit(
            SubdirPlanned(
                NAME,
                upstream=len(plan.rows),
                kept=len(state.wanted),
                present=len(state.present),
                files=state.files,
                bytes=state.bytes,
                check=state.check,
                check_bytes=state.check_bytes,
                delete=len(leaving) if self.settings.prune else 0,
            )
        )

    def _verified_path(self, dist, state: _State) -> Path | None:
        key = f"{dist.project}/{dist.filename}"
        return self.files / key if key in state.present else None

    # ---------------------------------------------------------------- downloading

    def _download(self, jobs: list[FileJob], state: _State) -> None:
        if not jobs:
            return
        pool, self.pool = self.pool, None  # one round of results a pool: the next round starts its own
        pool = pool or self.sync.worker_pool(len(jobs), pypi_policy(self.settings))
        try:
            for _, outcome in pool.results(jobs):
                if outcome is not None:
                    self._record(state, outcome)
        finally:
            pool.close()
        if self.sync.cancelled:
            raise Cancelled

    def _record(self, state: _State, outcome: Outcome) -> None:
        job, stats = outcome.job, self.sync.stats
        key = f"{os.path.basename(job.folder)}/{job.fn}"
        stats.fetched_bytes += outcome.fetched
        if outcome.action in ("checked", "repaired") or outcome.corrupt:
            stats.checked += 1
        if outcome.corrupt:
            stats.corrupt += 1
            state.bad[key] = outcome.corrupt
            self.emit(SyncWarning(NAME, f"{key}: bad on disk ({outcome.corrupt}), fetching it again"))
        if outcome.ok:
            assert outcome.verified is not None
            state.store.add(key, outcome.verified)
            state.present.add(key)
            state.bad.pop(key, None)
            if outcome.action != "checked":
                stats.downloaded += 1
                state.downloaded += 1
            stats.resumed += outcome.resumed
            self.emit(FileDone(NAME, job.fn, job.size, outcome.action, outcome.fetched, outcome.resumed))
            return
        stop = storage_failure(Path(job.folder), job.fn, outcome.errno)
        if stop is not None:
            raise stop
        state.store.forget(key)
        stats.failed += 1
        state.failed += 1
        reason = redact_url(outcome.reason)
        stats.failures.append((NAME, job.fn, reason))
        self.emit(FileFailed(NAME, job.fn, job.size, reason, outcome.attempts))

    # ---------------------------------------------------------------- pages, then pruning

    def _settle(self, plan: PypiPlan, state: _State) -> None:
        s = self.settings
        leaving = sorted(k for k in state.on_disk if k not in state.wanted)
        withheld = bool(leaving) and s.prune and _exceeds(len(leaving), len(state.on_disk), s.max_prune)
        if withheld and self.sync.force_prune:
            self.emit(
                SyncWarning(NAME, f"{len(leaving):,} files left the plan; removed anyway (--force-prune)")
            )
            withheld = False
        present = sorted(k for k in state.present if k in state.wanted)
        published: dict[str, list[Published]] = {name: [] for name in plan.projects}
        for key in present:
            row = state.wanted[key]
            entry = state.store.get(key)
            assert entry is not None
            metadata = self._metadata(state, key, row) if row.dist.kind == "wheel" else None
            published.setdefault(row.dist.project, []).append(
                Published(row.dist, entry.sha256, entry.size, metadata)
            )
        removed = 0
        if withheld:
            self.sync.stats.withheld.append(NAME)
            self.emit(
                SyncWarning(
                    NAME,
                    f"prune withheld: {len(leaving):,} of its {len(state.on_disk):,} files on disk left the "
                    f"plan, more than max_prune ({_percent(s.max_prune)}); nothing is removed and the "
                    "project pages stay as they were (cas-sync --force-prune removes them)",
                )
            )
            written = False
        else:
            written = False
            for name in sorted(set(published) | set(published_projects(self.mirror))):
                written |= write_project(self.mirror, name, published.get(name, []))
            for key, why in sorted(state.bad.items()):
                if self._remove(state, key):
                    removed += 1
                    self.emit(FileRemoved(NAME, key, f"bad on disk ({why}) and not fetched again"))
            if s.prune:
                for key in leaving:
                    if self._remove(state, key):
                        removed += 1
                        self.emit(FileRemoved(NAME, key, "left the plan"))
        self._sweep(state)
        keep = set(present) | {k + PYPI_METADATA_SUFFIX for k in present}
        state.store.compact(keep=keep | (set(leaving) if withheld else set()))
        stats = self.sync.stats
        stats.present += len(present) - state.downloaded
        stats.removed += removed
        stats.packages += len(present)
        done = SubdirDone(
            NAME,
            len(present),
            state.downloaded,
            state.failed,
            removed,
            written,
            len(leaving) if withheld else 0,
        )
        self.emit(done)

    def _metadata(self, state: _State, key: str, row: Row) -> str | None:
        """The sha256 of the wheel's `.metadata` beside it (PEP 658), written if it is not."""
        meta_key = key + PYPI_METADATA_SUFFIX
        path = self.files / meta_key
        entry = state.store.get(meta_key)
        try:
            if entry is not None and entry.matches_stat(path.stat()):
                return entry.sha256
        except FileNotFoundError:
            pass
        try:
            data = wheel_metadata(self.files / key, row.dist.project, str(row.dist.version))
        except MetadataError as exc:
            self.emit(SyncWarning(NAME, f"{key}: no .metadata served ({exc})"))
            return None
        atomic_write_bytes(path, data, durable=False)
        st = path.stat()
        sha = hashlib.sha256(data).hexdigest()
        state.store.add(meta_key, Verified(st.st_size, st.st_mtime_ns, sha))
        return sha

    def _remove(self, state: _State, key: str) -> bool:
        root = self.files
        gone = False
        for name in (key, key + PYPI_METADATA_SUFFIX):
            try:
                (root / name).unlink()
                gone = gone or name == key
            except FileNotFoundError:
                pass
            state.store.forget(name)
        folder = (root / key).parent
        try:
            folder.rmdir()  # the project's last file: its folder goes too
        except OSError:
            pass
        return gone

    def _sweep(self, state: _State) -> None:
        """Partial downloads nobody will finish: of files in place, or out of the plan."""
        root = self.files
        for project in {k.split("/", 1)[0] for k in [*state.wanted, *state.on_disk]}:
            try:
                entries = list(os.scandir(root / project))
            except FileNotFoundError:
                continue
            for entry in entries:
                if entry.name.startswith(".") and entry.name.endswith(".part"):
                    key = f"{project}/{entry.name[1:-5]}"
                    if key in state.present or key not in state.wanted:
                        Path(entry.path).unlink(missing_ok=True)


def _exceeds(deleting: int, on_disk: int, max_prune: float) -> bool:
    # the selection's rule, imported only when files leave (it loads the conda match specs)
    from casconsole.selection.warnings import prune_exceeds

    return prune_exceeds(deleting, on_disk, max_prune)


def _percent(share: float) -> str:
    from casconsole.selection.warnings import percent

    return percent(share)


def pypi_sections(settings: Settings) -> list[PypiSection]:
    """The sections a sync of `settings` carries: the PyPI mirror when its section names projects."""
    return [PypiSection(settings)] if settings.pypi.enabled else []


__all__ = ["PypiSection", "pypi_sections", "simple_dir", "store_path"]
