"""Which paths under a mirror a bundle may carry, and what each is.

A path is relative, `/`-separated, and stays inside the mirror: no empty, `.` or `..` part, no
part starting with a dot (the mirror's own state, `.cas/`, and temporary files), no backslash,
colon or control character. Under a conda channel (`<channel>/<subdir>/<name>`, the subdir one
conda knows) a name is a package file that passes the sync's screening of upstream names, or one
of the index files a channel holds; at a channel's root only `channeldata.json`. Other paths
(PyPI files, installers: later kinds) follow the general rule alone.

Each file has a kind: `file` (content that nothing else names until it is in place: package
files) or `index` (repodata and the like, which name files: placed after every `file`).
"""

from __future__ import annotations

import re

from casconsole.layout import KNOWN_SUBDIRS, channel_name_problem
from casconsole.upstream.screen import refuse_name

FILE = "file"
INDEX = "index"
KINDS = (FILE, INDEX)

# index files of a subdir folder: what conda clients read to learn what the folder holds.
# Within a folder the compressed copies are written before the plain file, as the sync does.
SUBDIR_INDEX_NAMES = (
    "repodata.json.zst",
    "repodata.json.bz2",
    "repodata.json",
    "current_repodata.json.zst",
    "current_repodata.json.bz2",
    "current_repodata.json",
    "repodata_from_packages.json.zst",
    "repodata_from_packages.json.bz2",
    "repodata_from_packages.json",
    "run_exports.json.zst",
    "run_exports.json",
    "patch_instructions.json",
)
CHANNEL_INDEX_NAMES = ("channeldata.json",)

_BAD_PART = re.compile(r"[\x00-\x1f\x7f\\:]")
MAX_PATH = 1024
MAX_PART = 250


class PathProblem(ValueError):
    """A path a bundle must not carry; the message says why."""


def check_path(path: object, kind: str | None = None) -> str:
    """The kind of `path` (`file` or `index`), or PathProblem naming what is wrong with it.

    `kind`, when given, must agree with what the path is under a conda channel.
    """
    if not isinstance(path, str) or not path:
        raise PathProblem("empty path")
    if len(path.encode("utf-8", "replace")) > MAX_PATH:
        raise PathProblem(f"{path[:60]!r}...: path too long")
    parts = path.split("/")
    if len(parts) < 2:
        raise PathProblem(f"{path!r}: a file must be inside a channel folder")
    for part in parts:
        why = _part_problem(part)
        if why:
            raise PathProblem(f"{path!r}: {why}")
    problem = channel_name_problem(parts[0])
    if problem:
        raise PathProblem(f"{path!r}: {problem}")
    found = _conda_kind(path, parts)
    if found is None:  # not a conda channel's file: a later kind of file, the general rule only
        found = kind if kind in KINDS else FILE
    if kind is not None and kind != found:
        raise PathProblem(f"{path!r}: its kind is {found!r}, not {kind!r}")
    return found


def _part_problem(part: str) -> str | None:
    if not part:
        return "empty path part (// or a trailing /)"
    if part in (".", ".."):
        return f"holds {part!r}"
    if part.startswith("."):
        return f"{part!r} starts with a dot: dot-names are the mirror's own"
    if _BAD_PART.search(part):
        return f"{part!r} holds a backslash, a colon or a control character"
    if len(part.encode("utf-8", "replace")) > MAX_PART:
        return f"{part[:40]!r}...: name too long"
    return None


def _conda_kind(path: str, parts: list[str]) -> str | None:
    """`file` or `index` for a conda channel's path; None for a path outside conda's layout;
    PathProblem for a conda path that is neither."""
    if len(parts) == 2 and parts[1] in CHANNEL_INDEX_NAMES:
        return INDEX
    if parts[1] not in KNOWN_SUBDIRS:
        return None
    if len(parts) != 3:
        raise PathProblem(f"{path!r}: a subdir folder holds files, not folders")
    name = parts[2]
    if name in SUBDIR_INDEX_NAMES:
        return INDEX
    why = refuse_name(name)
    if why:
        raise PathProblem(f"{path!r}: {why}")
    return FILE


def is_conda_package(path: str) -> bool:
    """A package file in a conda subdir folder (the kind the verified-file store records)."""
    parts = path.split("/")
    return len(parts) == 3 and parts[1] in KNOWN_SUBDIRS and parts[2] not in SUBDIR_INDEX_NAMES


def index_order(path: str) -> tuple[str, bool, str, int, str]:
    """Sort key of index files: channel by channel, its subdirs' folder by folder (compressed
    copies before the plain file), then the channel's own (channeldata.json names them all)."""
    folder, _, name = path.rpartition("/")
    rank = SUBDIR_INDEX_NAMES.index(name) if name in SUBDIR_INDEX_NAMES else len(SUBDIR_INDEX_NAMES)
    return channel_of(path), "/" not in folder, folder, rank, name


def channel_of(path: str) -> str:
    return path.split("/", 1)[0]
