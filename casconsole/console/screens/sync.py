"""Sync: start, cancel or attach to a sync, and watch it: progress, transfers, failures, a log.

Whoever runs the sync (this console, `cas-sync` from cron, a detached `cas-sync --detach`), the
screen shows it the same way: it follows the mirror's status log (`<mirror_dir>/.cas/sync.jsonl`)
from a thread, a few times a second, and posts one small `SyncProgress` message when something
changed. A sync started here runs in a worker of the app (it survives leaving this screen);
`b` starts one in the background as its own session instead (it survives the console and the
SSH session); `c` cancels either (the other process gets SIGTERM, which cas-sync handles).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import humanize
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import ProgressBar, RichLog, Static
from textual.worker import get_current_worker

from casconsole.console.screens.base import ConsoleScreen, count, size
from casconsole.console.screens.dialogs import ConfirmDialog, MessageDialog
from casconsole.errors import SyncError
from casconsole.layout import state_dir
from casconsole.redact import redact_url
from casconsole.settings import Settings, write_snapshot
from casconsole.sync import report
from casconsole.sync.lock import lock_holder
from casconsole.sync.safety import SPACE_MARGIN, free_space
from casconsole.sync.status import PastSync, StatusReader, SyncStatus, read_status, sync_history

ACTIVE_SHOWN = 6  # transfers listed
FAILURES_SHOWN = 20


def clock(timestamp: float | None) -> str:
    if not timestamp:
        return "--:--:--"
    return datetime.datetime.fromtimestamp(timestamp).strftime("%H:%M:%S")


class LogTail(StatusReader):
    """The core's status-log follower, plus a line per notable event for the log pane."""

    def __init__(self, mirror_dir: Path):
        super().__init__(mirror_dir)
        self.lines: deque[str] = deque(maxlen=500)
        self.line_count = 0  # lines ever added, so a follower can tell which are new

    def poll(self) -> bool:  # type: ignore[override]
        """Read what was appended; whether anything changed."""
        read, state = self.events_read, self.status.state
        super().poll()
        return self.events_read != read or self.status.state != state

    def on_event(self, event: dict) -> None:
        line = report.describe(event)
        if line is None:
            return
        text = line.text
        if event.get("event") == "started":
            who = "this console" if event.get("pid") == os.getpid() else f"pid {event.get('pid')}"
            text = f"sync started by {who}: {text}"
        self.add_line(f"{clock(event.get('time'))} {text}")

    def on_gone(self) -> None:
        self.add_line(f"{clock(time.time())} the sync (pid {self.status.pid}) is gone without finishing")

    def add_line(self, line: str) -> None:
        self.lines.append(line)
        self.line_count += 1

    def lines_since(self, seen: int) -> list[str]:
        """The lines added after the first `seen` (those still kept)."""
        new = min(self.line_count - seen, len(self.lines))
        return list(self.lines)[len(self.lines) - new :] if new > 0 else []


@dataclass
class SyncView:
    """A snapshot of a sync for the screen: plain numbers and short lists."""

    state: str = "none"
    pid: int | None = None
    here: bool = False  # run by this console
    started: float | None = None
    finished: float | None = None
    elapsed: float = 0.0
    files_total: int = 0
    files_done: int = 0
    files_failed: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    rate: float = 0.0
    eta: float | None = None
    error: str | None = None
    subdirs: list[tuple[str, int, int, int, int, int, str]] = field(default_factory=list)
    active: list[tuple[str, int, int]] = field(default_factory=list)
    active_count: int = 0
    failures: list[str] = field(default_factory=list)
    new_lines: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, status: SyncStatus, new_lines: list[str]) -> SyncView:
        subdirs = []
        for name, s in status.subdirs.items():
            what = "done" if s.finished else ("waiting" if s.total == 0 and status.state == "running" else "")
            subdirs.append((name, s.done, s.total, s.failed, s.done_bytes, s.total_bytes, what))
        active = sorted(status.active.values(), key=lambda t: -t.size)
        return cls(
            state=status.state,
            pid=status.pid,
            here=status.pid == os.getpid(),
            started=status.started,
            finished=status.finished,
            elapsed=status.elapsed,
            files_total=status.files_total,
            files_done=status.files_done,
            files_failed=status.files_failed,
            bytes_total=status.bytes_total,
            bytes_done=status.bytes_done,
            rate=status.rate,
            eta=status.eta,
            error=status.error,
            subdirs=subdirs,
            active=[(f"{t.subdir}/{t.fn}", t.done, t.size) for t in active[:ACTIVE_SHOWN]],
            active_count=len(status.active),
            failures=[f"{f['subdir']}/{f['fn']}: {f['reason']}" for f in status.failures[-FAILURES_SHOWN:]],
            new_lines=new_lines,
        )


