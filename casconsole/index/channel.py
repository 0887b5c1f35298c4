"""`conda index` for a channel folder: incremental, with a status that needs no index run.

A channel is a folder of subdir folders (`linux-64`, `noarch`, ...). For each subdir,
`index_channel` reads every package's `info/index.json`, hashes the file (md5, sha256) and writes
`repodata.json` and `repodata.json.zst`; then `channeldata.json` at the channel root. Every output
replaces the old one atomically, so a server may serve the channel while it is indexed.

What a package gave is cached in `<channel>/.cache/index.msgpack`, keyed by file name, size and
mtime: a re-run reads only new or changed files, in a process pool, and a run over an unchanged
channel opens no package and rewrites nothing. Bad packages are reported (`Problem`) and left out.

`index_status` compares the folder with the cache and the outputs without indexing; the console
shows it. Both functions are UI-free: progress goes to an optional sink of `Event`s.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import msgspec

from casconsole.conda.repodata import write_repodata
from casconsole.events import Sink, null_sink
from casconsole.fsutil import atomic_write_bytes
from casconsole.index.cache import (
    CACHE_DIR,
    OUTPUTS,
    Cache,
    Entry,
    Scan,
    SubdirCache,
    channel_lock,
    channeldata_fingerprint,
    check_channel,
    fingerprint,
    load_cache,
    outputs_intact,
    save_cache,
    scan_subdir,
    subdir_names,
)
from casconsole.index.events import (
    ChannelError,
    ChannelStatus,
    IndexFinished,
    IndexStarted,
    IndexStats,
    PackageRead,
    Problem,
    ProblemFound,
    SubdirIndexed,
    SubdirStats,
    SubdirStatus,
)
from casconsole.index.read import ReadResult, read_batch, read_package

__all__ = [
    "ChannelError",
    "ChannelStatus",
    "IndexFinished",
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
# below these, reading in this process beats starting a pool
_INLINE_MAX_FILES = 8
_INLINE_MAX_BYTES = 16 << 20
_BATCH_MAX_FILES = 32
_BATCH_MAX_BYTES = 32 << 20


# -- reading -----------------------------------------------------------------------------------

_Todo = tuple[str, str, int]  # subdir, file name, size


def _worker_init() -> None:
    # Ctrl-C is the parent's to handle: workers stay quiet instead of printing tracebacks
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Hold SIGINT back while worker processes are forked: a Ctrl-C landing in one of fork's
    own handlers would be swallowed there (printed as "Exception ignored", the run going on);
    held, it lands right after, as a KeyboardInterrupt like any other."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _pool_context() -> multiprocessing.context.BaseContext:
    """fork where it is safe (Linux, no other thread: workers start at once, with nothing to
    import), else a fresh interpreter: the console indexes from a thread, and forking a threaded
    process can deadlock the child on a lock some other thread held."""
    if sys.platform.startswith("linux") and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("spawn")


def _batches(todo: list[_Todo], workers: int) -> list[list[_Todo]]:
    per_batch = max(1, min(_BATCH_MAX_FILES, len(todo) // (workers * 4)))
    batches: list[list[_Todo]] = []
    current: list[_Todo] = []
    current_bytes = 0
    for item in todo:
        if current and (len(current) >= per_batch or current_bytes + item[2] > _BATCH_MAX_BYTES):
            batches.append(current)
            current, current_bytes = [], 0
        current.append(item)
        current_bytes += item[2]
    if current:
        batches.append(current)
    return batches


def _read_all(
    channel: Path,
    todo: list[_Todo],
    workers: int,
    on_result: Callable[[_Todo, ReadResult | None], None],
) -> None:
    """Read `todo`, calling `on_result` in this thread as each file is done."""
    small = len(todo) <= _INLINE_MAX_FILES and sum(t[2] for t in todo) <= _INLINE_MAX_BYTES
    if workers <= 1 or small:
        for item in todo:
            on_result(item, read_package(str(channel / item[0] / item[1]), item[0]))
        return
    batches = _batches(todo, workers)
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(batches)),
        mp_context=_pool_context(),
        initializer=_worker_init,
    )
    try:
        with _interrupts_held():  # the first submit forks the workers
            futures = {
                pool.submit(read_batch, [(str(channel / s / fn), s) for s, fn, _ in batch]): batch
                for batch in batches
            }
        for future in as_completed(futures):
            for item, result in zip(futures[future], future.result(), strict=True):
                on_result(item, result)
    except BrokenProcessPool as exc:
        raise ChannelError(
            f"{channel}: a package reader process died ({exc}); "
            "run again with one worker to find the file that kills it"
        ) from exc
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# -- indexing ----------------------------------------------------------------------------------


class _Removed(msgspec.Struct):
    removed: list[str] = []


def _existing_removed(path: Path) -> list[str]:
    """The `removed` list of an existing repodata.json, which re-indexing keeps."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=_Removed).removed
    except (OSError, msgspec.DecodeError):
        return []


