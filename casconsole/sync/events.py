"""The events a sync reports, and the stats it returns.

Events go to the sink the caller passes (the CLI's progress bars, the console's screens) and,
as JSON lines, to the mirror's status log (`docs/sync.md` lists their fields). A sink is called
in the thread that runs the sync, one event at a time.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from casconsole.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_PRUNE_WITHHELD
from casconsole.events import Event

# how a sync ended; "running" only ever appears in a status read from the log
STATES = ("done", "failed", "cancelled", "error")


@dataclasses.dataclass(frozen=True)
class SyncStarted(Event):
    """The lock is held; nothing has been fetched yet."""

    kind: ClassVar[str] = "started"
    pid: int
    remote_url: str
    mirror_dir: str
    channel: str
    subdirs: list[str]
    verify: bool = False


@dataclasses.dataclass(frozen=True)
class RepodataFetched(Event):
    """A subdir's upstream repodata is in hand (`not_modified`: the copy kept was still current)."""

    kind: ClassVar[str] = "repodata"
    subdir: str
    url: str
    records: int
    not_modified: bool


@dataclasses.dataclass(frozen=True)
class SubdirMissing(Event):
    """A platform of the settings that upstream does not carry: left out, the others go on."""

    kind: ClassVar[str] = "subdir_missing"
    subdir: str
    reason: str


@dataclasses.dataclass(frozen=True)
class SyncWarning(Event):
    """Something refused or skipped that does not fail the sync (a hostile record, a stale lock)."""

    kind: ClassVar[str] = "warning"
    subdir: str
    message: str


@dataclasses.dataclass(frozen=True)
class SubdirPlanned(Event):
    """What the sync will do in one subdir: fetch `files` (`bytes`), hash `check` existing files."""

    kind: ClassVar[str] = "planned"
    subdir: str
    upstream: int  # records upstream (after refusing hostile ones)
    kept: int  # records the selection keeps
    present: int  # kept files already on disk and verified
    files: int  # files to download
    bytes: int
    check: int  # files on disk to hash (not recorded as verified, or --verify)
    check_bytes: int
    delete: int  # files that left the plan (removed after the new repodata, unless --no-prune)


@dataclasses.dataclass(frozen=True)
class FileStarted(Event):
    kind: ClassVar[str] = "file_started"
    subdir: str
    fn: str
    size: int
    offset: int = 0  # bytes already there from an interrupted download (resumed with Range)


@dataclasses.dataclass(frozen=True)
class FileProgress(Event):
    """Bytes of one file so far; sent at most a few times a second per file."""

    kind: ClassVar[str] = "file_progress"
    subdir: str
    fn: str
    done: int
    size: int


@dataclasses.dataclass(frozen=True)
class FileRetry(Event):
    kind: ClassVar[str] = "file_retry"
    subdir: str
    fn: str
    attempt: int  # the attempt that failed, 1 = the first
    reason: str
    delay: float  # seconds before the next attempt


@dataclasses.dataclass(frozen=True)
class FileDone(Event):
    """A file is in place under its final name and verified.

    action: `downloaded`; `checked` (a file already there, hashed and found good); `repaired` (a
    file already there that did not match, downloaded again).
    """

    kind: ClassVar[str] = "file_done"
    subdir: str
    fn: str
    size: int
    action: str = "downloaded"
    fetched: int = 0  # bytes transferred for it by this sync
    resumed: bool = False


@dataclasses.dataclass(frozen=True)
class FileFailed(Event):
    """A file that could not be had after every retry; the sync goes on without it."""

    kind: ClassVar[str] = "file_failed"
    subdir: str
    fn: str
    size: int
    reason: str
    attempts: int


@dataclasses.dataclass(frozen=True)
class FileRemoved(Event):
    kind: ClassVar[str] = "file_removed"
    subdir: str
    fn: str
    reason: str  # "left the plan", or why a file on disk was bad and could not be replaced


@dataclasses.dataclass(frozen=True)
class SubdirDone(Event):
    """The subdir's repodata.json now lists exactly its present and verified files."""

    kind: ClassVar[str] = "subdir_done"
    subdir: str
    packages: int  # records in the written repodata.json
    downloaded: int
    failed: int
    removed: int
    repodata_written: bool  # False when the new repodata was the same as the one in place
    withheld: int = 0  # files that left the plan, kept by the prune guard (repodata kept as it was)


@dataclasses.dataclass
class SyncStats:
    """What a sync did; `state` is one of STATES."""

    state: str = "done"
    error: str | None = None
    files: int = 0  # files to download, as planned
    bytes: int = 0
    downloaded: int = 0  # files downloaded and verified (repaired ones included)
    fetched_bytes: int = 0  # bytes transferred
    resumed: int = 0
    present: int = 0  # files already verified, not touched
    checked: int = 0  # files on disk hashed by this sync
    corrupt: int = 0  # of those, how many did not match
    failed: int = 0
    removed: int = 0
    warnings: int = 0
    packages: int = 0  # records in the written repodata of all subdirs
    failures: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)  # subdir, fn, reason
    missing: list[str] = dataclasses.field(default_factory=list)  # platforms upstream does not carry
    withheld: list[str] = dataclasses.field(default_factory=list)  # subdirs the prune guard held back
    error_status: int = EXIT_FAILED  # the exit status of the error that stopped the sync
    started: float = 0.0
    finished: float = 0.0

    @property
    def seconds(self) -> float:
        return max(0.0, self.finished - self.started)

    @property
    def exit_status(self) -> int:
        """The command's exit status (docs/operations.md): 130 cancelled; the error's own status
        (1 upstream, 2 settings, 4 storage) when the sync could not run; 1 when a file failed;
        3 when the prune guard held a subdir back; else 0."""
        if self.state == "cancelled":
            return EXIT_INTERRUPTED
        if self.state == "error":
            return self.error_status
        if self.state == "failed":
            return EXIT_FAILED
        return EXIT_PRUNE_WITHHELD if self.withheld else EXIT_OK

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["failures"] = [{"subdir": s, "fn": f, "reason": r} for s, f, r in self.failures]
        data["seconds"] = round(self.seconds, 3)
        return data


@dataclasses.dataclass(frozen=True)
class SyncFinished(Event):
    kind: ClassVar[str] = "finished"
    state: str
    stats: dict[str, Any]
    error: str | None = None

    @classmethod
    def of(cls, stats: SyncStats) -> SyncFinished:
        return cls(stats.state, stats.to_json(), stats.error)
