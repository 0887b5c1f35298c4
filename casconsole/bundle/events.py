"""The events of a manifest, export or import, and the stats each returns.

Every operation is a series of stages (`hashing` the files the store cannot vouch for,
`writing` volumes, `checking` a bundle, `placing` files, `index`, `deleting`); a stage starts
with its totals, then reports each file done and, inside large files, bytes now and then. The
CLI's progress bars and the console's screen are sinks of these; `cas-sync --json` prints them.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from casconsole.events import Event

# stages, in the order an operation meets them
HASHING = "hashing"  # files on disk the verified-file store does not vouch for
WRITING = "writing"  # an export copying files into volumes
CHECKING = "checking"  # an import hashing every file of the bundle before changing anything
PLACING = "placing"  # an import placing files
INDEX = "index"  # an import writing repodata (after every file is placed)
DELETING = "deleting"  # an import removing what left the other side (after the index)


@dataclasses.dataclass(frozen=True)
class StageStarted(Event):
    kind: ClassVar[str] = "stage"
    stage: str
    files: int
    bytes: int


@dataclasses.dataclass(frozen=True)
class FileDone(Event):
    """One file of the stage is done (`bytes` of it not yet reported by BytesDone)."""

    kind: ClassVar[str] = "file"
    stage: str
    path: str
    bytes: int


@dataclasses.dataclass(frozen=True)
class BytesDone(Event):
    """Progress inside a large file: `bytes` more of the current stage are done."""

    kind: ClassVar[str] = "bytes"
    stage: str
    bytes: int


@dataclasses.dataclass(frozen=True)
class BundleWarning(Event):
    kind: ClassVar[str] = "warning"
    message: str


@dataclasses.dataclass(frozen=True)
class BundleFinished(Event):
    """The operation ended; `summary` is its one-line outcome."""

    kind: ClassVar[str] = "finished"
    action: str  # manifest, export, import
    summary: str
    seconds: float


# files reported in BytesDone steps when they are at least this large
BYTES_STEP = 8 << 20


@dataclasses.dataclass
class Counts:
    """A comparison of two states: what is new, changed and deleted, and the bytes carried."""

    new: int = 0
    changed: int = 0
    deleted: int = 0
    index: int = 0  # index files (repodata) carried
    same: int = 0  # files the other side holds already
    bytes: int = 0  # bytes of the files carried (index files included)

    def text(self, size) -> str:
        """`312 new, 4 changed, 17 deleted, 2.1 GB` (and the index files, when any)."""
        out = f"{self.new:,} new, {self.changed:,} changed, {self.deleted:,} deleted, {size(self.bytes)}"
        if self.index:
            out += f" (with {self.index:,} index file{'s' if self.index != 1 else ''})"
        return out


NEW, CHANGED, DELETED = "new", "changed", "deleted"  # and INDEX: what a plan does to a path


@dataclasses.dataclass
class FolderCounts:
    """The comparison of one folder (`channel/subdir`, or a channel's own files)."""

    folder: str
    new: int = 0
    changed: int = 0
    deleted: int = 0
    index: int = 0
    bytes: int = 0


def by_folder(changes: list[tuple[str, str, int]]) -> list[FolderCounts]:
    """(path, change, size) triples counted per folder, folders sorted."""
    rows: dict[str, FolderCounts] = {}
    for path, change, size in changes:
        folder = path.rpartition("/")[0]
        row = rows.setdefault(folder, FolderCounts(folder))
        setattr(row, change, getattr(row, change) + 1)
        if change != DELETED:
            row.bytes += size
    return [rows[k] for k in sorted(rows)]
