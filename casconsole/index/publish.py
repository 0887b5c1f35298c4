"""Publishing one package into a channel: checked, moved into place, its subdir reindexed.

This is what an upload ends in (cas-server's `PUT /t/<token>/<channel>/<subdir>/<file>`), kept
here beside the indexer because it changes a channel folder the way `cas-index` does: the
package is written by the caller to a staging file under a dot-folder of the subdir (never
served, never indexed), then checked (a readable conda package, `info/index.json` built for
this subdir, its name-version-build the file's name), then, under the channel's index lock,
moved into place and the subdir reindexed incrementally. A client fetching repodata meanwhile
gets the old index or the new one (every output is replaced atomically), and the new index
lists the package only once its file is in place.

A file of the same name with other bytes is kept: refused, or with `force` moved into
`<channel>/.history/<subdir>/<UTC time>/<file>` (a hard link, so a download in progress keeps
its bytes) before the new one replaces it. The same bytes again change nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from casconsole.errors import DiskError, IndexingError
from casconsole.events import Sink, null_sink
from casconsole.index.cache import channel_lock
from casconsole.index.channel import index_locked, prepare_channel
from casconsole.index.events import ChannelError, IndexStats
from casconsole.index.read import ReadResult, read_package
from casconsole.layout import KNOWN_SUBDIRS, split_package_name

HISTORY_DIR = ".history"  # <channel>/.history/<subdir>/<time>/<file>: what --force replaced
STAGING_PREFIX = ".upload-"  # <channel>/<subdir>/.upload-<random>/<file>: an upload arriving

INVALID = "invalid"  # not a package for this place: nothing written
CONFLICT = "conflict"  # the name is taken by other bytes, and no force
BUSY = "busy"  # the channel's index lock was not had in time


class PublishError(IndexingError):
    """An upload that cannot be published; `reason` is INVALID, CONFLICT or BUSY."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class Published:
    """What publishing one package did."""

    subdir: str
    fn: str
    outcome: str  # "created", "replaced" or "unchanged"
    size: int
    sha256: str
    history: Path | None  # where the replaced file went (outcome "replaced")
    packages: int  # records in the subdir's index now
    stats: IndexStats


# what conda puts in a package's name, version and build: plain ASCII, no space, no path
_PACKAGE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+!-]*-[A-Za-z0-9_.+!]+-[A-Za-z0-9_.+]+")


def problem_with_name(subdir: str, fn: str) -> str | None:
    """Why `<subdir>/<fn>` cannot be a package's place, or None."""
    if subdir not in KNOWN_SUBDIRS:
        return f"{subdir!r} is not a conda subdir (linux-64, noarch, ...)"
    stem = split_package_name(fn)
    if stem is None or not _PACKAGE_NAME.fullmatch(stem[0]) or len(fn) > 250:
        return f"{fn!r} is not a package file name (NAME-VERSION-BUILD.conda or .tar.bz2, in ASCII)"
    return None


def staging_path(channel: Path, subdir: str, fn: str) -> Path:
    """A fresh staging place for an upload of `fn`: the file keeps its own name (a `.conda`'s
    members are found by it), in a dot-folder of the subdir made here."""
    folder = channel / subdir / f"{STAGING_PREFIX}{secrets.token_hex(8)}"
    folder.mkdir()
    return folder / fn


def discard_staged(staged: Path) -> None:
    """Remove a staging file and its folder (whatever is left of them)."""
    with contextlib.suppress(FileNotFoundError):
        staged.unlink()
    with contextlib.suppress(OSError):
        staged.parent.rmdir()


def check_package(staged: Path, subdir: str, fn: str) -> ReadResult:
    """The staged file read as the indexer reads it; PublishError (INVALID) unless it is a
    readable conda package built for `subdir` whose name-version-build is `fn`'s."""
    result = read_package(str(staged), subdir)
    if result is None:
        raise PublishError(f"{subdir}/{fn}: the uploaded file is gone", INVALID)
    if result.problem or result.record is None:
        raise PublishError(f"{subdir}/{fn}: {result.problem}", INVALID)
    record = json.loads(result.record)
    stem = split_package_name(fn)[0]  # type: ignore[index]
    says = f"{record['name']}-{record['version']}-{record['build']}"
    if says != stem:
        raise PublishError(f"{subdir}/{fn}: its info/index.json names it {says}, not {stem}", INVALID)
    return result


