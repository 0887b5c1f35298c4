"""The sync engine: mirror the selected records of `remote_url` into `<channel_dir>/<subdir>/`.

    stats = Sync(settings, sink).run()         # or: run_sync(settings, sink)
    # from another thread: sync.cancel()

One run:
1. take the mirror's lock (SyncLocked when another sync holds it) and open the status log;
2. fetch every subdir's upstream repodata (conditional on the copy kept from the last run),
   refuse hostile records, and build the plan (the same selection as the dry run);
3. per subdir, compare the kept records with the disk: a file whose size and mtime are those
   recorded when it was last verified is trusted; one of the right size but not recorded (or
   every file, with `verify=True`) is hashed; the rest are downloaded, `concurrency` at a time
   (worker processes of a few threads, each with its own kept-alive connections);
4. when a subdir's files are all settled, write its `repodata.json` (+ `.zst`, atomically)
   listing exactly the present and verified files, records as upstream wrote them; only then
   remove the files that left the plan (`prune`) or were found bad and could not be fetched.

Safe by default: a platform upstream does not carry is left out (the others go on; an error
only when none is left); before any download the free space of the mirror's filesystem must
hold the plan's bytes and a margin; a subdir where more than `max_prune` of the files would be
deleted keeps its files and its previous repodata (the prune guard), unless `force_prune`.
A write refused by the disk (full, read-only, denied) stops the sync with a DiskError.

A sync killed at any moment leaves only complete, verified files under final names and a
repodata that names only present files; the next run resumes the partial downloads.
The core stays UI-free: progress goes to the `sink` as typed events (sync_events).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from casconsole.conda.rawrepodata import RawRepoData
from casconsole.conda.repodata import RepoData
from casconsole.errors import (
    EXIT_STORAGE,
    EXIT_USAGE,
    Cancelled,
    CasError,
    DiskError,
    RepoDataNotFound,
    SyncError,
    os_error_message,
)
from casconsole.events import Event, Sink, null_sink
from casconsole.layout import WORKERS_LOCK, channel_name_problem, state_dir
from casconsole.redact import redact_url
from casconsole.settings import Settings
from casconsole.sync.events import (
    FileDone,
    FileFailed,
    FileRemoved,
    FileRetry,
    RepodataFetched,
    SubdirDone,
    SubdirMissing,
    SubdirPlanned,
    SyncFinished,
    SyncStarted,
    SyncStats,
    SyncWarning,
)
from casconsole.sync.fetch import FileJob, Outcome
from casconsole.sync.lock import SyncLocked, lock_holder
from casconsole.sync.safety import redacted, storage_failure
from casconsole.sync.section import Section
from casconsole.sync.status import StatusLog, StatusReader, SyncStatus, log_path, read_status
from casconsole.sync.store import VerifiedStore
from casconsole.sync.target import BucketTarget, FolderTarget, sweep
from casconsole.sync.workers import WorkerConfig, WorkerPool, plan_processes
from casconsole.upstream.policy import NetworkPolicy
from casconsole.upstream.repodata import Upstream
from casconsole.upstream.screen import screen

# events whose text may hold a URL (with a token or a password in it): shown and logged redacted
_MAY_HOLD_URLS = (
    SyncStarted, RepodataFetched, SubdirMissing, SyncWarning, FileRetry, FileFailed, SyncFinished,
)  # fmt: skip

__all__ = [
    "Section",
    "StatusReader",
    "Sync",
    "SyncError",
    "SyncLocked",
    "SyncStats",
    "SyncStatus",
    "lock_holder",
    "log_path",
    "read_status",
    "run_sync",
]


@dataclass
class _Subdir:
    """One subdir's work and what came of it."""

    name: str
    folder: Path
    raw: RawRepoData
    store: VerifiedStore
    present: set[str] = field(default_factory=set)  # verified files, now or as they complete
    bad: dict[str, str] = field(default_factory=dict)  # files on disk found bad: fn -> why
    leaving: list[str] = field(default_factory=list)  # files on disk that left the plan
    wanted: set[str] = field(default_factory=set)  # files the plan keeps
    on_disk: int = 0  # package files in the folder when the sync began
    withheld: bool = False  # the prune guard holds this subdir back: nothing removed, repodata kept
    pending: int = 0
    downloaded: int = 0
    failed: int = 0


