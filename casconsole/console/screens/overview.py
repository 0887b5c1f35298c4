"""The overview: upstream and mirror, the plan in one line, last sync, server, channels."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Static

from casconsole.console.screens.base import ConsoleScreen, count, size
from casconsole.console.screens.sync import last_sync_text
from casconsole.console.session import probe_server
from casconsole.layout import find_channels
from casconsole.redact import redact_url
from casconsole.serve import daemon


@dataclass
class ChannelSummary:
    name: str
    subdirs: int = 0
    packages: int = 0
    index: str = ""
    fresh: bool = False


@dataclass
class MirrorSummary:
    """What the overview gathers off the UI thread: the channels, their index, the server."""

    channels: list[ChannelSummary] = field(default_factory=list)
    server_up: bool = False
    server: str = ""
    last_sync: str = ""


def summarize_channel(path: Path, mirrored: Path) -> ChannelSummary:
    from casconsole.console.screens.index import status_rows

    rows = status_rows([path], mirrored)
    summary = ChannelSummary(path.name)
    subdirs = [r for r in rows if r.subdir and r.subdir != "channeldata"]
    summary.subdirs = len(subdirs)
    summary.packages = sum(r.packages for r in subdirs)
    if not rows or not rows[0].subdir:  # not a channel after all: the row says why
        summary.index = rows[0].note if rows else "empty"
    elif rows[0].synced:
        summary.fresh, summary.index = True, "mirror: repodata written by each sync"
    elif all(r.fresh for r in rows):
        summary.fresh, summary.index = True, "fresh"
    elif all(r.indexed_at is None for r in subdirs):
        summary.index = "never indexed"
    else:
        new, changed, gone = (sum(getattr(r, k) for r in subdirs) for k in ("new", "changed", "missing"))
        parts = [f"{n} {what}" for n, what in ((new, "new"), (changed, "changed"), (gone, "gone")) if n]
        if any(r.subdir == "channeldata" for r in rows):
            parts.append("channeldata")
        summary.index = f"stale ({', '.join(parts) or 'outputs replaced'})"
    return summary


PROBLEMS_SHOWN = 3  # settings problems listed on the overview; Config shows every one


class OverviewScreen(ConsoleScreen):
    """Where the mirror stands: upstream, plan, last sync, server, channels."""

    NAV = "overview"
    TITLE_TEXT = "Overview"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("r", "refresh_summary", "refresh")]
    COMMANDS_: ClassVar[list[tuple[str, str, str]]] = [
        ("Refresh overview", "Look at the channels, the index and the server again", "refresh_summary"),
    ]

    def compose_body(self) -> ComposeResult:
        with VerticalScroll(id="overview"):
            yield Static(id="settings-summary")
            yield Static(id="plan-summary")
            yield Static(id="mirror-summary")

    def on_mount(self) -> None:
        super().on_mount()
        self.summary: MirrorSummary | None = None
        self.console.plan_changed.subscribe(self, lambda _: self.show_plan())

    def refresh_state(self) -> None:
        self.show_settings()
        self.show_plan()
        self.gather()

    def action_refresh_summary(self) -> None:
        self.gather()

    @work(thread=True, exclusive=True, exit_on_error=False, group="overview", name="overview")
    def gather(self) -> MirrorSummary:
        state = self.state
        summary = MirrorSummary()
        settings = state.settings
        summary.channels = [
            summarize_channel(p, settings.channel_dir) for p in find_channels(settings.mirror_dir)
        ]
        if self.console.probe:
            summary.server_up, summary.server = probe_server(
                state.settings.server_host, state.settings.server_port
            )
            detached = daemon.running(settings.mirror_dir)
            if detached is not None:
                summary.server += f" · in the background, pid {detached.pid} (0: Server screen)"
            elif not summary.server_up:
                summary.server += " · 0: the Server screen starts it"
        else:
            summary.server = "not checked"
        summary.last_sync = last_sync_text(state.settings)
        self.app.call_from_thread(self.show_mirror, summary)
        return summary

    def _grid(self) -> Table:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=10, style="bold")
        grid.add_column(overflow="fold")
        return grid

    def show_settings(self) -> None:
        s = self.state.settings
        grid = self._grid()
        grid.add_row("Upstream", redact_url(s.remote_url))
        grid.add_row("Platforms", ", ".join(s.subdirs))
        grid.add_row("Mirror", f"{s.channel_dir}")
        problems = self.state.problems
        text = (
            Text(
                f"{len(problems)} problem(s), the rest in force (Config, 2, shows each in place)", "bold red"
            )
            if problems
            else Text("no problems")
        )
        for problem in problems[:PROBLEMS_SHOWN]:
            text.append(f"\n⚠ {problem}", "red")
        if len(problems) > PROBLEMS_SHOWN:
            text.append(f"\n… {len(problems) - PROBLEMS_SHOWN} more on Config (2)", "red")
        pending = self.state.pending_summary()
        if pending:
            text.append(f" · unsaved: {pending}", "bold yellow")
        grid.add_row("Settings", text)
        self.query_one("#settings-summary", Static).update(grid)

    def show_plan(self) -> None:
        grid = self._grid()
        plan = self.state.plan
        if plan is not None:
            t = plan.total
            grid.add_row(
                "Plan",
                f"{count(t.upstream)} upstream → {count(t.kept)} kept "
                f"(−{count(t.dropped_license)} license, −{count(t.dropped_blacklist)} blacklist, "
                f"+{count(t.added_whitelist)} whitelist)",
            )
            grid.add_row(
                "",
                f"{count(t.download)} to download ({size(t.download_bytes)}), "
                f"{count(t.present)} on disk, {count(t.delete)} to delete",
            )
        elif self.state.plan_error:
            grid.add_row("Plan", Text(f"failed: {self.state.plan_error}", "red"))
        else:
            grid.add_row("Plan", Text(f"loading… {self.console.plan_progress}", "italic"))
        self.query_one("#plan-summary", Static).update(grid)
        self.show_settings()

    def show_mirror(self, summary: MirrorSummary) -> None:
        self.summary = summary
        grid = self._grid()
        grid.add_row("Last sync", summary.last_sync)
        grid.add_row("Server", Text(summary.server, "green" if summary.server_up else "yellow"))
        if summary.channels:
            channels = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold")
            channels.add_column("channel")
            channels.add_column("subdirs", justify="right")
            channels.add_column("packages", justify="right")
            channels.add_column("index")
            for c in summary.channels:
                channels.add_row(
                    c.name, str(c.subdirs), count(c.packages), Text(c.index, "green" if c.fresh else "yellow")
                )
            grid.add_row("Channels", channels)
        else:
            grid.add_row("Channels", Text(f"none yet under {self.state.settings.mirror_dir}", "italic"))
        self.query_one("#mirror-summary", Static).update(grid)
