"""The state of a mirror: every file a bundle may carry, with its size and sha256.

`scan_mirror` lists every channel under the mirror (mirrored and internal), every subdir folder
and every package and index file in it, and each channel's `channeldata.json`. A package file
whose size and mtime are those the verified-file store recorded (`.cas/verified/<channel>/
<subdir>.tsv`, kept by the sync) is not read: its sha256 is the store's. Any other package file
(an internal channel's, which cas-index put there, or one changed since) is hashed and recorded
in the store, so the next scan is free; index files are hashed each time. `rehash=True` reads
every file.

A bucket mirror (mirror_dir: s3://...) is scanned the same way from one listing, through its
Storage: an object's stamp is its ETag, the store is the record in the bucket, and an object not
vouched for is hashed as it is read from the bucket (bucket.py).

A state is written by `cas-sync --manifest FILE` (the offline side's answer to "what do you
hold?") and read back by `cas-sync --export --since FILE`. Its digest, over every
`path<TAB>size<TAB>sha256<TAB>kind` line sorted by path, names the state a bundle was made
against.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from casconsole.bundle.digest import digest_chunks
from casconsole.bundle.events import (
    HASHING,
    BundleFinished,
    BundleWarning,
    BytesDone,
    FileDone,
    StageStarted,
)
from casconsole.bundle.paths import (
    CHANNEL_INDEX_NAMES,
    FILE,
    INDEX,
    SUBDIR_INDEX_NAMES,
    PathProblem,
    check_path,
)
from casconsole.errors import Cancelled, CasError, os_error_message
from casconsole.events import Sink, null_sink
from casconsole.fsutil import atomic_write_bytes
from casconsole.layout import (
    PYPI_DIR,
    PYPI_FILES,
    PYPI_PAGE_HTML,
    PYPI_PAGE_JSON,
    PYPI_SIMPLE,
    find_channels,
    subdir_folders,
    verified_path,
)
from casconsole.sync.store import Verified, VerifiedStore

STATE_FORMAT = "casconsole-mirror-state"
STATE_VERSION = 1
CHUNK = 1 << 20

Sha256 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
Size = Annotated[int, msgspec.Meta(ge=0)]
Digest = Annotated[str, msgspec.Meta(pattern="^sha256:[0-9a-f]{64}$")]


class BundleError(CasError):
    """A manifest, bundle or state file that cannot be used, or an export / import refused."""


class Entry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One file of a mirror: where it is under the mirror, its size, sha256 and kind."""

    path: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    size: Size
    sha256: Sha256
    kind: Literal["file", "index"]


class _StateFile(msgspec.Struct, forbid_unknown_fields=True):
    format: Literal["casconsole-mirror-state"]
    version: Literal[1]
    created: str
    mirror: str
    digest: Digest
    files: list[Entry]


def digest_of(entries: dict[str, Entry]) -> str:
    """`sha256:<hex>` over every entry's line, sorted by path: the name of a state."""
    h = hashlib.sha256()
    for path in sorted(entries):
        e = entries[path]
        h.update(f"{e.path}\t{e.size}\t{e.sha256}\t{e.kind}\n".encode())
    return "sha256:" + h.hexdigest()


@dataclass
class MirrorState:
    """Every file of a mirror by path; `mirror` and `created` say whose and when."""

    files: dict[str, Entry] = field(default_factory=dict)
    mirror: str = ""
    created: str = ""
    channel_names: set[str] = field(default_factory=set)  # channels seen by a scan, files or not

    @property
    def digest(self) -> str:
        return digest_of(self.files)

    @property
    def size(self) -> int:
        return sum(e.size for e in self.files.values())

    def channels(self) -> set[str]:
        return {path.split("/", 1)[0] for path in self.files}

    def to_bytes(self) -> bytes:
        """JSON, one file a line (readable, grep-able), sorted by path."""
        head = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "created": self.created or now_text(),
            "mirror": self.mirror,
            "digest": self.digest,
        }
        encode = msgspec.json.encode
        lines = [encode(self.files[path]) for path in sorted(self.files)]
        body = b",\n".join(lines)
        return encode(head)[:-1] + b',"files":[\n' + body + (b"\n" if lines else b"") + b"]}\n"

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> MirrorState:
        """Parse a state file strictly: unknown fields, bad paths, duplicates and a digest
        that does not match the files are refused (BundleError naming `where`)."""
        try:
            parsed = msgspec.json.decode(data, type=_StateFile)
        except msgspec.ValidationError as exc:
            raise BundleError(f"{where}: not a mirror state written by cas-sync --manifest ({exc})") from None
        except msgspec.DecodeError as exc:
            raise BundleError(f"{where}: not valid JSON ({exc})") from None
        files: dict[str, Entry] = {}
        for entry in parsed.files:
            try:
                check_path(entry.path, entry.kind)
            except PathProblem as exc:
                raise BundleError(f"{where}: {exc}") from None
            if entry.path in files:
                raise BundleError(f"{where}: {entry.path!r} is listed twice")
            files[entry.path] = entry
        state = cls(files, parsed.mirror, parsed.created)
        if state.digest != parsed.digest:
            raise BundleError(f"{where}: its digest does not match the files it lists (edited or damaged)")
        return state


