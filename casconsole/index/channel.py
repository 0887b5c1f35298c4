"""`conda index` for a channel folder (or a channel in a bucket): incremental, with a status that
needs no index run.

A channel is a folder of subdir folders (`linux-64`, `noarch`, ...). For each subdir,
`index_channel` reads every package's `info/index.json`, hashes the file (md5, sha256) and writes
`repodata.json` and `repodata.json.zst`; then `channeldata.json` at the channel root. Every output
replaces the old one atomically, so a server may serve the channel while it is indexed.

What a package gave is cached in `<channel>/.cache/index.msgpack`, keyed by file name, size and
mtime: a re-run reads only new or changed files, in a process pool, and a run over an unchanged
channel opens no package and rewrites nothing. Bad packages are reported (`Problem`) and left out.

`index_status` compares the folder with the cache and the outputs without indexing; the console
shows it. Both functions are UI-free: progress goes to an optional sink of `Event`s.

A channel may be `s3://bucket/prefix/<channel>` (index/bucket.py): the same run, over objects,
its writes conditional on the versions read at its start; when another writer wrote in between
(WriteConflict), the run starts again from the fresh listing, so no writer loses a record.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterable
from pathlib import Path

import msgspec

from casconsole.events import Sink, null_sink
from casconsole.index.cache import OUTPUTS, Cache, Entry, Scan, SubdirCache
from casconsole.index.events import (
    ChannelError,
    ChannelStatus,
    IndexFinished,
    IndexRaced,
    IndexStarted,
    IndexStats,
    PackageRead,
    Problem,
    ProblemFound,
    SubdirIndexed,
    SubdirStats,
    SubdirStatus,
)
from casconsole.index.files import FolderFiles
from casconsole.index.pool import Todo
from casconsole.index.read import ReadResult

__all__ = [
    "ChannelError",
    "ChannelStatus",
    "IndexFinished",
    "IndexRaced",
    "IndexStarted",
    "IndexStats",
    "PackageRead",
    "Problem",
    "ProblemFound",
    "SubdirIndexed",
    "SubdirStats",
    "SubdirStatus",
    "index_channel",
    "index_status",
]

REPODATA_VERSION = 1
RACE_TRIES = 8  # attempts of a bucket run whose writes another writer keeps overtaking


def channel_files(channel: object, settings=None) -> FolderFiles:
    """FolderFiles for a folder; for `s3://...` (a BucketURL) BucketFiles, opened with the
    settings' endpoint and credentials (loaded when not given)."""
    from casconsole.layout import BucketURL

    if isinstance(channel, BucketURL):
        from casconsole.index.bucket import BucketFiles

        return BucketFiles.open(channel, settings)
    return FolderFiles(Path(channel))  # type: ignore[arg-type]


# -- indexing ----------------------------------------------------------------------------------


def _record_count(sub: SubdirCache) -> int:
    """Records in the subdir's current outputs."""
    return sum(1 for fn in sub.published if fn in sub.files and sub.files[fn].record is not None)


def _repodata(files: FolderFiles, scan: Scan, sub: SubdirCache) -> dict:
    packages: dict[str, msgspec.Raw] = {}
    conda: dict[str, msgspec.Raw] = {}
    for fn in sorted(sub.published):
        record = sub.files[fn].record
        if record is not None:
            (conda if fn.endswith(".conda") else packages)[fn] = msgspec.Raw(record)
    return {
        "info": {"subdir": scan.subdir},
        "packages": packages,
        "packages.conda": conda,
        "removed": files.existing_removed(scan.subdir),
        "repodata_version": REPODATA_VERSION,
    }


