"""Index: fresh or stale per channel and subdir, with counts; reindex one channel or all."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import ProgressBar, Static
from textual.worker import get_current_worker

from casconsole.console.screens.base import ConsoleScreen, ago, count
from casconsole.console.screens.dialogs import ConfirmDialog
from casconsole.events import Event
from casconsole.layout import find_channels
from casconsole.redact import redact_url
from casconsole.widgets.vtable import Column, VirtualTable


@dataclass(frozen=True)
class StatusRow:
    channel: str
    subdir: str
    fresh: bool
    packages: int
    new: int
    changed: int
    missing: int
    problems: int
    indexed_at: float | None
    note: str = ""
    synced: bool = False  # the mirrored channel: its repodata is written by each sync, not indexed

    @property
    def state(self) -> str:
        return "synced" if self.synced else "fresh" if self.fresh else "stale"


def status_rows(channels: list[Path], mirrored: Path | None = None) -> list[StatusRow]:
    """A row per channel and subdir (and channeldata.json when stale), as `index_status` says.

    The mirrored channel is not indexed: the sync writes its repodata from upstream's records
    (upstream's patches kept), so its rows say so and count the package files on disk.
    """
    from casconsole.index.channel import ChannelError, index_status

    rows = []
    for channel in channels:
        try:
            status = index_status(channel)
        except ChannelError as exc:
            rows.append(StatusRow(channel.name, "", False, 0, 0, 0, 0, 0, None, str(exc)))
            continue
        if mirrored is not None and channel.resolve() == mirrored.resolve():
            for s in status.subdirs:
                files = s.packages - s.missing + s.new
                rows.append(StatusRow(channel.name, s.subdir, True, files, 0, 0, 0, s.problems, None,
                                      "by each sync", synced=True))  # fmt: skip
            continue
        for s in status.subdirs:
            note = "outputs replaced" if s.outputs_changed and s.indexed_at else ""
            rows.append(
                StatusRow(
                    channel.name, s.subdir, s.fresh, s.packages, s.new, s.changed, s.missing, s.problems,
                    s.indexed_at, note,
                )
            )  # fmt: skip
        if not status.channeldata_fresh:
            row = StatusRow(channel.name, "channeldata", False, 0, 0, 0, 0, 0, None, "channeldata.json")
            rows.append(row)
    return rows


class IndexProgress(Message):
    """Coalesced progress of an index run: at most ten a second, plus the last one."""

    def __init__(self, channel: str, read: int, to_read: int, subdirs_done: int, subdirs: int, done: bool):
        super().__init__()
        self.channel = channel
        self.read = read
        self.to_read = to_read
        self.subdirs_done = subdirs_done
        self.subdirs = subdirs
        self.done = done


class ProgressSink:
    """The sink an index run reports to, in its thread: counts, and posts a message now and then."""

    def __init__(self, screen: IndexScreen, channel: str, interval: float = 0.1):
        self.screen = screen
        self.channel = channel
        self.interval = interval
        self.lock = threading.Lock()
        self.read = self.to_read = self.subdirs_done = self.subdirs = 0
        self.problems: list[str] = []
        self.last = 0.0

    def __call__(self, event: Event) -> None:
        from casconsole.index.channel import (
            IndexFinished,
            IndexStarted,
            PackageRead,
            ProblemFound,
            SubdirIndexed,
        )

        with self.lock:
            force = False
            if isinstance(event, IndexStarted):
                self.to_read, self.subdirs, force = event.to_read, len(event.subdirs), True
            elif isinstance(event, PackageRead):
                self.read += 1
            elif isinstance(event, ProblemFound):
                self.problems.append(f"{self.channel}/{event.subdir}/{event.fn}: {event.reason}")
            elif isinstance(event, SubdirIndexed):
                self.subdirs_done += 1
                force = True
            done = isinstance(event, IndexFinished)
            now = time.monotonic()
            if not (force or done or now - self.last >= self.interval):
                return
            self.last = now
            message = IndexProgress(
                self.channel, self.read, self.to_read, self.subdirs_done, self.subdirs, done
            )
        self.screen.post_message(message)


class IndexScreen(ConsoleScreen):
    """The index of each channel: fresh or stale, and reindexing with progress."""

    NAV = "index"
    TITLE_TEXT = "Index"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("i", "reindex", "reindex channel"),
        Binding("a", "reindex_all", "reindex all"),
        Binding("r", "refresh_status", "refresh"),
    ]
    COMMANDS_: ClassVar[list[tuple[str, str, str]]] = [
        ("Reindex all channels", "Index every channel under mirror_dir but the mirror", "reindex_all"),
        ("Reindex the selected channel", "Index the channel under the cursor on the Index screen", "reindex"),
        ("Refresh index status", "Compare each channel's files with its index again", "refresh_status"),
    ]

    def compose_body(self) -> ComposeResult:
        yield Static(id="index-head")
        yield VirtualTable(id="index-table", empty_text="looking at the channels…")
        yield ProgressBar(id="index-progress", show_eta=True)
        yield Static(id="index-log")

    def on_mount(self) -> None:
        super().on_mount()
        self.rows: list[StatusRow] = []
        self.problems: list[str] = []
        self.running = False
        self.table = self.query_one("#index-table", VirtualTable)
        self.table.focus()
        self.query_one("#index-progress").display = False

    def refresh_state(self) -> None:
        self.load_status()

    def action_refresh_status(self) -> None:
        self.load_status()

    @work(thread=True, exclusive=True, exit_on_error=False, group="index-status", name="index status")
    def load_status(self) -> None:
        settings = self.state.settings
        rows = status_rows(find_channels(settings.mirror_dir), settings.channel_dir)
        self.app.call_from_thread(self.show_status, rows)

    def show_status(self, rows: list[StatusRow]) -> None:
        self.rows = rows
        columns = [
            Column("channel", 11, lambda i: rows[i].channel, flex=True),
            Column("subdir", 7, lambda i: rows[i].subdir, auto=True, max_width=14),
            Column(
                "state",
                6,
                lambda i: rows[i].state,
                lambda i: "note" if rows[i].synced else "good" if rows[i].fresh else "warn",
            ),
            Column(
                "pkgs", 7, lambda i: count(rows[i].packages), sort=lambda i: rows[i].packages, align="right"
            ),
            Column("new", 4, lambda i: count(rows[i].new), sort=lambda i: rows[i].new, align="right"),
            Column("chg", 4, lambda i: count(rows[i].changed), sort=lambda i: rows[i].changed, align="right"),
            Column(
                "gone", 4, lambda i: count(rows[i].missing), sort=lambda i: rows[i].missing, align="right"
            ),
            Column(
                "bad",
                4,
                lambda i: count(rows[i].problems),
                lambda i: "bad" if rows[i].problems else None,
                sort=lambda i: rows[i].problems,
                align="right",
            ),
            Column("indexed", 14, lambda i: rows[i].note or ago(rows[i].indexed_at), auto=True, max_width=40),
        ]
        position = self.table.cursor
        self.table.empty_text = f"no channel under {self.state.settings.mirror_dir} yet"
        self.table.set_data(columns, len(rows))
        self.table.cursor = position
        stale = sorted({r.channel for r in rows if not r.fresh and not r.synced})
        text = Text()
        channels = sorted({r.channel for r in rows})
        text.append(f"{len(channels)} channel(s) under {self.state.settings.mirror_dir}")
        if stale:
            text.append(f"\nstale: {', '.join(stale)}", "yellow")
        elif channels:
            text.append("\nevery index is fresh", "green")
        self.query_one("#index-head", Static).update(text)

    def selected_channel(self) -> Path | None:
        index = self.table.cursor_index
        if index is None or index >= len(self.rows):
            return None
        return self.state.settings.mirror_dir / self.rows[index].channel

    def action_reindex(self) -> None:
        channel = self.selected_channel()
        if channel is None:
            self.notify("No channel selected", severity="warning", timeout=3)
            return
        self.confirm_and_index([channel])

    def action_reindex_all(self) -> None:
        """Every channel but the mirrored one, whose repodata each sync writes (`i` on its row
        indexes it anyway, after asking)."""
        mirrored = self.state.settings.channel_dir
        channels = [c for c in find_channels(self.state.settings.mirror_dir) if c != mirrored]
        if not channels:
            self.notify("No channel to index but the mirror, which each sync indexes", timeout=5)
            return
        self.confirm_and_index(channels)

    def confirm_and_index(self, channels: list[Path]) -> None:
        if self.running:
            self.notify("An index run is going on already", severity="warning", timeout=3)
            return
        mirrored = self.state.settings.channel_dir
        if any(c == mirrored for c in channels):
            upstream = redact_url(self.state.settings.remote_url)
            question = (
                f"{mirrored.name} is the mirror of {upstream}: its repodata.json comes "
                "from upstream (with upstream's patches) and each sync writes it again. Indexing it "
                "replaces that repodata with one read from the package files until the next sync.\n\n"
                f"Index {', '.join(c.name for c in channels)} anyway?"
            )

            def answer(yes: bool | None) -> None:
                if yes:
                    self.start(channels)

            self.app.push_screen(ConfirmDialog("Reindex the mirrored channel?", question), answer)
        else:
            self.start(channels)

    def start(self, channels: list[Path]) -> None:
        self.running = True
        self.problems = []
        bar = self.query_one("#index-progress", ProgressBar)
        bar.display = True
        bar.update(total=None, progress=0)
        self.query_one("#index-log", Static).update(Text(f"indexing {channels[0].name}…", "italic"))
        self.index(channels)

    @work(thread=True, exclusive=True, exit_on_error=False, group="index", name="indexing")
    def index(self, channels: list[Path]) -> None:
        from casconsole.index.channel import index_channel

        worker = get_current_worker()
        try:
            for channel in channels:
                if worker.is_cancelled:
                    return
                sink = ProgressSink(self, channel.name)
                stats = index_channel(channel, sink=sink)
                self.problems.extend(sink.problems)
                line = (
                    f"{channel.name}: {count(stats.packages)} packages, {count(stats.read)} read, "
                    f"{len(stats.problems)} problem(s), {stats.seconds:.1f} s"
                )
                self.app.call_from_thread(self.channel_done, line)
        finally:
            self.app.call_from_thread(self.all_done)

    @on(IndexProgress)
    def show_progress(self, message: IndexProgress) -> None:
        bar = self.query_one("#index-progress", ProgressBar)
        bar.update(total=max(1, message.to_read) if message.to_read else None, progress=message.read)
        text = Text(
            f"indexing {message.channel}: {count(message.read)} of {count(message.to_read)} files read, "
            f"{message.subdirs_done} of {message.subdirs} subdirs written"
        )
        self.query_one("#index-log", Static).update(text)

    def channel_done(self, line: str) -> None:
        if not self.is_current:
            self.notify(line, title="Indexed", timeout=5)
        self.query_one("#index-log", Static).update(line)

    def all_done(self) -> None:
        self.running = False
        self.query_one("#index-progress", ProgressBar).display = False
        if self.problems:
            text = Text(f"{len(self.problems)} file(s) left out:\n", "bold yellow")
            text.append("\n".join(self.problems[:6]))
            if len(self.problems) > 6:
                text.append(f"\n… and {len(self.problems) - 6} more (cas-index --status lists them)")
            self.query_one("#index-log", Static).update(text)
        self.load_status()
