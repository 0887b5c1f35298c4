"""What indexing reports: the problems found, the events sent to a sink, the stats returned,
and a channel's index status."""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from casconsole.errors import IndexingError
from casconsole.events import Event
from casconsole.layout import BucketURL


class ChannelError(IndexingError):
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
class IndexRaced(Event):
    """Another writer wrote the channel's index while this run was making it (a bucket): nothing
    of this run was lost or overwritten, and it starts again from the fresh state."""

    kind: ClassVar[str] = "index_raced"
    channel: str
    reason: str
    attempt: int


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

    channel: Path | BucketURL
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

    channel: Path | BucketURL
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