def publish_package(
    channel_dir: Path,
    subdir: str,
    fn: str,
    staged: Path,
    *,
    force: bool = False,
    wait: float = 60.0,
    sink: Sink = null_sink,
) -> Published:
    """Publish the fully written `staged` file as `<channel_dir>/<subdir>/<fn>` and reindex the
    subdir. The staged file is used up whatever happens: moved into place, or removed.

    Raises PublishError (nothing published: INVALID, CONFLICT, or BUSY when the channel's lock
    was not had within `wait` seconds) or DiskError (the disk refused).
    """
    started = time.perf_counter()
    try:
        problem = problem_with_name(subdir, fn)
        if problem:
            raise PublishError(problem, INVALID)
        result = check_package(staged, subdir, fn)
        record = json.loads(result.record or b"{}")
        _fsync(staged)  # on disk before it is published under its name
        channel = prepare_channel(Path(channel_dir))
        try:
            with channel_lock(channel, wait=wait):
                outcome, history = _place(channel, subdir, fn, staged, result, force)
                known = {(subdir, fn): result} if outcome != "unchanged" else None
                stats = index_locked(channel, started, sink=sink, subdirs=[subdir], workers=1, known=known)
        except ChannelError as exc:
            if "another index run holds it" in str(exc):
                raise PublishError(f"{channel.name}: {exc}", BUSY) from None
            raise
        packages = next((s.packages for s in stats.subdirs if s.subdir == subdir), 0)
        return Published(subdir, fn, outcome, result.size, record["sha256"], history, packages, stats)
    except OSError as exc:
        raise DiskError.of(exc, f"publishing {subdir}/{fn}") from exc
    finally:
        discard_staged(staged)


def _place(
    channel: Path, subdir: str, fn: str, staged: Path, result: ReadResult, force: bool
) -> tuple[str, Path | None]:
    """Move `staged` to `<subdir>/<fn>` (under the channel's lock): (outcome, history path)."""
    dest = channel / subdir / fn
    try:
        st = os.lstat(dest)
    except FileNotFoundError:
        os.replace(staged, dest)
        _fsync_folder(dest.parent)
        return "created", None
    if not stat.S_ISREG(st.st_mode):
        raise PublishError(f"{subdir}/{fn}: the name is taken by something that is not a file", CONFLICT)
    if st.st_size == result.size and _sha256(dest) == json.loads(result.record or b"{}").get("sha256"):
        return "unchanged", None
    if not force:
        raise PublishError(
            f"{subdir}/{fn} exists with other bytes; upload with force to replace it "
            f"(the old file is kept under {channel.name}/{HISTORY_DIR}/{subdir}/)",
            CONFLICT,
        )
    history = _history_place(channel, subdir, fn)
    try:
        os.link(dest, history)  # the old bytes stay whole for whoever has them open
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        shutil.copy2(dest, history)
    _fsync_folder(history.parent)
    os.replace(staged, dest)
    _fsync_folder(dest.parent)
    return "replaced", history


def _history_place(channel: Path, subdir: str, fn: str) -> Path:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    base = channel / HISTORY_DIR / subdir
    for n in range(1, 1000):
        folder = base / (stamp if n == 1 else f"{stamp}-{n}")
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / fn).exists():
            return folder / fn
    raise PublishError(f"{subdir}/{fn}: replaced too often this second", BUSY)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems cannot sync a folder: nothing to do
        _fsync(folder)


def stale_staging(root: Path, older_than: float) -> list[Path]:
    """Staging folders under `<root>/<channel>/<subdir>/` nobody has written to for
    `older_than` seconds: left by a server killed during an upload."""
    found = []
    now = time.time()
    for staging in root.glob(f"*/*/{STAGING_PREFIX}*"):
        if staging.parent.name not in KNOWN_SUBDIRS or not staging.is_dir():
            continue
        try:
            newest = max([staging.stat().st_mtime, *(p.stat().st_mtime for p in staging.iterdir())])
        except OSError:
            continue
        if now - newest > older_than:
            found.append(staging)
    return found