def now_text() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_state(path: Path) -> MirrorState:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read the mirror state: {os_error_message(exc)}") from None
    return MirrorState.from_bytes(data, str(path))


def write_state(state: MirrorState, path: Path) -> None:
    try:
        atomic_write_bytes(Path(path), state.to_bytes())
    except OSError as exc:
        raise BundleError(f"cannot write the mirror state: {os_error_message(exc)}") from None


# ---------------------------------------------------------------- hashing


def hash_file(
    path: Path, on_bytes: Callable[[int], None] | None = None, cancel: threading.Event | None = None
) -> tuple[int, str]:
    """(size, sha256) of a file, read in chunks; `on_bytes(n)` every BYTES_STEP bytes."""
    with open(path, "rb", buffering=0) as fh:
        return digest_chunks(iter(lambda: fh.read(CHUNK), b""), on_bytes, cancel)


class Reported:
    """An `on_bytes` callback that sends BytesDone and counts what it sent, so that the file's
    FileDone carries the rest."""

    def __init__(self, sink: Sink, stage: str):
        self.sink = sink
        self.stage = stage
        self.bytes = 0

    def __call__(self, n: int) -> None:
        self.bytes += n
        self.sink(BytesDone(self.stage, n))


# ---------------------------------------------------------------- scanning a mirror


@dataclass
class _Found:
    path: str
    full: Path  # the file; for a bucket mirror, the object's key as a relative Path
    kind: str
    size: int
    stamp: int | str  # mtime in nanoseconds, or an object's ETag
    store: VerifiedStore | None = None
    key: str = ""  # its name in the store: the file name, `<project>/<file>` for PyPI files

    def __post_init__(self) -> None:
        self.key = self.key or self.full.name


@dataclass
class ScanStats:
    files: int = 0
    bytes: int = 0
    hashed: int = 0  # files read (the rest were vouched for by the store)
    hashed_bytes: int = 0
    skipped: list[str] = field(default_factory=list)  # files left out, with why
    seconds: float = 0.0


def scan_mirror(
    mirror_dir,
    *,
    rehash: bool = False,
    sink: Sink | None = None,
    cancel: threading.Event | None = None,
    finish: bool = True,
) -> tuple[MirrorState, ScanStats]:
    """The state of the mirror at `mirror_dir` (a folder, or a bucket mirror's Storage: see the
    module docstring). The caller holds the mirror's lock. `finish` sends
    BundleFinished("manifest") at the end."""
    sink = sink or null_sink
    started = time.monotonic()
    stats = ScanStats()
    cleanups: list = []
    if isinstance(mirror_dir, (str, os.PathLike)):
        mirror_dir = Path(mirror_dir)
        found = _list_files(mirror_dir, stats, sink)
        names = {c.name for c in find_channels(mirror_dir)}
        hash_one = _hash_file
    else:
        from casconsole.bundle.bucket import hash_object, list_bucket

        journal = Path(tempfile.mkdtemp(prefix="cas-bundle-"))
        cleanups.append(lambda: shutil.rmtree(journal, ignore_errors=True))
        found, names = list_bucket(mirror_dir, stats, sink, _add, journal)
        hash_one = lambda f, reported, cancel: hash_object(mirror_dir, f, reported, cancel)  # noqa: E731
    state = MirrorState(mirror=str(getattr(mirror_dir, "url", mirror_dir)), created=now_text())
    state.channel_names = names
    todo: list[_Found] = []
    for f in found:
        entry = f.store.get(f.key) if (f.store is not None and not rehash) else None
        if entry is not None and entry.matches(f.size, f.stamp):
            state.files[f.path] = Entry(f.path, entry.size, entry.sha256, f.kind)
        else:
            todo.append(f)
    sink(StageStarted(HASHING, len(todo), sum(f.size for f in todo)))
    touched: set[VerifiedStore] = set()
    try:
        for f in todo:
            if cancel is not None and cancel.is_set():
                raise Cancelled
            reported = Reported(sink, HASHING)
            found_now = hash_one(f, reported, cancel)
            if found_now is None:
                continue  # removed while we looked (not by a sync: we hold the lock)
            size, sha, stamp, now_size = found_now
            stats.hashed += 1
            stats.hashed_bytes += size
            if f.store is not None and now_size == size:
                f.store.add(f.key, Verified(size, stamp, sha))
                touched.add(f.store)
            state.files[f.path] = Entry(f.path, size, sha, f.kind)
            sink(FileDone(HASHING, f.path, size - reported.bytes))
    finally:
        for store in {f.store for f in found if f.store is not None}:
            if store in touched:
                store.compact(keep=set(store.entries) & _names_present(store, found))
            store.close()
        for cleanup in cleanups:
            cleanup()
    stats.files = len(state.files)
    stats.bytes = state.size
    stats.seconds = time.monotonic() - started
    if finish:
        summary = (
            f"{stats.files:,} files in {len(state.channels())} channel(s), "
            f"{stats.hashed:,} hashed ({'--rehash' if rehash else 'not vouched for by the store'})"
        )
        sink(BundleFinished("manifest", summary, stats.seconds))
    return state, stats