def _record_count(sub: SubdirCache) -> int:
    """Records in the subdir's current outputs."""
    return sum(1 for fn in sub.published if fn in sub.files and sub.files[fn].record is not None)


def _write_subdir(scan: Scan, sub: SubdirCache) -> int:
    packages: dict[str, msgspec.Raw] = {}
    conda: dict[str, msgspec.Raw] = {}
    for fn in sorted(sub.published):
        record = sub.files[fn].record
        if record is not None:
            (conda if fn.endswith(".conda") else packages)[fn] = msgspec.Raw(record)
    repodata = {
        "info": {"subdir": scan.subdir},
        "packages": packages,
        "packages.conda": conda,
        "removed": _existing_removed(scan.path / "repodata.json"),
        "repodata_version": REPODATA_VERSION,
    }
    write_repodata(scan.path, repodata)
    return len(packages) + len(conda)


def index_channel(
    channel_dir: str | os.PathLike[str],
    *,
    sink: Sink = null_sink,
    strict: bool = False,
    workers: int | None = None,
    subdirs: Iterable[str] | None = None,
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

    Safe to call from a thread (the console does): workers then start as fresh interpreters,
    which, as always with multiprocessing, import the program's `__main__` module, so a script
    calling this needs the usual `if __name__ == "__main__":` guard.

    Raises `ChannelError` for a folder that is not a channel or is being indexed already.
    """
    started = time.perf_counter()
    channel = prepare_channel(Path(channel_dir))
    with channel_lock(channel):
        return index_locked(channel, started, sink=sink, strict=strict, workers=workers, subdirs=subdirs)


def prepare_channel(path: Path) -> Path:
    """The channel folder checked, with its `noarch/` and cache folder made (before its lock,
    which lives in the cache folder)."""
    channel = check_channel(path)
    try:
        (channel / "noarch").mkdir(exist_ok=True)
        (channel / CACHE_DIR).mkdir(exist_ok=True)
    except OSError as exc:
        raise ChannelError(f"{channel}: cannot write into it ({exc.strerror or exc})") from exc
    return channel


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
    workers = workers or os.cpu_count() or 1
    stats = IndexStats(channel=channel)
    cache = load_cache(channel)
    names = subdir_names(channel)
    if subdirs is not None:
        only = set(subdirs)
        if not (channel / "noarch" / "repodata.json").exists():
            only.add("noarch")
        names = [name for name in names if name in only]
    scans = {s: scan_subdir(channel, s) for s in names}
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
            channel=str(channel),
            subdirs=tuple(scans),
            packages=sum(len(s.files) for s in scans.values()),
            to_read=len(todo),
            to_read_bytes=sum(t[2] for t in todo),
        )
    )
    for scan in scans.values():
        for stray in scan.strays:
            report(stray)
        files = cache.subdirs[scan.subdir].files
        for fn, key in sorted(scan.files.items()):
            entry = files.get(fn)
            if entry and entry.problem and (entry.size, entry.mtime_ns) == key:
                report(Problem(scan.subdir, fn, entry.problem))  # remembered, not re-read

    def on_result(item: _Todo, result: ReadResult | None) -> None:
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
        _read_all(channel, todo, workers, on_result)
    finally:
        if todo or forgot or dirty or known:
            save_cache(channel, cache)  # what was read is kept, even on Ctrl-C

    stats.problems = sorted(problems)
    stats.withheld = strict and bool(problems)
    if not stats.withheld:
        for scan in scans.values():
            per_subdir[scan.subdir].written = _publish_subdir(scan, cache.subdirs[scan.subdir])
        stats.channeldata_written = _publish_channeldata(channel, cache)
        if stats.written:
            save_cache(channel, cache)
    for subdir, sub_stats in per_subdir.items():
        sub_stats.packages = _record_count(cache.subdirs[subdir])
        sink(SubdirIndexed(subdir, sub_stats.packages, sub_stats.written))

    stats.subdirs = list(per_subdir.values())
    stats.seconds = time.perf_counter() - started
    sink(
        IndexFinished(
            channel=str(channel),
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


def _plan_reads(
    cache: Cache, scans: dict[str, Scan], per_subdir: dict[str, SubdirStats]
) -> tuple[list[_Todo], bool]:
    """The files to read (new, or changed by size or mtime); forgets deleted ones, and says
    whether it did."""
    todo: list[_Todo] = []
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


def _publish_subdir(scan: Scan, sub: SubdirCache) -> bool:
    """Write the subdir's outputs unless they already show exactly its current files."""
    current = {fn: (e.size, e.mtime_ns) for fn, e in sub.files.items() if fn in scan.files}
    if current == sub.published and outputs_intact(scan.path, sub):
        return False
    sub.published = current
    _write_subdir(scan, sub)
    sub.outputs = fingerprint(scan.path, OUTPUTS)
    sub.indexed_at = time.time()
    sub.in_channeldata = False
    return True


def _publish_channeldata(channel: Path, cache: Cache) -> bool:
    """Write channeldata.json unless it is intact and no subdir changed since it was written."""
    subdirs = sorted(cache.subdirs)
    intact = (
        cache.channeldata is not None
        and cache.channeldata_subdirs == subdirs
        and channeldata_fingerprint(channel) == tuple(cache.channeldata)
    )
    if intact and all(sub.in_channeldata for sub in cache.subdirs.values()):
        return False
    _write_channeldata(channel, cache)
    cache.channeldata = channeldata_fingerprint(channel)
    cache.channeldata_subdirs = subdirs
    for sub in cache.subdirs.values():
        sub.in_channeldata = True
    return True


def _write_channeldata(channel: Path, cache: Cache) -> None:
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
    atomic_write_bytes(channel / "channeldata.json", msgspec.json.format(msgspec.json.encode(data), indent=2))


# -- status ------------------------------------------------------------------------------------


def index_status(channel_dir: str | os.PathLike[str]) -> ChannelStatus:
    """How the index of `channel_dir` compares with its files, without indexing or writing.

    Per subdir (always including `noarch`): fresh or stale; how many package files are new,
    changed or missing since the last index; how many were left out; when it was last written.
    Raises `ChannelError` for a folder that is not a channel.
    """
    channel = check_channel(Path(channel_dir))
    cache = load_cache(channel)
    statuses = []
    for subdir in sorted({*subdir_names(channel), "noarch"}):
        scan = scan_subdir(channel, subdir)
        sub = cache.subdirs.get(subdir, SubdirCache())
        published = sub.published
        new = sum(1 for fn in scan.files if fn not in published)
        changed = sum(1 for fn, key in scan.files.items() if fn in published and published[fn] != key)
        missing = sum(1 for fn in published if fn not in scan.files)
        bad = sum(1 for fn in published if fn in sub.files and sub.files[fn].problem)
        outputs_changed = not outputs_intact(scan.path, sub)
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
        and channeldata_fingerprint(channel) == tuple(cache.channeldata)
        and cache.channeldata_subdirs == [s.subdir for s in statuses]
        and all(sub.in_channeldata for sub in cache.subdirs.values())
    )
    return ChannelStatus(channel, tuple(statuses), channeldata_fresh)