class Sync:
    """One sync of `settings`: call `run()` once; `cancel()` from any thread.

    `sink` receives the events, in the thread that runs `run()` (the download workers' events
    are relayed there). `verify=True` re-hashes every file on disk and repairs those that do
    not match. `force_prune=True` prunes even where more than `max_prune` of a subdir would go.
    `sections` run after the channel (`conda=False`: instead of it), in the same sync.
    """

    def __init__(
        self,
        settings: Settings,
        sink: Sink | None = None,
        *,
        verify: bool = False,
        force_prune: bool = False,
        sections: Sequence[Section] = (),
        conda: bool = True,
    ):
        self.settings = settings
        self.verify = verify
        self.force_prune = force_prune
        self.sections = tuple(sections)
        self.conda = conda
        self._sink = sink or null_sink
        self._emit_lock = threading.Lock()
        self._cancel = threading.Event()
        self._log: StatusLog | None = None
        self._upstream: Upstream | None = None  # while repodata is fetched: cancel() aborts it
        self._repodata_bytes: dict[str, int] = {}  # each subdir's upstream repodata JSON, in bytes
        self._largest: list[int] = []  # sizes of the files to download, for a bucket's work folder
        self.stats = SyncStats()
        self.target: FolderTarget | BucketTarget | None = None
        self._lost: str | None = None  # a bucket's lock taken over from this sync: why it stopped

    # ---- control

    def cancel(self) -> None:
        """Stop as soon as possible: transfers in flight are dropped (their partial files kept
        for the next run), nothing more is written, the lock is released. Thread-safe, and safe
        from a signal handler: no lock is taken."""
        self._cancel.set()  # the download loop tells the workers
        upstream = self._upstream
        if upstream is not None:  # a repodata transfer, stalled maybe: its socket is shut now
            upstream.abort()
        for section in self.sections:
            section.cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def cancel_event(self) -> threading.Event:
        return self._cancel

    def emit(self, event: Event) -> None:
        if isinstance(event, _MAY_HOLD_URLS):
            event = redacted(event)
        with self._emit_lock:
            if self._log is not None:
                try:
                    self._log(event)
                except OSError as exc:  # the disk refuses the log: the sync says so and goes on
                    self._drop_log(exc)
            self._sink(event)
        if isinstance(event, (SyncWarning, SubdirMissing)):
            self.stats.warnings += 1

    def _drop_log(self, exc: OSError) -> None:
        log, self._log = self._log, None
        if log is not None:
            try:
                log.close()
            except OSError:
                pass
        self._sink(SyncWarning("", f"status log: {os_error_message(exc)}; not written from here on"))

    # ---- the run

    def run(self) -> SyncStats:
        """Sync; returns the stats (state done, failed, cancelled or error).

        Raises SyncLocked when another sync holds the mirror; nothing is written then.
        """
        settings = self.settings
        _check_channel(settings)
        if settings.in_bucket and self.sections:
            names = ", ".join(section.name for section in self.sections)
            raise SyncError(
                f"{names}: kept in a mirror folder only (mirror_dir is a bucket, {settings.mirror_dir})"
            )
        if settings.in_bucket:
            target: FolderTarget | BucketTarget = BucketTarget(settings, self._warn, self._lease_lost)
        else:
            target = FolderTarget(settings)
        self.target = target
        try:
            lock = target.lock()
        except OSError as exc:  # mirror_dir cannot be written: denied, read-only, full
            raise DiskError.of(exc, "taking the mirror's lock") from None
        stats = self.stats
        stats.started = time.time()
        try:
            try:
                self._log = target.status_log()
            except OSError as exc:
                raise DiskError.of(exc, "opening the status log") from None
            self.emit(
                SyncStarted(
                    os.getpid(),
                    settings.remote_url if self.conda else ", ".join(s.source for s in self.sections),
                    str(settings.mirror_dir),
                    settings.channel_name if self.conda else ", ".join(s.name for s in self.sections),
                    [*(settings.subdirs if self.conda else []), *(s.name for s in self.sections)],
                    self.verify,
                )
            )
            if lock.stale:
                self.emit(SyncWarning("", f"took over the lock left by {lock.stale}, no longer running"))
            try:
                self._run_all()
                stats.state = "cancelled" if self.cancelled else ("failed" if stats.failed else "done")
            except Cancelled:
                stats.state = "cancelled"
            except CasError as exc:
                stats.state, stats.error, stats.error_status = "error", redact_url(str(exc)), exc.exit_status
            except OSError as exc:  # the mirror cannot be written: permissions, a full disk
                stats.state, stats.error, stats.error_status = "error", os_error_message(exc), EXIT_STORAGE
            except KeyboardInterrupt:
                self.cancel()
                stats.state = "cancelled"
                raise
            except BaseException as exc:
                stats.state, stats.error = "error", f"{type(exc).__name__}: {exc}"
                raise
            finally:
                if self._lost and stats.state == "cancelled":
                    stats.state, stats.error, stats.error_status = "error", self._lost, EXIT_USAGE
                stats.finished = time.time()
                self.emit(SyncFinished.of(stats))
        finally:
            if self._log is not None:
                try:
                    self._log.close()
                except OSError as exc:  # its last lines could not be written (a full disk)
                    self._drop_log(exc)
                self._log = None
            lock.release()
            target.close()
        return stats

    def _run_all(self) -> None:
        if self.conda:
            self._run()
        for section in self.sections:
            if self.cancelled:
                raise Cancelled
            section.run(self)

    def _warn(self, subdir: str, message: str) -> None:
        self.emit(SyncWarning(subdir, message))

    def _lease_lost(self) -> None:
        """A bucket's lock was taken over from this sync (cut off longer than its lease): it
        stops as for a cancel, and says why."""
        self._lost = (
            "the mirror's lock was taken over by another writer "
            "(this sync was cut off from the bucket longer than its lease)"
        )
        self.cancel()

    def _run(self) -> None:
        settings = self.settings
        # a first sync downloads for sure: its workers start now and get ready (an interpreter
        # each) while the repodata is fetched and planned; a re-sync starts them only if needed
        target = self.target
        assert target is not None
        first = not all(target.has_repodata(sd) for sd in settings.subdirs)
        pool = self._pool(None) if first else None
        try:
            upstream, raws, missing = self._fetch_all()
            if self.cancelled:
                raise Cancelled
            # imported here, once the workers are starting: the selection is a third of
            # cas-sync's import time, and their start overlaps it
            from casconsole.selection.plan import Plan

            local = target.sizes([sd for sd in settings.subdirs if sd in upstream])
            # no dependency check: the dry run's
            plan = Plan.build(settings, upstream, check=False, missing=missing, local=local)
            if plan.nothing_left:
                raise RepoDataNotFound(plan.nothing_left_message())
            for warning in plan.unmatched_warnings():
                self.emit(SyncWarning("", warning))
            subdirs: dict[str, _Subdir] = {}
            jobs: list[FileJob] = []
            for name, sp in plan.subdirs.items():
                sub, sub_jobs = self._compare(name, sp.repodata, sp.included(), raws[name])
                subdirs[name] = sub
                jobs.extend(sub_jobs)
            if self.cancelled:
                raise Cancelled
            self._check_space(subdirs)
            if pool is None and jobs:
                pool = self._pool(len(jobs))
            self._download(pool, jobs, subdirs)
        finally:
            if pool is not None:
                pool.close()  # stops the workers first if the sync ends early

    def worker_pool(self, jobs: int | None, policy: NetworkPolicy) -> WorkerPool:
        """Started download workers for a section, through its own network policy."""
        return self._pool(jobs, policy)

    def _pool(self, jobs: int | None, policy: NetworkPolicy | None = None) -> WorkerPool:
        """Download workers, started: `concurrency` downloads at a time in all, through `policy`
        (the settings' network policy unless a section has its own)."""
        s = self.settings
        processes, threads = plan_processes(s.concurrency, jobs)
        policy = policy or NetworkPolicy.of(s)
        bucket = self.target.storage.config if isinstance(self.target, BucketTarget) else None
        lock_path = str(state_dir(s.local_dir) / WORKERS_LOCK)
        config = WorkerConfig(policy, threads, lock_path, bucket)
        return WorkerPool(config, processes, self.emit, self._cancel).start()

    def _fetch_all(self) -> tuple[dict[str, RepoData], dict[str, RawRepoData], dict[str, str]]:
        """Every subdir's upstream repodata, through the one fetcher and its cache; and the
        platforms upstream does not carry (subdir -> why), left out."""
        upstream: dict[str, RepoData] = {}
        raws: dict[str, RawRepoData] = {}
        missing: dict[str, str] = {}

        def retrying(subdir: str, reason: str, delay: float) -> None:
            self.emit(SyncWarning(subdir, f"repodata: {reason}; trying again in {delay:.1f} s"))

        with Upstream.of(self.settings, cancel=self._cancel, on_retry=retrying) as source:
            self._upstream = source
            try:
                self._fetch_each(source, upstream, raws, missing)
            finally:
                self._upstream = None
        return upstream, raws, missing

    def _fetch_each(
        self,
        source: Upstream,
        upstream: dict[str, RepoData],
        raws: dict[str, RawRepoData],
        missing: dict[str, str],
    ) -> None:
        for subdir in self.settings.subdirs:
            if self.cancelled:
                raise Cancelled
            try:
                fetched = source.fetch(subdir)
            except RepoDataNotFound as exc:
                missing[subdir] = str(exc)
                self.stats.missing.append(subdir)
                self.emit(SubdirMissing(subdir, str(exc)))
                continue
            repodata = source.decode(fetched)
            raw = RawRepoData(fetched.data, fetched.url)
            self._repodata_bytes[subdir] = len(fetched.data)
            self.emit(RepodataFetched(subdir, fetched.url, len(repodata.records), fetched.not_modified))
            refused = screen(repodata, subdir, self.settings.base_url_origins)
            for message in [*repodata.warnings, *refused]:
                self.emit(SyncWarning(subdir, message))
            upstream[subdir], raws[subdir] = repodata, raw

    def _compare(
        self, subdir: str, repodata: RepoData, included: list, raw: RawRepoData
    ) -> tuple[_Subdir, list[FileJob]]:
        """What is present and verified, what to hash, what to download, what left the plan."""
        settings, target = self.settings, self.target
        assert target is not None
        folder = target.folder(subdir)
        sub = _Subdir(subdir, folder, raw, target.store(subdir))
        store = sub.store
        on_disk = target.scan(subdir)
        where = str(folder)
        bucket = target.in_bucket
        jobs: list[FileJob] = []
        wanted: set[str] = set()
        download_bytes = check_bytes = checks = 0
        for rec in included:
            fn = rec.fn
            if fn in wanted:  # named in both tables upstream: one file, fetched once
                continue
            wanted.add(fn)
            st = on_disk.get(fn)  # (size, mtime_ns or ETag)
            job = FileJob(subdir, fn, repodata.package_url(fn), where, rec.size, rec.sha256, rec.md5)
            if bucket:
                job.key = target.key(subdir, fn)
            if st is not None and st[0] == rec.size:
                entry = store.get(fn)
                if (
                    not self.verify
                    and entry is not None
                    and entry.matches(*st)
                    and entry.matches_record(rec.size, rec.sha256, rec.md5)
                ):
                    sub.present.add(fn)
                    continue
                job.check_first = True
                checks += 1
                check_bytes += rec.size
            else:
                download_bytes += rec.size
                self._largest.append(rec.size)
                if st is not None:  # not what the record says; removed unless replaced
                    sub.bad[fn] = f"size {st[0]}, expected {rec.size}"
            jobs.append(job)
        sub.leaving = sorted(fn for fn in on_disk if fn not in wanted)
        sub.wanted = wanted
        sub.on_disk = len(on_disk)
        sub.withheld = self._guard(sub)
        sub.pending = len(jobs)
        self.stats.present += len(sub.present)
        self.stats.files += len(jobs) - checks
        self.stats.bytes += download_bytes
        self.emit(
            SubdirPlanned(
                subdir,
                upstream=len(repodata.records),
                kept=len(included),
                present=len(sub.present),
                files=len(jobs) - checks,
                bytes=download_bytes,
                check=checks,
                check_bytes=check_bytes,
                delete=len(sub.leaving) if settings.prune and not sub.withheld else 0,
            )
        )
        return sub, jobs

    def _guard(self, sub: _Subdir) -> bool:
        """The prune guard: whether more than max_prune of the subdir's files would be deleted
        (an upstream serving an empty or half repodata, say); if so, the subdir keeps its files
        and its previous repodata, and the sync says so, unless `force_prune`."""
        from casconsole.selection.plan import percent, prune_exceeds

        s = self.settings
        if not s.prune or not prune_exceeds(len(sub.leaving), sub.on_disk, s.max_prune):
            return False
        share = f"{len(sub.leaving):,} of its {sub.on_disk:,} files on disk"
        if self.force_prune:
            self.emit(SyncWarning(sub.name, f"{share} left the plan; removed anyway (--force-prune)"))
            return False
        self.stats.withheld.append(sub.name)
        self.emit(
            SyncWarning(
                sub.name,
                f"prune withheld: {share} left the plan, more than max_prune ({percent(s.max_prune)}); "
                "nothing is removed and repodata.json stays as it was (cas-sync --force-prune removes them)",
            )
        )
        return True

    def _check_space(self, subdirs: dict[str, _Subdir]) -> None:
        """Refuse, before any download, a plan the mirror's filesystem has no room for: its bytes
        to download, the new repodata (json and zst, at most the upstream's size) and a margin."""
        repodata = sum(self._repodata_bytes.get(name, 0) for name, sub in subdirs.items() if not sub.withheld)
        in_flight = sum(sorted(self._largest)[-self.settings.concurrency :])  # a bucket's work folder
        assert self.target is not None
        self.target.check_space(self.stats.bytes, repodata, in_flight)

    def _download(self, pool: WorkerPool | None, jobs: list[FileJob], subdirs: dict[str, _Subdir]) -> None:
        """Run the jobs in the worker processes; settle each subdir as its last job ends.
        Outcomes are recorded here, in this thread."""
        for sub in subdirs.values():
            if sub.pending == 0:
                self._settle(sub)
        try:
            if jobs:
                assert pool is not None
                for job, outcome in pool.results(jobs):
                    if outcome is None:
                        continue
                    sub = subdirs[job.subdir]
                    self._record(sub, outcome)
                    sub.pending -= 1
                    if sub.pending == 0 and not self.cancelled:
                        self._settle(sub)
        except BaseException:
            for sub in subdirs.values():  # the error on its way is the one to tell, not a full
                try:  # disk met again while the verified records are flushed
                    sub.store.close()
                except OSError:
                    pass
            raise
        for sub in subdirs.values():
            sub.store.close()
        if self.cancelled:
            raise Cancelled

    def _record(self, sub: _Subdir, outcome: Outcome) -> None:
        job, stats = outcome.job, self.stats
        stats.fetched_bytes += outcome.fetched
        if outcome.action in ("checked", "repaired") or outcome.corrupt:
            stats.checked += 1
        if outcome.corrupt:
            stats.corrupt += 1
            sub.bad[job.fn] = outcome.corrupt
            self.emit(SyncWarning(sub.name, f"{job.fn}: bad on disk ({outcome.corrupt}), fetching it again"))
        if outcome.ok:
            assert outcome.verified is not None
            sub.store.add(job.fn, outcome.verified)
            sub.present.add(job.fn)
            sub.bad.pop(job.fn, None)
            if outcome.action != "checked":
                stats.downloaded += 1
                sub.downloaded += 1
            stats.resumed += outcome.resumed
            self.emit(FileDone(sub.name, job.fn, job.size, outcome.action, outcome.fetched, outcome.resumed))
        else:
            assert self.target is not None
            stop = storage_failure(self.target.where(sub.name), job.fn, outcome.errno)
            if stop is not None:  # every other file would fail alike: the sync stops here
                raise stop
            sub.store.forget(job.fn)
            stats.failed += 1
            sub.failed += 1
            reason = redact_url(outcome.reason)
            stats.failures.append((sub.name, job.fn, reason))
            self.emit(FileFailed(sub.name, job.fn, job.size, reason, outcome.attempts))

    def _settle(self, sub: _Subdir) -> None:
        """Write the subdir's repodata from its verified files, then remove what must go."""
        if sub.withheld:
            self._hold_back(sub)
            return
        target = self.target
        assert target is not None
        data = sub.raw.encode(sub.present)
        current = target.current(sub.name)
        same = current.data == data and current.has_zst
        if not same:
            target.write(sub.name, data, current)
        removed = 0
        for fn, why in sorted(sub.bad.items()):  # bad on disk and not fetched again: never served
            if target.remove(sub.name, fn):
                removed += 1
                self.emit(FileRemoved(sub.name, fn, f"bad on disk ({why}) and not fetched again"))
        if self.settings.prune:
            for fn in sub.leaving:
                if target.remove(sub.name, fn):
                    removed += 1
                    self.emit(FileRemoved(sub.name, fn, "left the plan"))
                    sub.store.forget(fn)
        sweep(sub.folder, sub.present, sub.wanted, self.stats.started)
        self.stats.removed += removed
        self.stats.packages += len(sub.present)
        sub.store.compact(keep=sub.present)
        self.emit(
            SubdirDone(
                sub.name, len(sub.present), sub.downloaded, sub.failed, removed, repodata_written=not same
            )
        )

    def _hold_back(self, sub: _Subdir) -> None:
        """A subdir the prune guard holds back: its previous repodata.json stays (it names only
        files that are still there, since nothing is removed), files fetched now wait for the
        next sync to be listed, and no file is deleted, not even one found bad (the kept
        repodata may name it)."""
        sweep(sub.folder, sub.present, sub.wanted, self.stats.started)
        assert self.target is not None
        packages = self.target.count_records(sub.name)
        self.stats.packages += packages
        sub.store.compact(keep=sub.present | set(sub.leaving))
        done = SubdirDone(sub.name, packages, sub.downloaded, sub.failed, 0, False, withheld=len(sub.leaving))
        self.emit(done)


def _check_channel(settings: Settings) -> None:
    problem = channel_name_problem(settings.channel_name)
    if problem:
        raise SyncError(f"channel_name: {problem}")


def run_sync(
    settings: Settings,
    sink: Sink | None = None,
    *,
    verify: bool = False,
    force_prune: bool = False,
    cancel: threading.Event | None = None,
) -> SyncStats:
    """Sync once (see Sync); setting `cancel` from another thread stops it cleanly."""
    sync = Sync(settings, sink, verify=verify, force_prune=force_prune)
    if cancel is None:
        return sync.run()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if cancel.wait(0.2):
                sync.cancel()
                return

    watcher = threading.Thread(target=watch, daemon=True, name="cas-sync-cancel")
    watcher.start()
    try:
        return sync.run()
    finally:
        done.set()