def index_channel(
    channel_dir: str | os.PathLike[str],
    *,
    sink: Sink = null_sink,
    strict: bool = False,
    workers: int | None = None,
    subdirs: Iterable[str] | None = None,
    settings=None,
) -> IndexStats:
    """Index the channel folder `channel_dir` and return what was done.

    With `subdirs`, only those subdir folders are indexed (`conda index <channel>/linux-64`, as
    the cas-mirror FAQ runs it), and `noarch` too while it has no index yet (clients need one);
    the other subdirs keep their index and their place in channeldata.json.

    Reads only package files that are new or changed since the last run (by name, size and
    mtime), in `workers` processes (default: one per CPU); writes each subdir's repodata.json and
    .zst, and channeldata.json, only where they would change. `noarch` is created if absent.
    Bad packages and stray files become `stats.problems` (and `ProblemFound` events) and are left
    out. With `strict`, any problem leaves every output as it was (the cache still learns what
    was read); `stats.withheld` says so.

    `channel_dir` may be a BucketURL (`s3://...`): `settings` (the caller's, required then) say how
    to reach the bucket. A write another writer overtook starts the run again (`IndexRaced`).

    Safe to call from a thread (the console does): workers then start as fresh interpreters,
    which, as always with multiprocessing, import the program's `__main__` module, so a script
    calling this needs the usual `if __name__ == "__main__":` guard.

    Raises `ChannelError` for a folder that is not a channel or is being indexed already.
    """
    from casconsole.storage import WriteConflict

    started = time.perf_counter()
    files = channel_files(channel_dir, settings)
    workers = workers or os.cpu_count() or 1
    files.prepare()
    stats = IndexStats(channel=files.channel)
    try:
        with files.lock():
            cache = files.load_cache()
            for attempt in range(1, RACE_TRIES + 1):
                try:
                    per_subdir = _run(files, cache, stats, sink, strict, workers, subdirs)
                    break
                except WriteConflict as exc:
                    if attempt == RACE_TRIES:
                        raise ChannelError(f"{exc}; gave up after {RACE_TRIES} attempts") from None
                    sink(IndexRaced(files.where, str(exc), attempt))
                    time.sleep(random.uniform(0.05, 0.2) * attempt)  # two racers part ways
    finally:
        if files.in_bucket:
            files.close()
    return _finish(files, stats, per_subdir, started, sink)


def prepare_channel(path: Path) -> Path:
    """The channel folder checked, with its `noarch/` and cache folder made (before its lock,
    which lives in the cache folder)."""
    files = FolderFiles(path)
    files.prepare()
    return files.channel


def index_locked(
    channel: Path,
    started: float,
    *,
    sink: Sink = null_sink,
    strict: bool = False,
    workers: int | None = None,
    subdirs: Iterable[str] | None = None,
    known: dict[tuple[str, str], ReadResult] | None = None,
) -> IndexStats:
    """`index_channel`'s work, for a caller holding the channel's lock (an upload holds it
    from placing its file to the end of this run). `known` gives files already read, keyed by
    (subdir, file name): taken as read while their size and mtime are those of the result."""
    files = FolderFiles(channel)
    stats = IndexStats(channel=files.channel)
    cache = files.load_cache()
    per_subdir = _run(files, cache, stats, sink, strict, workers or os.cpu_count() or 1, subdirs, known)
    return _finish(files, stats, per_subdir, started, sink)


def _finish(files, stats: IndexStats, per_subdir: dict, started: float, sink: Sink) -> IndexStats:
    stats.subdirs = list(per_subdir.values())
    stats.seconds = time.perf_counter() - started
    sink(
        IndexFinished(
            channel=files.where,
            packages=stats.packages,
            read=stats.read,
            cached=stats.cached,
            problems=len(stats.problems),
            written=stats.written,
            withheld=stats.withheld,
            seconds=stats.seconds,
        )
    )
    return stats


