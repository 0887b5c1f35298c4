"""The sync status log: JSON lines under `<mirror_dir>/.cas/`, and the status read from it.

Every sync appends its events to `<mirror_dir>/.cas/sync.jsonl`, one JSON object a line
(`Event.to_json()`: `event`, `time`, then the event's fields; `docs/sync.md` lists them).
`file_progress` lines are thinned to one a second per file. When the log passes 32 MiB, the
next sync first moves it to `sync.jsonl.1`.

`read_status(mirror_dir)` reports the running or last sync; `StatusReader` does the same
incrementally (it reads only what was appended since its last poll), which is how the console
follows a sync that runs in another process. Both `cas-sync --status` and the console use them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from pathlib import Path
from typing import Any

import msgspec

from casconsole.events import Event
from casconsole.layout import SYNC_LOG, state_dir
from casconsole.procutil import pid_alive
from casconsole.sync.events import FileDone, FileProgress

ROTATE_BYTES = 32 << 20
LOG_PROGRESS_EVERY = 1.0  # seconds between logged file_progress lines of one file
LOG_FLUSH_EVERY = 0.1  # seconds a file_done line may wait in the buffer


def log_path(mirror_dir: Path) -> Path:
    return state_dir(mirror_dir) / SYNC_LOG


def event_line(event: Event) -> bytes:
    """The event as one JSON line: `event`, `time`, then its fields (`Event.to_json()`, faster)."""
    data = {"event": event.kind, "time": time.time()}
    data.update(event.__dict__)
    return _encode(data) + b"\n"


_encode = msgspec.json.Encoder(enc_hook=str).encode
_decode = msgspec.json.Decoder().decode


class StatusLog:
    """A sink that appends events to the status log (open it only while holding the lock)."""

    def __init__(self, mirror_dir: Path):
        self.path = log_path(mirror_dir)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if self.path.stat().st_size > ROTATE_BYTES:
                os.replace(self.path, self.path.with_name(SYNC_LOG + ".1"))
        self._fh = open(self.path, "ab")  # noqa: SIM115 (closed in close())
        self._progress_at: dict[tuple[str, str], float] = {}
        self._flushed_at = 0.0
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if isinstance(event, FileProgress):
            key = (event.subdir, event.fn)
            now = time.monotonic()
            if now - self._progress_at.get(key, 0.0) < LOG_PROGRESS_EVERY:
                return
            self._progress_at[key] = now
        line = event_line(event)
        with self._lock:
            if self._fh is not None:
                self._fh.write(line)
                # a FileDone a file, thousands a minute: flushed with the next event that is
                # not one, or a tenth of a second on (one write a file was 2% of a sync's CPU)
                now = time.monotonic()
                if not isinstance(event, FileDone) or now - self._flushed_at >= LOG_FLUSH_EVERY:
                    self._fh.flush()
                    self._flushed_at = now

    def close(self) -> None:
        with self._lock:
            fh, self._fh = self._fh, None
            if fh is not None:
                fh.close()  # may raise (its last lines met a full disk): closed all the same


# ---------------------------------------------------------------- reading


@dataclasses.dataclass
class SubdirStatus:
    files: int = 0  # to download
    bytes: int = 0
    check: int = 0  # on disk, to hash
    check_bytes: int = 0
    present: int = 0
    delete: int = 0
    done: int = 0  # files done (downloaded, checked or repaired)
    done_bytes: int = 0
    failed: int = 0
    failed_bytes: int = 0
    removed: int = 0
    packages: int | None = None  # records in the written repodata, once the subdir is done
    finished: bool = False

    @property
    def total(self) -> int:
        return self.files + self.check

    @property
    def total_bytes(self) -> int:
        return self.bytes + self.check_bytes

    @property
    def settled_total_bytes(self) -> int:
        """The bytes that will be in place when this subdir is done: failed files left out."""
        return self.total_bytes - self.failed_bytes


@dataclasses.dataclass
class Transfer:
    subdir: str
    fn: str
    done: int
    size: int


@dataclasses.dataclass
class SyncStatus:
    """The running or last sync of a mirror, as its status log tells it.

    state: `none` (no sync has run), `running`, `interrupted` (its process is gone without
    finishing: killed), or how it finished: `done`, `failed` (some files failed), `cancelled`,
    `error` (it could not run: upstream unreachable, ...).
    """

    state: str = "none"
    pid: int | None = None
    remote_url: str = ""
    mirror_dir: str = ""
    channel: str = ""
    verify: bool = False
    started: float | None = None
    finished: float | None = None
    updated: float | None = None
    subdirs: dict[str, SubdirStatus] = dataclasses.field(default_factory=dict)
    active: dict[str, Transfer] = dataclasses.field(default_factory=dict)
    failures: list[dict[str, str]] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    missing: dict[str, str] = dataclasses.field(default_factory=dict)  # platforms upstream lacks
    withheld: dict[str, int] = dataclasses.field(default_factory=dict)  # subdir -> files kept by the guard
    error: str | None = None
    stats: dict[str, Any] | None = None

    # ---- totals

    @property
    def files_total(self) -> int:
        return sum(s.total for s in self.subdirs.values())

    @property
    def files_done(self) -> int:
        return sum(s.done for s in self.subdirs.values())

    @property
    def files_failed(self) -> int:
        return sum(s.failed for s in self.subdirs.values())

    @property
    def files_left(self) -> int:
        return max(0, self.files_total - self.files_done - self.files_failed)

    @property
    def bytes_total(self) -> int:
        return sum(s.total_bytes for s in self.subdirs.values())

    @property
    def bytes_done(self) -> int:
        in_flight = sum(t.done for t in self.active.values())
        return sum(s.done_bytes for s in self.subdirs.values()) + in_flight

    @property
    def bytes_failed(self) -> int:
        return sum(s.failed_bytes for s in self.subdirs.values())

    @property
    def bytes_left(self) -> int:
        return max(0, self.bytes_total - self.bytes_done - self.bytes_failed)

    def subdir_bytes_done(self, subdir: str) -> int:
        """Bytes settled in one subdir, transfers in flight included."""
        sub = self.subdirs.get(subdir)
        in_flight = sum(t.done for t in self.active.values() if t.subdir == subdir)
        return (sub.done_bytes if sub else 0) + in_flight

    @property
    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        end = self.finished or (time.time() if self.state == "running" else self.updated or self.started)
        return max(0.0, end - self.started)

    @property
    def rate(self) -> float:
        """Average bytes a second since the start."""
        return self.bytes_done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the average rate (None when it cannot be told)."""
        if self.state != "running" or not self.rate:
            return None
        return self.bytes_left / self.rate

    # ---- applying events

    def apply(self, data: dict[str, Any]) -> None:
        """Apply one event (a decoded log line, or `Event.to_json()`)."""
        kind = data.get("event")
        self.updated = data.get("time", self.updated)
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            handler(data)

    def apply_event(self, event: Event) -> None:
        self.apply({"event": event.kind, "time": time.time(), **event.__dict__})

    def _sub(self, data: dict[str, Any]) -> SubdirStatus:
        return self.subdirs.setdefault(str(data.get("subdir", "")), SubdirStatus())

    def _on_started(self, d: dict[str, Any]) -> None:
        fresh = SyncStatus(
            state="running",
            pid=d.get("pid"),
            remote_url=d.get("remote_url", ""),
            mirror_dir=d.get("mirror_dir", ""),
            channel=d.get("channel", ""),
            verify=bool(d.get("verify")),
            started=d.get("time"),
            updated=d.get("time"),
            subdirs={s: SubdirStatus() for s in d.get("subdirs", [])},
        )
        self.__dict__.update(fresh.__dict__)

    def _on_planned(self, d: dict[str, Any]) -> None:
        s = self._sub(d)
        for key in ("files", "bytes", "check", "check_bytes", "present", "delete"):
            setattr(s, key, int(d.get(key, 0)))

    def _on_warning(self, d: dict[str, Any]) -> None:
        if len(self.warnings) < 1000:
            sub = d.get("subdir")
            self.warnings.append(f"{sub}: {d.get('message')}" if sub else str(d.get("message")))

    def _on_subdir_missing(self, d: dict[str, Any]) -> None:
        subdir = str(d.get("subdir", ""))
        self.subdirs.pop(subdir, None)  # nothing will happen there: it is not "not finished"
        self.missing[subdir] = str(d.get("reason", ""))
        self.warnings.append(f"{subdir}: not carried by upstream, left out ({d.get('reason')})")

    def _on_file_started(self, d: dict[str, Any]) -> None:
        self.active[f"{d['subdir']}/{d['fn']}"] = Transfer(
            d["subdir"], d["fn"], d.get("offset", 0), d["size"]
        )

    def _on_file_progress(self, d: dict[str, Any]) -> None:
        self.active[f"{d['subdir']}/{d['fn']}"] = Transfer(d["subdir"], d["fn"], d["done"], d["size"])

    def _on_file_done(self, d: dict[str, Any]) -> None:
        self.active.pop(f"{d['subdir']}/{d['fn']}", None)
        s = self._sub(d)
        s.done += 1
        s.done_bytes += int(d.get("size", 0))

    def _on_file_failed(self, d: dict[str, Any]) -> None:
        self.active.pop(f"{d['subdir']}/{d['fn']}", None)
        sub = self._sub(d)
        sub.failed += 1
        sub.failed_bytes += int(d.get("size", 0))
        self.failures.append({"subdir": d["subdir"], "fn": d["fn"], "reason": d.get("reason", "")})

    def _on_file_removed(self, d: dict[str, Any]) -> None:
        self._sub(d).removed += 1

    def _on_subdir_done(self, d: dict[str, Any]) -> None:
        s = self._sub(d)
        s.finished = True
        s.packages = d.get("packages")
        if d.get("withheld"):
            self.withheld[str(d.get("subdir"))] = int(d["withheld"])

    def _on_finished(self, d: dict[str, Any]) -> None:
        self.state = d.get("state", "done")
        self.finished = d.get("time")
        self.error = d.get("error")
        self.stats = d.get("stats")
        self.active.clear()

    # ---- output

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["active"] = list(data["active"].values())
        data.update(
            files_total=self.files_total,
            files_done=self.files_done,
            files_failed=self.files_failed,
            files_left=self.files_left,
            bytes_total=self.bytes_total,
            bytes_done=self.bytes_done,
            bytes_left=self.bytes_left,
            elapsed=round(self.elapsed, 3),
            rate=round(self.rate),
            eta=None if self.eta is None else round(self.eta, 1),
        )
        return data


