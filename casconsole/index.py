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
import dataclasses
import datetime
import multiprocessing
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from casconsole.archive import split_package_name
from casconsole.events import Event, Sink, null_sink
from casconsole.fsutil import atomic_write_bytes, write_repodata
from casconsole.index_read import ReadResult, read_batch, read_package

__all__ = [
    "KNOWN_SUBDIRS",
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

KNOWN_SUBDIRS = frozenset(
    {
        "noarch",
        "emscripten-wasm32",
        "wasi-wasm32",
        "freebsd-64",
        "linux-32",
        "linux-64",
        "linux-aarch64",
        "linux-armv6l",
        "linux-armv7l",
        "linux-ppc64",
        "linux-ppc64le",
        "linux-riscv32",
        "linux-riscv64",
        "linux-s390x",
        "osx-64",
        "osx-arm64",
        "win-32",
        "win-64",
        "win-arm64",
        "zos-z",
    }
)
REPODATA_VERSION = 1
CACHE_DIR = ".cache"
_CACHE_FILE = "index.msgpack"
_LOCK_FILE = "index.lock"
_CACHE_VERSION = 1
_OUTPUTS = ("repodata.json", "repodata.json.zst")
# files a channel tool may leave in a subdir: not packages, not stray either
_CHANNEL_FILES = frozenset(
    {
        "repodata.json",
        "repodata.json.zst",
        "repodata.json.bz2",
        "repodata_from_packages.json",
        "repodata_from_packages.json.zst",
        "repodata_from_packages.json.bz2",
        "current_repodata.json",
        "current_repodata.json.zst",
        "current_repodata.json.bz2",
        "repodata_shards.msgpack.zst",
        "shards",
        "patch_instructions.json",
        "run_exports.json",
        "run_exports.json.zst",
        "index.html",
    }
)
# below these, reading in this process beats starting a pool
_INLINE_MAX_FILES = 8
_INLINE_MAX_BYTES = 16 << 20
_BATCH_MAX_FILES = 32
_BATCH_MAX_BYTES = 32 << 20


class ChannelError(Exception):
    """A folder that cannot be indexed or checked; the message says why, for a user."""


@dataclass(frozen=True, order=True)
class Problem:
    """A file left out of the index, and why."""

    subdir: str
    fn: str
    reason: str

    def __str__(self) -> str:
        return f"{self.subdir}/{self.fn}: {self.reason}"


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexStarted(Event):
    """The channel is scanned; `to_read` files (`to_read_bytes`) will be opened, the rest of the
    `packages` come from the cache."""

    kind: ClassVar[str] = "index_started"
    channel: str
    subdirs: tuple[str, ...]
    packages: int
    to_read: int
    to_read_bytes: int


@dataclass(frozen=True)
class PackageRead(Event):
    """One package file was read (`problem` is set when it was bad)."""

    kind: ClassVar[str] = "index_package"
    subdir: str
    fn: str
    size: int
    problem: str | None = None


@dataclass(frozen=True)
class ProblemFound(Event):
    """A file is left out: a bad package (new or remembered from the cache) or a stray file."""

    kind: ClassVar[str] = "index_problem"
    subdir: str
    fn: str
    reason: str


@dataclass(frozen=True)
class SubdirIndexed(Event):
    """A subdir is done; `written` is False when its outputs were already up to date (or withheld
    by `strict`)."""

    kind: ClassVar[str] = "index_subdir"
    subdir: str
    packages: int
    written: bool


@dataclass(frozen=True)
class IndexFinished(Event):
    """The channel is done; the full story is the `IndexStats` that `index_channel` returns."""

    kind: ClassVar[str] = "index_finished"
    channel: str
    packages: int
    read: int
    cached: int
    problems: int
    written: bool
    withheld: bool
    seconds: float


# -- results -----------------------------------------------------------------------------------


@dataclass
class SubdirStats:
    """One subdir of an index run."""

    subdir: str
    packages: int = 0  # records in repodata.json
    read: int = 0  # files opened in this run
    cached: int = 0  # files taken from the cache unopened
    gone: int = 0  # files indexed before that are no longer there
    written: bool = False  # repodata.json (and .zst) rewritten


@dataclass
class IndexStats:
    """What `index_channel` did."""

    channel: Path
    subdirs: list[SubdirStats] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    channeldata_written: bool = False
    withheld: bool = False  # strict mode found problems, so no output was replaced
    seconds: float = 0.0

    @property
    def packages(self) -> int:
        return sum(s.packages for s in self.subdirs)

    @property
    def read(self) -> int:
        return sum(s.read for s in self.subdirs)

    @property
    def cached(self) -> int:
        return sum(s.cached for s in self.subdirs)

    @property
    def written(self) -> bool:
        return self.channeldata_written or any(s.written for s in self.subdirs)


@dataclass(frozen=True)
class SubdirStatus:
    """How one subdir's index compares with its folder, as of now."""

    subdir: str
    fresh: bool
    packages: int  # records in the last index
    new: int  # package files not in the last index
    changed: int  # package files whose size or mtime differ from the last index
    missing: int  # package files in the last index that are gone
    problems: int  # files left out of the last index, plus stray files now
    indexed_at: float | None  # when its repodata.json was last written; None: never
    outputs_changed: bool  # repodata.json(.zst) missing or replaced by something else


@dataclass(frozen=True)
class ChannelStatus:
    """`index_status` of one channel."""

    channel: Path
    subdirs: tuple[SubdirStatus, ...]
    channeldata_fresh: bool

    @property
    def fresh(self) -> bool:
        return self.channeldata_fresh and all(s.fresh for s in self.subdirs)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; times as ISO 8601 UTC strings."""

        def subdir(s: SubdirStatus) -> dict[str, Any]:
            data = dataclasses.asdict(s)
            data["indexed_at"] = _iso(s.indexed_at)
            return data

        return {
            "channel": str(self.channel),
            "fresh": self.fresh,
            "channeldata_fresh": self.channeldata_fresh,
            "subdirs": [subdir(s) for s in self.subdirs],
        }


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    when = datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


# -- the cache ---------------------------------------------------------------------------------


class _Entry(msgspec.Struct, array_like=True):
    """What one package file gave, valid while its size and mtime are unchanged."""

    size: int
    mtime_ns: int
    record: bytes | None  # repodata record, JSON with sorted keys
    extra: bytes | None  # channeldata facts, JSON
    problem: str | None


class _SubdirCache(msgspec.Struct):
    files: dict[str, _Entry] = {}
    # the (size, mtime_ns) of each package file the current outputs were built from
    published: dict[str, tuple[int, int]] = {}
    # the (size, mtime_ns) of each output as written, to notice when another tool replaced it
    outputs: dict[str, tuple[int, int]] = {}
    indexed_at: float | None = None
    # channeldata.json was written after these outputs (kept across runs: a run may stop between)
    in_channeldata: bool = False


class _Cache(msgspec.Struct):
    version: int = _CACHE_VERSION
    subdirs: dict[str, _SubdirCache] = {}
    channeldata: tuple[int, int] | None = None
    channeldata_subdirs: list[str] = []


def _load_cache(channel: Path) -> _Cache:
    try:
        cache = msgspec.msgpack.decode((channel / CACHE_DIR / _CACHE_FILE).read_bytes(), type=_Cache)
    except (OSError, msgspec.DecodeError):
        return _Cache()  # no cache or an unusable one: everything is read again
    return cache if cache.version == _CACHE_VERSION else _Cache()


def _save_cache(channel: Path, cache: _Cache) -> None:
    atomic_write_bytes(channel / CACHE_DIR / _CACHE_FILE, msgspec.msgpack.encode(cache))


@contextlib.contextmanager
def _channel_lock(channel: Path) -> Iterator[None]:
    """One index run per channel at a time; readers (status, servers) need no lock."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): concurrent runs are the caller's business
        yield
        return
    with open(channel / CACHE_DIR / _LOCK_FILE, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise ChannelError(
                f"{channel}: another index run holds it (pid {holder}); try again later"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# -- the folder --------------------------------------------------------------------------------


@dataclass
class _Scan:
    subdir: str
    path: Path
    files: dict[str, tuple[int, int]]  # package file name -> (size, mtime_ns)
    strays: list[Problem]


def _check_channel(path: Path) -> Path:
    if not path.exists():
        raise ChannelError(f"{path}: no such folder")
    if not path.is_dir():
        raise ChannelError(f"{path}: not a folder")
    subdirs = _subdir_names(path)
    if not subdirs:
        if path.name in KNOWN_SUBDIRS:
            raise ChannelError(f"{path}: this is a subdir; give its channel folder ({path.parent}) instead")
        nested = sorted(
            child.name
            for child in _subfolders(path)
            if child.name != CACHE_DIR and _subdir_names(Path(child.path))
        )
        if nested:
            raise ChannelError(f"{path}: this folder holds channels ({', '.join(nested)}); give each of them")
    return path


def _subfolders(path: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return [e for e in it if e.is_dir()]
    except OSError as exc:
        raise ChannelError(f"{path}: cannot list it ({exc.strerror or exc})") from exc


def _subdir_names(path: Path) -> list[str]:
    return sorted(e.name for e in _subfolders(path) if e.name in KNOWN_SUBDIRS)


def _scan_subdir(channel: Path, subdir: str) -> _Scan:
    path = channel / subdir
    files: dict[str, tuple[int, int]] = {}
    strays: list[Problem] = []
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        entries = []
    except OSError as exc:
        raise ChannelError(f"{path}: cannot list it ({exc.strerror or exc})") from exc
    for entry in entries:
        name = entry.name
        if name.startswith(".") or name.endswith(".part"):
            continue  # hidden files, our caches, downloads in progress
        if split_package_name(name):
            try:
                st = entry.stat()
            except OSError:
                strays.append(Problem(subdir, name, "a broken link"))
                continue
            if stat.S_ISREG(st.st_mode):
                files[name] = (st.st_size, st.st_mtime_ns)
            else:
                strays.append(Problem(subdir, name, "not a regular file"))
        elif name not in _CHANNEL_FILES:
            what = "a folder" if entry.is_dir() else "a file"
            strays.append(Problem(subdir, name, f"{what} that is not a conda package; ignored"))
    return _Scan(subdir, path, files, sorted(strays))


def _fingerprint(path: Path, names: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    found = {}
    for name in names:
        try:
            st = os.stat(path / name)
        except OSError:
            continue
        found[name] = (st.st_size, st.st_mtime_ns)
    return found


def _outputs_intact(path: Path, sub: _SubdirCache) -> bool:
    """The subdir's outputs are all there, exactly as the last index run wrote them."""
    return len(sub.outputs) == len(_OUTPUTS) and _fingerprint(path, _OUTPUTS) == sub.outputs


def _channeldata_fingerprint(channel: Path) -> tuple[int, int] | None:
    return _fingerprint(channel, ("channeldata.json",)).get("channeldata.json")


# -- reading -----------------------------------------------------------------------------------

_Todo = tuple[str, str, int]  # subdir, file name, size


def _worker_init() -> None:
    # Ctrl-C is the parent's to handle: workers stay quiet instead of printing tracebacks
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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


def _record_count(sub: _SubdirCache) -> int:
    """Records in the subdir's current outputs."""
    return sum(1 for fn in sub.published if fn in sub.files and sub.files[fn].record is not None)


def _write_subdir(scan: _Scan, sub: _SubdirCache) -> int:
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
) -> IndexStats:
    """Index the channel folder `channel_dir` and return what was done.

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
    channel = _check_channel(Path(channel_dir))
    workers = workers or os.cpu_count() or 1
    try:
        (channel / "noarch").mkdir(exist_ok=True)
        (channel / CACHE_DIR).mkdir(exist_ok=True)
    except OSError as exc:
        raise ChannelError(f"{channel}: cannot write into it ({exc.strerror or exc})") from exc
    stats = IndexStats(channel=channel)
    with _channel_lock(channel):
        cache = _load_cache(channel)
        scans = {s: _scan_subdir(channel, s) for s in _subdir_names(channel)}
        dirty = set(cache.subdirs) != set(scans)
        cache.subdirs = {s: cache.subdirs.get(s, _SubdirCache()) for s in scans}
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
            cache.subdirs[subdir].files[fn] = _Entry(
                result.size, result.mtime_ns, result.record, result.extra, result.problem
            )
            per_subdir[subdir].read += 1
            sink(PackageRead(subdir, fn, result.size, result.problem))
            if result.problem:
                report(Problem(subdir, fn, result.problem))

        try:
            _read_all(channel, todo, workers, on_result)
        finally:
            if todo or forgot or dirty:
                _save_cache(channel, cache)  # what was read is kept, even on Ctrl-C

        stats.problems = sorted(problems)
        stats.withheld = strict and bool(problems)
        if not stats.withheld:
            for scan in scans.values():
                per_subdir[scan.subdir].written = _publish_subdir(scan, cache.subdirs[scan.subdir])
            stats.channeldata_written = _publish_channeldata(channel, cache)
            if stats.written:
                _save_cache(channel, cache)
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
    cache: _Cache, scans: dict[str, _Scan], per_subdir: dict[str, SubdirStats]
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


def _publish_subdir(scan: _Scan, sub: _SubdirCache) -> bool:
    """Write the subdir's outputs unless they already show exactly its current files."""
    current = {fn: (e.size, e.mtime_ns) for fn, e in sub.files.items() if fn in scan.files}
    if current == sub.published and _outputs_intact(scan.path, sub):
        return False
    sub.published = current
    _write_subdir(scan, sub)
    sub.outputs = _fingerprint(scan.path, _OUTPUTS)
    sub.indexed_at = time.time()
    sub.in_channeldata = False
    return True


def _publish_channeldata(channel: Path, cache: _Cache) -> bool:
    """Write channeldata.json unless it is intact and no subdir changed since it was written."""
    subdirs = sorted(cache.subdirs)
    intact = (
        cache.channeldata is not None
        and cache.channeldata_subdirs == subdirs
        and _channeldata_fingerprint(channel) == tuple(cache.channeldata)
    )
    if intact and all(sub.in_channeldata for sub in cache.subdirs.values()):
        return False
    _write_channeldata(channel, cache)
    cache.channeldata = _channeldata_fingerprint(channel)
    cache.channeldata_subdirs = subdirs
    for sub in cache.subdirs.values():
        sub.in_channeldata = True
    return True


def _write_channeldata(channel: Path, cache: _Cache) -> None:
    from casconsole.index_channeldata import build_channeldata

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
    channel = _check_channel(Path(channel_dir))
    cache = _load_cache(channel)
    statuses = []
    for subdir in sorted({*_subdir_names(channel), "noarch"}):
        scan = _scan_subdir(channel, subdir)
        sub = cache.subdirs.get(subdir, _SubdirCache())
        published = sub.published
        new = sum(1 for fn in scan.files if fn not in published)
        changed = sum(1 for fn, key in scan.files.items() if fn in published and published[fn] != key)
        missing = sum(1 for fn in published if fn not in scan.files)
        bad = sum(1 for fn in published if fn in sub.files and sub.files[fn].problem)
        outputs_changed = not _outputs_intact(scan.path, sub)
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
        and _channeldata_fingerprint(channel) == tuple(cache.channeldata)
        and cache.channeldata_subdirs == [s.subdir for s in statuses]
        and all(sub.in_channeldata for sub in cache.subdirs.values())
    )
    return ChannelStatus(channel, tuple(statuses), channeldata_fresh)