def _run(files, cache: Cache, stats: IndexStats, sink: Sink, strict: bool, workers: int, subdirs, known=None):
    """One attempt: scan, read what is new (or `known` already), write what changed; per-subdir
    stats."""
    files.begin()
    names = files.subdir_names()
    if not files.in_bucket or "noarch" not in names:
        names = sorted({*names, "noarch"})  # noarch always has an index (an empty one at first)
    if subdirs is not None:
        only = set(subdirs)
        if not files.has_index("noarch"):
            only.add("noarch")
        names = [name for name in names if name in only]
    scans = {s: files.scan(s) for s in names}
    if subdirs is None:  # subdir folders gone since the last run leave the cache
        dirty = set(cache.subdirs) != set(scans)
        cache.subdirs = {s: cache.subdirs.get(s, SubdirCache()) for s in scans}
    else:
        dirty = any(s not in cache.subdirs for s in scans)
        cache.subdirs.update({s: cache.subdirs.get(s, SubdirCache()) for s in scans})
    per_subdir = {s: SubdirStats(s) for s in scans}
    todo, forgot = _plan_reads(cache, scans, per_subdir)
    problems: list[Problem] = []

    def report(problem: Problem) -> None:
        problems.append(problem)
        sink(ProblemFound(problem.subdir, problem.fn, problem.reason))

    sink(
        IndexStarted(
            channel=files.where,
            subdirs=tuple(scans),
            packages=sum(len(s.files) for s in scans.values()),
            to_read=len(todo),
            to_read_bytes=sum(t[2] for t in todo),
        )
    )
    for scan in scans.values():
        for stray in scan.strays:
            report(stray)
        cached = cache.subdirs[scan.subdir].files
        for fn, key in sorted(scan.files.items()):
            entry = cached.get(fn)
            if entry and entry.problem and (entry.size, entry.mtime_ns) == key:
                report(Problem(scan.subdir, fn, entry.problem))  # remembered, not re-read

    def on_result(item: Todo, result: ReadResult | None) -> None:
        subdir, fn, _ = item
        if result is None:  # deleted since the scan: it simply is not there
            scans[subdir].files.pop(fn, None)
            cache.subdirs[subdir].files.pop(fn, None)
            return
        cache.subdirs[subdir].files[fn] = Entry(
            result.size, result.mtime_ns, result.record, result.extra, result.problem
        )
        per_subdir[subdir].read += 1
        sink(PackageRead(subdir, fn, result.size, result.problem))
        if result.problem:
            report(Problem(subdir, fn, result.problem))

    if known:
        unread = []
        for item in todo:
            result = known.get(item[:2])
            if result is not None and (result.size, result.mtime_ns) == scans[item[0]].files.get(item[1]):
                on_result(item, result)
            else:
                unread.append(item)
        todo = unread
    try:
        files.read(todo, workers, on_result)
    finally:
        if todo or forgot or dirty or known:
            files.save_cache(cache)  # what was read is kept, even on Ctrl-C

    stats.problems = sorted(problems)
    stats.withheld = strict and bool(problems)
    if not stats.withheld:
        for scan in scans.values():
            per_subdir[scan.subdir].written = _publish_subdir(files, scan, cache.subdirs[scan.subdir])
        stats.channeldata_written = _publish_channeldata(files, cache)
        if stats.written:
            files.save_cache(cache)
    for subdir, sub_stats in per_subdir.items():
        sub_stats.packages = _record_count(cache.subdirs[subdir])
        sink(SubdirIndexed(subdir, sub_stats.packages, sub_stats.written))
    return per_subdir


def _plan_reads(
    cache: Cache, scans: dict[str, Scan], per_subdir: dict[str, SubdirStats]
) -> tuple[list[Todo], bool]:
    """The files to read (new, or changed by size or mtime); forgets deleted ones, and says
    whether it did."""
    todo: list[Todo] = []
    forgot = False
    for subdir, scan in scans.items():
        sub, sub_stats = cache.subdirs[subdir], per_subdir[subdir]
        for fn in [fn for fn in sub.files if fn not in scan.files]:
            del sub.files[fn]
            forgot = True
        sub_stats.gone = sum(1 for fn in sub.published if fn not in scan.files)
        for fn, (size, mtime_ns) in sorted(scan.files.items()):
            entry = sub.files.get(fn)
            if entry is None or entry.size != size or entry.mtime_ns != mtime_ns:
                todo.append((subdir, fn, size))
            else:
                sub_stats.cached += 1
    return todo, forgot