class StatusReader:
    """Follows a mirror's status log: each `poll()` reads only the lines appended since the last.

    A rotated or replaced log is read again from its start. A follower that shows more than the
    status (the console's log pane) overrides `on_event` and `on_gone`.
    """

    def __init__(self, mirror_dir: Path):
        self.path = log_path(mirror_dir)
        self.status = SyncStatus()
        self.events_read = 0
        self._offset = 0
        self._inode: int | None = None
        self._tail = b""

    def poll(self) -> SyncStatus:
        try:
            with open(self.path, "rb") as fh:
                st = os.fstat(fh.fileno())
                if st.st_ino != self._inode or st.st_size < self._offset:
                    self.status, self._offset, self._tail, self._inode = SyncStatus(), 0, b"", st.st_ino
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return self.status
        self._offset += len(data)
        data = self._tail + data
        lines = data.split(b"\n")
        self._tail = lines.pop()  # an unfinished last line waits for the next poll
        for line in lines:
            if not line.strip():
                continue
            try:
                event = _decode(line)
            except msgspec.DecodeError:
                continue  # a line cut short by a kill
            if isinstance(event, dict):
                self.status.apply(event)
                self.events_read += 1
                self.on_event(event)
        if self.status.state == "running" and not (self.status.pid and pid_alive(self.status.pid)):
            self.status.state = "interrupted"
            self.status.active.clear()
            self.on_gone()
        return self.status

    def on_event(self, event: dict) -> None:
        """Called for each event read, once the status has taken it in."""

    def on_gone(self) -> None:
        """Called when the process of a running sync is found gone without finishing."""


