"""A channel's index cache (`<channel>/.cache/index.msgpack`: what each package gave, keyed by
file name, size and mtime), its lock, and the scan of a subdir folder."""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from casconsole.fsutil import atomic_write_bytes
from casconsole.index.events import ChannelError, Problem
from casconsole.layout import INDEX_CACHE_DIR, KNOWN_SUBDIRS, split_package_name

CACHE_DIR = INDEX_CACHE_DIR
CACHE_FILE = "index.msgpack"
LOCK_FILE = "index.lock"
CACHE_VERSION = 1
_LOCK_POLL = 0.02  # seconds between tries of a lock that is waited for
OUTPUTS = ("repodata.json", "repodata.json.zst")
# files a channel tool may leave in a subdir: not packages, not stray either
CHANNEL_FILES = frozenset(
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

# -- the cache ---------------------------------------------------------------------------------


class Entry(msgspec.Struct, array_like=True):
    """What one package file gave, valid while its size and mtime are unchanged."""

    size: int
    mtime_ns: int | str  # the stamp: a file's mtime, or (in a bucket) the object's ETag
    record: bytes | None  # repodata record, JSON with sorted keys
    extra: bytes | None  # channeldata facts, JSON
    problem: str | None


class SubdirCache(msgspec.Struct):
    files: dict[str, Entry] = {}
    # the (size, mtime_ns) of each package file the current outputs were built from
    published: dict[str, tuple[int, int | str]] = {}
    # the (size, mtime_ns) of each output as written, to notice when another tool replaced it
    outputs: dict[str, tuple[int, int | str]] = {}
    indexed_at: float | None = None
    # channeldata.json was written after these outputs (kept across runs: a run may stop between)
    in_channeldata: bool = False


class Cache(msgspec.Struct):
    version: int = CACHE_VERSION
    subdirs: dict[str, SubdirCache] = {}
    channeldata: tuple[int, int | str] | None = None
    channeldata_subdirs: list[str] = []


def load_cache(channel: Path) -> Cache:
    try:
        cache = msgspec.msgpack.decode((channel / CACHE_DIR / CACHE_FILE).read_bytes(), type=Cache)
    except (OSError, msgspec.DecodeError):
        return Cache()  # no cache or an unusable one: everything is read again
    return cache if cache.version == CACHE_VERSION else Cache()


def save_cache(channel: Path, cache: Cache) -> None:
    atomic_write_bytes(channel / CACHE_DIR / CACHE_FILE, msgspec.msgpack.encode(cache))


@contextlib.contextmanager
def channel_lock(channel: Path, wait: float = 0.0) -> Iterator[None]:
    """One index run per channel at a time; readers (status, servers) need no lock.

    Taken at once or refused, unless `wait` > 0: then it is waited for up to `wait` seconds
    (an upload waits for the upload before it, or for a cas-index run, to finish).
    """
    try:
        import fcntl
    except ImportError:  # no flock (Windows): concurrent runs are the caller's business
        yield
        return
    deadline = time.monotonic() + wait
    with open(channel / CACHE_DIR / LOCK_FILE, "a+") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(_LOCK_POLL)
                    continue
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
class Scan:
    subdir: str
    path: Path
    files: dict[str, tuple[int, int | str]]  # package file name -> (size, mtime_ns or ETag)
    strays: list[Problem]


def check_channel(path: Path) -> Path:
    if not path.exists():
        raise ChannelError(f"{path}: no such folder")
    if not path.is_dir():
        raise ChannelError(f"{path}: not a folder")
    subdirs = subdir_names(path)
    if not subdirs:
        if path.name in KNOWN_SUBDIRS:
            raise ChannelError(f"{path}: this is a subdir; give its channel folder ({path.parent}) instead")
        nested = sorted(
            child.name
            for child in subfolders(path)
            if child.name != CACHE_DIR and subdir_names(Path(child.path))
        )
        if nested:
            raise ChannelError(f"{path}: this folder holds channels ({', '.join(nested)}); give each of them")
    return path


def subfolders(path: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return [e for e in it if e.is_dir()]
    except OSError as exc:
        raise ChannelError(f"{path}: cannot list it ({exc.strerror or exc})") from exc


def subdir_names(path: Path) -> list[str]:
    return sorted(e.name for e in subfolders(path) if e.name in KNOWN_SUBDIRS)


def scan_subdir(channel: Path, subdir: str) -> Scan:
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
        elif name not in CHANNEL_FILES:
            what = "a folder" if entry.is_dir() else "a file"
            strays.append(Problem(subdir, name, f"{what} that is not a conda package; ignored"))
    return Scan(subdir, path, files, sorted(strays))


def fingerprint(path: Path, names: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    found = {}
    for name in names:
        try:
            st = os.stat(path / name)
        except OSError:
            continue
        found[name] = (st.st_size, st.st_mtime_ns)
    return found


def outputs_intact(path: Path, sub: SubdirCache) -> bool:
    """The subdir's outputs are all there, exactly as the last index run wrote them."""
    return len(sub.outputs) == len(OUTPUTS) and fingerprint(path, OUTPUTS) == sub.outputs


def channeldata_fingerprint(channel: Path) -> tuple[int, int] | None:
    return fingerprint(channel, ("channeldata.json",)).get("channeldata.json")
