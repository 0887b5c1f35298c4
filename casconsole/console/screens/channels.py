"""Channels: every channel under mirror_dir, a package table per subdir (from its repodata.json).

The screen follows the disk while it is shown: once a second it looks at the channel folders
and at the shown subdir's repodata.json (a stat, nothing read), so a package uploaded to a
cas-server, a `cas-index` run or a sync appears without a key pressed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Input, Static

from casconsole.conda.repodata import RepoData, decode_repodata, empty_repodata, load_local_repodata
from casconsole.console.screens.base import ConsoleScreen, count, date, size
from casconsole.console.screens.plan import version_key
from casconsole.console.session import settle_heap
from casconsole.layout import find_channels, subdir_folders
from casconsole.widgets.vtable import Column, VirtualTable


def channel_columns(records: list) -> list[Column]:
    return [
        Column("name", 18, lambda i: records[i].name, flex=True),
        Column("version", 10, lambda i: records[i].version, sort=lambda i: version_key(records[i].version)),
        Column("build", 14, lambda i: records[i].build),
        Column("size", 8, lambda i: size(records[i].size), sort=lambda i: records[i].size, align="right"),
        Column("license", 12, lambda i: records[i].license or ""),
        Column("date", 10, lambda i: date(records[i].timestamp), sort=lambda i: records[i].timestamp or 0),
    ]


def subdirs_of(channel: Path) -> list[str]:
    return subdir_folders(channel)


POLL_SECONDS = 1.0  # how often the shown channel is looked at for changes (uploads, indexing)


def repodata_key(channel: Path, subdir: str) -> tuple[int, int, int] | None:
    """What changes when a subdir's repodata.json is replaced (each writer renames a new file in)."""
    try:
        st = os.stat(channel / subdir / "repodata.json")
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class ChannelsScreen(ConsoleScreen):
    """The channels on disk: each subdir's packages, sortable and searchable."""

    NAV = "channels"
    TITLE_TEXT = "Channels"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "channel(1)", "channel"),
        Binding("right_square_bracket", "subdir(1)", "subdir", key_display="]"),
        Binding("left_square_bracket", "subdir(-1)", "previous subdir", key_display="[", show=False),
        Binding("slash", "search", "search", key_display="/", show=False),  # shown by the search field
        Binding("r", "rescan", "rescan"),
    ]
    COMMANDS_: ClassVar[list[tuple[str, str, str]]] = [
        ("Rescan channels", "Look for channels under mirror_dir and read the repodata again", "rescan"),
        ("Next channel", "Show the next channel's packages", "channel(1)"),
    ]

    def compose_body(self) -> ComposeResult:
        yield Static(id="channels-head")
        with Horizontal(id="channels-bar"):
            yield Static("/", id="channels-search-label")
            yield Input(placeholder="search names", id="channels-search", compact=True)
            yield Static(id="channels-count")
        yield VirtualTable(id="channels-table", empty_text="looking for channels…")
        yield Static(id="channels-detail")

    def on_mount(self) -> None:
        super().on_mount()
        self.channels: list[Path] = []
        self.channel_index = 0
        self.subdir_index = 0
        self.repodata: RepoData | None = None
        self.total_size = 0
        self.table = self.query_one("#channels-table", VirtualTable)
        self.table.focus()
        self.shown_key: tuple[Path, str, tuple | None] | None = None  # what the table was read from
        self.layout_key: tuple = ()  # the channels and subdirs the head shows
        self.live_note = ""  # what the last change brought, e.g. "2 new at 12:03:04"
        self.live = False  # the read under way follows a change on disk (not a key)
        self.set_interval(POLL_SECONDS, self.poll)

    def poll(self) -> None:
        """Show what changed on disk since the last look: new channels or subdirs in the head,
        a replaced repodata.json read again (the cursor staying on its package)."""
        if self.app.screen is not self or not self.is_mounted:
            return
        channels = find_channels(self.state.settings.mirror_dir)
        channel = self.channel
        if [c.name for c in channels] != [c.name for c in self.channels]:
            if channel is None or channel not in channels:
                self.refresh_state()  # the one shown is gone, or there was none
                return
            self.channels, self.channel_index = channels, channels.index(channel)
        if channel is None:
            return
        if self._layout() != self.layout_key:
            subdirs = subdirs_of(channel)
            shown = self.shown_key[1] if self.shown_key else None
            if shown in subdirs:  # a subdir made by an upload does not move the one shown
                self.subdir_index = subdirs.index(shown)
            self.show_head()
        subdir = self.subdir
        if subdir is None:
            return
        if self.shown_key != (channel, subdir, repodata_key(channel, subdir)):
            self.live = True
            self.load()

    def refresh_state(self) -> None:
        self.channels = find_channels(self.state.settings.mirror_dir)
        if not self.channels:
            self.repodata = None
            self.table.empty_text = f"no channel under {self.state.settings.mirror_dir} yet: run a sync (4)"
            self.table.set_data(None, 0)
            self.show_head()
            return
        self.channel_index = min(self.channel_index, len(self.channels) - 1)
        self.load()

    @property
    def channel(self) -> Path | None:
        return self.channels[self.channel_index] if self.channels else None

    @property
    def subdir(self) -> str | None:
        channel = self.channel
        subdirs = subdirs_of(channel) if channel else []
        return subdirs[min(self.subdir_index, len(subdirs) - 1)] if subdirs else None

    def _layout(self) -> tuple:
        channel = self.channel
        return tuple(c.name for c in self.channels), tuple(subdirs_of(channel)) if channel else ()

    def show_head(self, note: str = "") -> None:
        self.layout_key = self._layout()
        note = note or self.live_note
        text = Text()
        text.append("channel ", "bold")
        for n, channel in enumerate(self.channels):
            text.append(f" {channel.name} ", "reverse bold" if n == self.channel_index else "")
        channel = self.channel
        if channel is not None:
            text.append("\nsubdir  ", "bold")
            current = self.subdir
            for subdir in subdirs_of(channel):
                text.append(f" {subdir} ", "reverse bold" if subdir == current else "")
        if note:
            text.append(f"  {note}", "italic")
        self.query_one("#channels-head", Static).update(text)

    def load(self) -> None:
        channel, subdir = self.channel, self.subdir
        if not self.live:
            self.live_note = ""
            self.show_head("reading…")
        if channel is None or subdir is None:
            self.shown_key = None
            return
        self.shown_key = (channel, subdir, repodata_key(channel, subdir))  # before reading: no change missed
        self.read_subdir(channel, subdir)

    @work(thread=True, exclusive=True, exit_on_error=False, group="channels", name="reading the channel")
    def read_subdir(self, channel: Path, subdir: str) -> None:
        repodata = load_local_repodata(channel / subdir, subdir)
        problem = ""
        if repodata is None and subdir == "noarch":  # a channel without noarch packages
            repodata = decode_repodata(empty_repodata(subdir), subdir)
        elif repodata is None:
            problem = f"{channel.name}/{subdir} has no repodata.json: index it (6)"
        self.app.call_from_thread(self.show_repodata, repodata, problem)

    def show_repodata(self, repodata: RepoData | None, problem: str) -> None:
        live, self.live = self.live, False
        before = self.repodata
        under_cursor = None
        if live and before is not None and self.table.cursor_index is not None:
            under_cursor = before.records[self.table.cursor_index].fn
        self.repodata = repodata
        settle_heap()  # (its records hold no cycles: they go with the next subdir shown)
        self.total_size = sum(r.size for r in repodata.records) if repodata else 0
        if repodata is None:
            self.table.empty_text = problem
            self.table.set_data(None, 0)
        else:
            records = repodata.records
            self.table.empty_text = "no package matches" if records else "no packages in this subdir"
            self.table.search = lambda i: records[i].name
            self.table.set_data(channel_columns(records), len(records), keep_sort=True)
            if under_cursor is not None:
                index = next((i for i, r in enumerate(records) if r.fn == under_cursor), None)
                if index is not None:
                    self.table.move_to_index(index)
        if live:
            self.live_note = _what_changed(before, repodata)
        self.show_head()
        self.show_count()

    def show_count(self) -> None:
        records = self.repodata.records if self.repodata else []
        text = Text(f"{count(len(self.table.view))} of {count(len(records))} packages", "dim")
        if records:
            text.append(f" · {size(self.total_size)}", "dim")
        self.query_one("#channels-count", Static).update(text, layout=False)

    @on(VirtualTable.ViewChanged, "#channels-table")
    def view_changed(self) -> None:
        self.show_count()

    @on(VirtualTable.CursorMoved, "#channels-table")
    def cursor_moved(self, event: VirtualTable.CursorMoved) -> None:
        detail = self.query_one("#channels-detail", Static)
        if self.repodata is None or event.index is None:
            detail.update("", layout=False)
            return
        rec = self.repodata.records[event.index]
        text = Text()
        text.append(rec.fn, "bold")
        text.append(f"  sha256 {rec.sha256 or '-'}", "dim")
        text.append("\ndepends: ", "dim")
        text.append(", ".join(rec.depends or []) or "nothing", "dim")
        detail.update(text, layout=False)  # a fixed height: no layout pass per cursor key

    def action_channel(self, step: int) -> None:
        if self.channels:
            self.channel_index = (self.channel_index + step) % len(self.channels)
            self.subdir_index = 0
            self.load()

    def action_subdir(self, step: int) -> None:
        channel = self.channel
        subdirs = subdirs_of(channel) if channel else []
        if subdirs:
            self.subdir_index = (self.subdir_index + step) % len(subdirs)
            self.load()

    def action_search(self) -> None:
        self.query_one("#channels-search", Input).focus()

    @on(Input.Changed, "#channels-search")
    def search_changed(self, event: Input.Changed) -> None:
        self.table.set_query(event.value)

    @on(Input.Submitted, "#channels-search")
    def search_done(self) -> None:
        self.table.focus()

    def key_escape(self) -> None:
        if self.focused is not self.table:
            self.table.focus()

    def action_rescan(self) -> None:
        self.refresh_state()


def _what_changed(before: RepoData | None, after: RepoData | None) -> str:
    """The note of a live reload: how many packages came and went, and when."""
    old = {r.fn for r in before.records} if before is not None else set()
    new = {r.fn for r in after.records} if after is not None else set()
    parts = [f"{len(new - old)} new" if new - old else "", f"{len(old - new)} gone" if old - new else ""]
    what = ", ".join(p for p in parts if p) or "reindexed"
    return f"{what} at {time.strftime('%H:%M:%S')}"