def read_status(mirror_dir: Path) -> SyncStatus:
    """The running or last sync of the mirror at `mirror_dir` (state `none` when there was none)."""
    return StatusReader(mirror_dir).poll()


# ---------------------------------------------------------------- history


@dataclasses.dataclass
class PastSync:
    """One sync of the status log, as the history lists it."""

    started: float
    pid: int | None = None
    verify: bool = False
    state: str = "interrupted"  # until its `finished` line is found (none: killed, or running)
    finished: float | None = None
    downloaded: int = 0
    fetched_bytes: int = 0
    removed: int = 0
    failed: int = 0
    error: str | None = None

    @property
    def seconds(self) -> float | None:
        return None if self.finished is None else max(0.0, self.finished - self.started)


_STARTED = b'{"event":"started"'
_FINISHED = b'{"event":"finished"'


def sync_history(mirror_dir: Path, limit: int = 200) -> list[PastSync]:
    """The syncs the status log and its rotated copy (`sync.jsonl.1`) remember, the newest first.

    Only the `started` and `finished` lines are decoded (found by their first bytes), so a log of
    32 MiB is read in a fraction of a second. The last sync shows `running` while its process
    lives, `interrupted` when it is gone without a `finished` line.
    """
    path = log_path(mirror_dir)
    syncs: list[PastSync] = []
    for part in (path.with_name(path.name + ".1"), path):
        try:
            data = part.read_bytes()
        except OSError:
            continue
        for line in data.split(b"\n"):
            if not (line.startswith(_STARTED) or line.startswith(_FINISHED)):
                continue
            try:
                event = _decode(line)
            except msgspec.DecodeError:
                continue
            if not isinstance(event, dict) or not isinstance(event.get("time"), (int, float)):
                continue
            if event["event"] == "started":
                syncs.append(PastSync(event["time"], event.get("pid"), bool(event.get("verify"))))
            elif syncs and syncs[-1].finished is None:
                stats = event.get("stats") if isinstance(event.get("stats"), dict) else {}
                last = syncs[-1]
                last.state, last.finished = str(event.get("state", "done")), event["time"]
                last.error = event.get("error")
                for key in ("downloaded", "fetched_bytes", "removed", "failed"):
                    value = stats.get(key, 0)
                    setattr(last, key, value if isinstance(value, int) else 0)
    if syncs and syncs[-1].finished is None and syncs[-1].pid and pid_alive(syncs[-1].pid):
        syncs[-1].state = "running"
    return syncs[::-1][:limit]