def _intact(files, subdir: str, sub: SubdirCache) -> bool:
    """The subdir's outputs are all there, exactly as the last index run wrote them."""
    return len(sub.outputs) == len(OUTPUTS) and files.outputs(subdir) == sub.outputs


def _publish_subdir(files, scan: Scan, sub: SubdirCache) -> bool:
    """Write the subdir's outputs unless they already show exactly its current files."""
    current = {fn: (e.size, e.mtime_ns) for fn, e in sub.files.items() if fn in scan.files}
    if current == sub.published and _intact(files, scan.subdir, sub):
        return False
    previous = sub.published
    sub.published = current
    try:
        files.write_repodata(scan.subdir, _repodata(files, scan, sub))
    except BaseException:
        sub.published = previous  # not written: the next attempt must see it as changed
        raise
    sub.outputs = files.outputs(scan.subdir)
    sub.indexed_at = time.time()
    sub.in_channeldata = False
    return True


def _publish_channeldata(files, cache: Cache) -> bool:
    """Write channeldata.json unless it is intact and no subdir changed since it was written."""
    subdirs = sorted(cache.subdirs)
    intact = (
        cache.channeldata is not None
        and cache.channeldata_subdirs == subdirs
        and files.channeldata_stamp() == tuple(cache.channeldata)
    )
    if intact and all(sub.in_channeldata for sub in cache.subdirs.values()):
        return False
    files.write_channeldata(_channeldata(cache))
    cache.channeldata = files.channeldata_stamp()
    cache.channeldata_subdirs = subdirs
    for sub in cache.subdirs.values():
        sub.in_channeldata = True
    return True


def _channeldata(cache: Cache) -> bytes:
    from casconsole.index.channeldata import build_channeldata

    packages = {
        subdir: [
            (fn, sub.files[fn].record, sub.files[fn].extra or b"{}")
            for fn in sub.published
            if sub.files[fn].record is not None
        ]
        for subdir, sub in cache.subdirs.items()
    }
    data = build_channeldata(packages)  # type: ignore[arg-type]
    return msgspec.json.format(msgspec.json.encode(data), indent=2)


# -- status ------------------------------------------------------------------------------------


def index_status(channel_dir: str | os.PathLike[str], settings=None) -> ChannelStatus:
    """How the index of `channel_dir` compares with its files, without indexing or writing.

    Per subdir (always including `noarch`): fresh or stale; how many package files are new,
    changed or missing since the last index; how many were left out; when it was last written.
    Raises `ChannelError` for a folder that is not a channel.
    """
    files = channel_files(channel_dir, settings)
    try:
        return _status(files)
    finally:
        if files.in_bucket:
            files.close()


def _status(files) -> ChannelStatus:
    files.begin()
    cache = files.load_cache()
    statuses = []
    for subdir in sorted({*files.subdir_names(), "noarch"}):
        scan = files.scan(subdir)
        sub = cache.subdirs.get(subdir, SubdirCache())
        published = sub.published
        new = sum(1 for fn in scan.files if fn not in published)
        changed = sum(1 for fn, key in scan.files.items() if fn in published and tuple(published[fn]) != key)
        missing = sum(1 for fn in published if fn not in scan.files)
        bad = sum(1 for fn in published if fn in sub.files and sub.files[fn].problem)
        outputs_changed = not _intact(files, subdir, sub)
        statuses.append(
            SubdirStatus(
                subdir=subdir,
                fresh=not (new or changed or missing or outputs_changed),
                packages=_record_count(sub),
                new=new,
                changed=changed,
                missing=missing,
                problems=bad + len(scan.strays),
                indexed_at=sub.indexed_at,
                outputs_changed=outputs_changed,
            )
        )
    channeldata_fresh = (
        cache.channeldata is not None
        and files.channeldata_stamp() == tuple(cache.channeldata)
        and cache.channeldata_subdirs == [s.subdir for s in statuses]
        and all(sub.in_channeldata for sub in cache.subdirs.values())
    )
    return ChannelStatus(files.channel, tuple(statuses), channeldata_fresh)