def last_sync_text(settings: Settings) -> str:
    """The running or last sync of the mirror in one line, for the overview."""
    status = read_status(settings.mirror_dir)
    if status.state == "none":
        return "none yet: start one on Sync (4)"
    if status.state == "running":
        share = f"{status.bytes_done / status.bytes_total:.0%}" if status.bytes_total else "planning"
        return f"running (pid {status.pid}): {share}, {status.files_done} of {status.files_total} files"
    when = humanize.naturaltime(time.time() - (status.finished or status.updated or status.started or 0))
    if status.state == "error":
        return f"error {when}: {status.error}"
    stats = status.stats or {}
    return (
        f"{status.state} {when}: {count(stats.get('downloaded', 0))} downloaded, "
        f"{count(stats.get('failed', 0))} failed, {count(stats.get('packages', 0))} packages mirrored"
    )


class SyncStartError(SyncError):
    """`cas-sync --detach` did not start; the message is its own last line."""


class SyncProgress(Message):
    """A coalesced snapshot of the sync being followed."""

    def __init__(self, view: SyncView):
        super().__init__()
        self.view = view


class SyncScreen(ConsoleScreen):
    """Mirror the plan: start, cancel or attach to a sync and watch it."""

    NAV = "sync"
    TITLE_TEXT = "Sync"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "start", "start sync"),
        Binding("b", "start_background", "start in background"),
        Binding("c", "cancel_sync", "cancel"),
        Binding("h", "history", "history"),
        Binding("v", "start_verify", "verify all", show=False),
    ]
    COMMANDS_: ClassVar[list[tuple[str, str, str]]] = [
        ("Start sync", "Mirror the plan now, in this console", "start"),
        (
            "Start sync in the background",
            "A cas-sync of its own that survives logging out",
            "start_background",
        ),
        ("Verify the mirror", "Sync, re-hashing every mirrored file and repairing bad ones", "start_verify"),
        ("Cancel sync", "Stop the running sync; partial files are kept for the next run", "cancel_sync"),
        ("Sync history", "The past syncs of the mirror: date, outcome, files, bytes, duration", "history"),
    ]
    POLL_RUNNING = 0.25
    POLL_IDLE = 1.0

    def compose_body(self) -> ComposeResult:
        yield Static(id="sync-head")
        yield ProgressBar(id="sync-progress", show_eta=False)
        with VerticalScroll(id="sync-body"):
            yield Static(id="sync-detail")
        yield RichLog(id="sync-log", max_lines=500, wrap=True, markup=False)

    def on_mount(self) -> None:
        super().on_mount()
        self.view = SyncView()
        self._seen = False
        self._finished: float | None = None  # when the last sync seen ended
        self.history: list[PastSync] | None = None  # shown instead of the detail while not None
        self.follow(self.state.settings.mirror_dir)

    def refresh_state(self) -> None:
        self.show(self.view)

    # ---------------------------------------------------------------- following the log

    @work(
        thread=True, exclusive=True, exit_on_error=False, group="sync-follow", name="following the sync log"
    )
    def follow(self, mirror_dir: Path) -> None:
        worker = get_current_worker()
        tail = LogTail(mirror_dir)
        seen = 0
        first = True
        while not worker.is_cancelled:
            changed = tail.poll()
            running = tail.status.state == "running"
            if changed or running or first:
                lines = tail.lines_since(seen)
                seen = tail.line_count
                self.post_message(SyncProgress(SyncView.of(tail.status, lines)))
                first = False
            time.sleep(self.POLL_RUNNING if running else self.POLL_IDLE)

    @on(SyncProgress)
    def sync_progress(self, message: SyncProgress) -> None:
        view = self.view = message.view
        log = self.query_one("#sync-log", RichLog)
        for line in view.new_lines:
            log.write(Text(line, "red" if "FAILED" in line or "stopped" in line else ""))
        self.show(view)
        if not self._seen:  # the first snapshot: a sync that ended before is history
            self._seen, self._finished = True, view.finished
        elif view.finished is not None and view.finished != self._finished:
            self._finished = view.finished
            self.console.sync_finished(view.state, view.error)
            if self.history is not None:
                self.load_history()
        self.refresh_bindings()

    # ---------------------------------------------------------------- drawing

    def show(self, v: SyncView) -> None:
        head = Text()
        who = "this console" if v.here else f"pid {v.pid}"
        if v.state == "none":
            head.append("No sync has run on this mirror yet. ", "bold")
            head.append("s starts one here, b one in the background (it survives logging out).")
        elif v.state == "running":
            head.append("running ", "bold green")
            head.append(f"({who}) since {clock(v.started)}, {report.duration(v.elapsed)}")
        else:
            style = {"done": "bold green", "cancelled": "bold yellow"}.get(v.state, "bold red")
            head.append(f"{v.state} ", style)
            head.append(f"({who}) {clock(v.started)} → {clock(v.finished)}, {report.duration(v.elapsed)}")
            if v.error:
                head.append(f"\n{v.error}", "red")
        if v.state != "none":
            rate = f"{size(v.rate)}/s" if v.rate else "-"
            eta = f" · ETA {report.duration(v.eta)}" if v.eta is not None else ""
            head.append(
                f"\n{count(v.files_done)} of {count(v.files_total)} files · {size(v.bytes_done)} of "
                f"{size(v.bytes_total)} · {rate}{eta}"
            )
            if v.files_failed:
                head.append(f" · {count(v.files_failed)} failed", "bold red")
        self.query_one("#sync-head", Static).update(head)
        bar = self.query_one("#sync-progress", ProgressBar)
        bar.display = v.state != "none"
        if v.bytes_total:
            bar.update(total=v.bytes_total, progress=min(v.bytes_done, v.bytes_total))
        elif v.state == "running":
            bar.update(total=None)
        else:
            bar.update(total=1, progress=1 if v.state == "done" else 0)
        if self.history is None:
            self.query_one("#sync-detail", Static).update(self.detail(v))

    def detail(self, v: SyncView) -> Table:
        grid = Table.grid(padding=(0, 1))
        grid.add_column()
        if v.subdirs:
            subdirs = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold")
            for name, justify in (("subdir", "left"), ("files", "right"), ("bytes", "right"), ("", "left")):
                subdirs.add_column(name, justify=justify)  # type: ignore[arg-type]
            for name, done, total, failed, done_bytes, total_bytes, what in v.subdirs:
                files = f"{count(done)}/{count(total)}" + (f" ({failed} failed)" if failed else "")
                subdirs.add_row(name, files, f"{size(done_bytes)}/{size(total_bytes)}", what)
            grid.add_row(subdirs)
        if v.active:
            grid.add_row(Text(f"in flight ({v.active_count})", "bold"))
            for name, done, total in v.active:
                share = f"{done / total:.0%}" if total else ""
                grid.add_row(Text(f"  {name}  {size(done)}/{size(total)} {share}", overflow="ellipsis"))
        if v.failures:
            grid.add_row(Text(f"failures ({v.files_failed})", "bold red"))
            for failure in v.failures:
                grid.add_row(Text(f"  {failure}", "red", overflow="ellipsis"))
        return grid

    # ---------------------------------------------------------------- keys

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        running = self.view.state == "running" or self.console.sync_job is not None
        if action in ("start", "start_background", "start_verify"):
            return None if running else True
        if action == "cancel_sync":
            return True if running else None
        return True

    def _can_start(self) -> bool:
        if self.state.problems:
            self.app.push_screen(
                MessageDialog(
                    "The settings have problems",
                    "Fix them first (Config, 2 lists them): a sync runs only on settings without problems.",
                )
            )
            return False
        holder = lock_holder(self.state.settings.mirror_dir)
        if holder is not None or self.console.sync_job is not None:
            self.notify(f"A sync is running already (pid {holder or os.getpid()}): this screen follows it")
            return False
        return True

    def start_question(self, verify: bool, background: bool) -> str:
        """What the sync will do, asked once before it starts: what it downloads and deletes by
        the plan on screen, the free space against the sync's own rule, unsaved changes."""
        settings = self.state.settings
        plan = self.state.plan
        lines = []
        where = "in the background (cas-sync --detach: it survives the console)" if background else "here"
        what = "Sync and re-hash every mirrored file" if verify else "Sync"
        lines.append(f"{what} {where}: {redact_url(settings.remote_url)} into {settings.channel_dir}")
        need = 0
        if plan is not None:
            t = plan.total
            need = t.download_bytes
            lines.append(
                f"\ndownload  {count(t.download)} file(s), {size(t.download_bytes)}"
                f"\ndelete    {count(t.delete)} file(s) that left the plan"
                + ("" if settings.prune else " (prune is off: kept)")
                + f"\nkeep      {count(t.present)} file(s) on disk"
            )
            if len(plan.subdirs) > 1:
                per = ", ".join(f"{n} {count(sp.funnel.download)}" for n, sp in plan.subdirs.items())
                lines.append(f"          by subdir: {per}")
        else:
            why = f" ({self.state.plan_error})" if self.state.plan_error else ""
            lines.append(f"\nThe plan is not made yet{why}: the sync decides what to fetch itself.")
        free = free_space(settings.mirror_dir)
        if free is None:
            lines.append("free      unknown (the filesystem does not tell)")
        else:
            lines.append(f"free      {size(free)} on the mirror's disk")
            wanted = need + SPACE_MARGIN
            if need and wanted > free:
                lines.append(
                    f"\n⚠ not enough room: {size(wanted)} needed with the margin; the sync will refuse"
                )
        pending = self.state.pending_summary()
        if pending:
            lines.append(
                f"\nUnsaved changes go with it: {pending}. (A sync started from the files, by cron "
                "or cas-sync, will not have them.)"
            )
        return "\n".join(lines)

    def _confirm(self, then, verify: bool = False, background: bool = False) -> None:
        """Ask once, showing the sync's size and the room for it; `then()` on yes."""
        title = "Start the sync?" if not verify else "Start the sync and re-hash every file?"
        self.app.push_screen(
            ConfirmDialog(title, self.start_question(verify, background)), lambda yes: yes and then()
        )

    def action_start(self, verify: bool = False) -> None:
        if self._can_start():
            self._confirm(lambda: self.console.start_sync(verify=verify), verify=verify)
            self.refresh_bindings()

    def action_start_verify(self) -> None:
        self.action_start(verify=True)

    def action_start_background(self) -> None:
        if self._can_start():
            self._confirm(lambda: self.start_detached(self.state.settings), background=True)

    # ---------------------------------------------------------------- history

    def action_history(self) -> None:
        """Show the past syncs in place of the detail, or the detail again."""
        if self.history is not None:
            self.history = None
            self.show(self.view)
            return
        self.history = []
        self.query_one("#sync-detail", Static).update(Text("reading the status log…", "italic"))
        self.load_history()

    @work(thread=True, exclusive=True, exit_on_error=False, group="sync-history", name="reading the history")
    def load_history(self) -> None:
        past = sync_history(self.state.settings.mirror_dir)
        self.app.call_from_thread(self.show_history, past)

    def show_history(self, past: list[PastSync]) -> None:
        if self.history is None:
            return
        self.history = past
        self.query_one("#sync-detail", Static).update(history_table(past))

    @work(thread=True, exclusive=True, exit_on_error=False, group="sync-detach", name="starting the sync")
    def start_detached(self, settings: Settings) -> None:
        """`cas-sync --detach` with these settings: its own session, followed through the log."""
        config = write_snapshot(
            settings, state_dir(settings.mirror_dir) / f"console-settings.{os.getpid()}.yaml"
        )
        # the file says every key: no variable of this process may override it in the child
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_MIRROR_")}
        env["CAS_MIRROR_SYSTEM_CONFIG"] = env["CAS_MIRROR_USER_CONFIG"] = os.devnull
        command = [sys.executable, "-m", "casconsole.cli.sync", "--detach", "--config", str(config)]
        try:
            result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
        finally:
            with contextlib.suppress(OSError):
                config.unlink()
        if result.returncode != 0:
            message = (result.stderr or result.stdout).strip().splitlines()
            raise SyncStartError(
                message[-1] if message else f"cas-sync --detach exited with {result.returncode}"
            )
        self.app.call_from_thread(self.notify, result.stdout.strip().splitlines()[0], title="Sync")

    def action_cancel_sync(self) -> None:
        job = self.console.sync_job
        pid = self.view.pid if self.view.state == "running" else None
        if job is None and pid is None:
            self.notify("No sync is running", timeout=3)
            return
        who = "this console's sync" if job is not None else f"the sync of pid {pid}"

        def answer(yes: bool | None) -> None:
            if not yes:
                return
            if job is not None:
                job.cancel()
            elif pid is not None:
                try:
                    os.kill(pid, signal.SIGTERM)  # cas-sync stops cleanly on SIGTERM
                except ProcessLookupError:
                    self.notify("That sync is gone already", timeout=3)
                except PermissionError:
                    self.app.push_screen(
                        MessageDialog("Cannot cancel that sync", f"pid {pid} belongs to another user.")
                    )
            self.notify("Cancelling: transfers in flight stop, partial files are kept", timeout=5)

        question = f"Cancel {who}? Files done stay; partial downloads resume on the next run."
        self.app.push_screen(ConfirmDialog("Cancel the sync?", question), answer)


def history_table(past: list[PastSync]) -> Table | Text:
    """The past syncs, the newest first: when, how it ended, files, bytes, how long."""
    if not past:
        return Text("No sync in the status log yet (h goes back).", "italic")
    table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold", title_justify="left")
    table.title = Text(f"{len(past)} past sync(s), newest first (h goes back)", "bold")
    for name, justify in (
        ("started", "left"),
        ("outcome", "left"),
        ("files", "right"),
        ("bytes", "right"),
        ("deleted", "right"),
        ("took", "right"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    styles = {"done": "green", "running": "bold green", "cancelled": "yellow"}
    for sync in past:
        when = datetime.datetime.fromtimestamp(sync.started).strftime("%Y-%m-%d %H:%M")
        outcome = sync.state + (" (verify)" if sync.verify else "")
        if sync.failed:
            outcome += f", {sync.failed} failed"
        took = report.duration(sync.seconds) if sync.seconds is not None else "-"
        table.add_row(
            when,
            Text(outcome, styles.get(sync.state, "red")),
            count(sync.downloaded),
            size(sync.fetched_bytes),
            count(sync.removed),
            took,
        )
    return table