def _hash_file(f: _Found, reported: Reported, cancel) -> tuple[int, str, int | str, int] | None:
    """(bytes read, sha256, the file's mtime and size after): None when it is gone."""
    try:
        size, sha = hash_file(f.full, reported, cancel)
        st = f.full.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BundleError(f"cannot read {os_error_message(exc)}") from None
    return size, sha, st.st_mtime_ns, st.st_size


def _names_present(store: VerifiedStore, found: list[_Found]) -> set[str]:
    return {f.key for f in found if f.store is store}


def _list_files(mirror_dir: Path, stats: ScanStats, sink: Sink) -> list[_Found]:
    """Every file of every channel a bundle may carry, with its stat; others are skipped."""
    found: list[_Found] = []
    for channel in find_channels(mirror_dir):
        for subdir in subdir_folders(channel):
            store = VerifiedStore(verified_path(mirror_dir, channel.name, subdir))
            folder = channel / subdir
            for name, st in _regular_files(folder):
                _add(found, f"{channel.name}/{subdir}/{name}", folder / name, st, store, stats, sink)
        for name in CHANNEL_INDEX_NAMES:
            try:
                st = (channel / name).stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if _is_regular(st):
                _add(found, f"{channel.name}/{name}", channel / name, st, None, stats, sink)
    _list_pypi(mirror_dir, found, stats, sink)
    return found


def _list_pypi(mirror_dir: Path, found: list[_Found], stats: ScanStats, sink: Sink) -> None:
    """The PyPI mirror's files (`pypi/files/<project>/<file>`, their `.metadata` too: the sync's
    verified-file store vouches for them) and its project pages (`pypi/simple/<project>/`, index
    files: placed after every file, as the sync writes them last)."""
    root = mirror_dir / PYPI_DIR
    store = VerifiedStore(verified_path(mirror_dir, PYPI_DIR, "files"))
    for part, kind in ((PYPI_FILES, FILE), (PYPI_SIMPLE, INDEX)):
        for project in _folders(root / part):
            for name, st in _regular_files(root / part / project, any_name=True):
                if kind == INDEX and name not in (PYPI_PAGE_HTML, PYPI_PAGE_JSON):
                    continue
                path = f"{PYPI_DIR}/{part}/{project}/{name}"
                key = f"{project}/{name}"
                _add(found, path, root / part / project / name, st, store, stats, sink, kind, key)


def _folders(folder: Path) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return sorted(
                e.name for e in entries if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)
            )
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise BundleError(f"cannot read {os_error_message(exc)}") from None


def _add(found, path, full, st, store, stats, sink, kind: str | None = None, key: str = "") -> None:
    """Add a file (`st`: its stat, or (size, stamp) of an object) unless its path is refused."""
    try:
        kind = check_path(path, kind)
    except PathProblem as exc:
        stats.skipped.append(str(exc))
        sink(BundleWarning(f"left out {exc}"))
        return
    size, stamp = (st.st_size, st.st_mtime_ns) if isinstance(st, os.stat_result) else st
    found.append(_Found(path, full, kind, size, stamp, store if kind == FILE else None, key))


def _is_regular(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode)


def _regular_files(folder: Path, any_name: bool = False) -> list[tuple[str, os.stat_result]]:
    """Package and index files of a subdir folder (`any_name`: every file): regular files (no
    symlinks), no dot-names."""
    out = []
    try:
        with os.scandir(folder) as entries:
            for e in entries:
                if e.name.startswith(".") or not e.is_file(follow_symlinks=False):
                    continue
                if any_name or e.name in SUBDIR_INDEX_NAMES or e.name.endswith((".conda", ".tar.bz2")):
                    out.append((e.name, e.stat(follow_symlinks=False)))
    except OSError as exc:
        raise BundleError(f"cannot read {os_error_message(exc)}") from None
    return sorted(out)


__all__ = [
    "FILE",
    "INDEX",
    "BundleError",
    "Entry",
    "MirrorState",
    "ScanStats",
    "digest_of",
    "hash_file",
    "read_state",
    "scan_mirror",
    "write_state",
]
