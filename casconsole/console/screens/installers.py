"""Installers: the offline installers built into `<mirror_dir>/installers/`, and building one
from a YAML file (cas-installer's), with progress."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, Label, ProgressBar, Static
from textual.worker import get_current_worker

from casconsole.console.screens.base import ConsoleScreen, ago, count, size
from casconsole.console.screens.dialogs import MessageDialog, PathDialog
from casconsole.errors import Cancelled, CasError
from casconsole.events import Event
from casconsole.installer.listing import BuiltInstaller, installers_dir, list_installers
from casconsole.widgets.vtable import Column, VirtualTable


class BuildProgress(Message):
    """Coalesced progress of a build: at most ten a second, plus every step that matters."""

    def __init__(self, line: str, done: int, total: int | None):
        super().__init__()
        self.line = line
        self.done = done
        self.total = total


class BuildSink:
    """The sink a build reports to, in its thread: a line per step, posted to the screen."""

    def __init__(self, screen: InstallersScreen, interval: float = 0.1):
        self.screen = screen
        self.interval = interval
        self.lock = threading.Lock()
        self.done = 0
        self.total: int | None = None
        self.last = 0.0

    def __call__(self, event: Event) -> None:
        from casconsole.installer.build import ChannelRead, InstallerWritten, PackagePacked, Solved

        with self.lock:
            force = True
            if isinstance(event, ChannelRead):
                line = f"read {event.channel}/{event.subdir}: {count(event.records)} records"
            elif isinstance(event, Solved):
                self.total = event.packages
                line = f"solved: {event.packages} packages ({size(event.download_bytes)}); packing…"
            elif isinstance(event, PackagePacked):
                self.done = event.done
                force = event.done == event.total
                line = f"packed {event.done} of {event.total}" + (" packages" if force else f": {event.fn}")
            elif isinstance(event, InstallerWritten):
                line = f"written: {Path(event.path).name} ({size(event.size)})"
            else:
                return
            now = time.monotonic()
            if not force and now - self.last < self.interval:
                return
            self.last = now
            message = BuildProgress(line, self.done, self.total)
        self.screen.post_message(message)


class BuildDialog(PathDialog):
    """Asks for the installer's YAML file."""

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.note, classes="dialog-note")
            yield Input(str(self.default), id="path")
            yield Label("enter build   escape cancel", classes="dialog-keys")


class InstallersScreen(ConsoleScreen):
    """Offline installers (cas-installer): the ones built, and building one from a YAML file."""

    NAV = "installers"
    TITLE_TEXT = "Installers"
    DEFAULT_CSS = """
    #installers-head { height: auto; padding: 0 1; }
    #installers-progress { padding: 0 1; }
    #installers-log { height: auto; max-height: 8; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("b", "build", "build from YAML"),
        Binding("x", "cancel_build", "cancel build"),
        Binding("r", "refresh_list", "refresh"),
    ]
    COMMANDS_: ClassVar[list[tuple[str, str, str]]] = [
        ("Build an installer", "Build an offline installer from a cas-installer YAML file", "build"),
    ]

    def compose_body(self) -> ComposeResult:
        yield Static(id="installers-head")
        yield VirtualTable(id="installers-table", empty_text="looking for installers…")
        yield ProgressBar(id="installers-progress", show_eta=False)
        yield Static(id="installers-log")

    def on_mount(self) -> None:
        super().on_mount()
        self.installers: list[BuiltInstaller] = []
        self.building: threading.Event | None = None  # the running build's cancel flag
        self.lines: list[str] = []  # the running (or last) build's steps
        self.last_yaml: Path = Path("my-installer.yaml").absolute()
        self.table = self.query_one("#installers-table", VirtualTable)
        self.table.focus()
        self.query_one("#installers-progress").display = False

    @property
    def folder(self) -> Path:
        return installers_dir(self.state.settings.mirror_dir)

    def refresh_state(self) -> None:
        self.load_list()

    def action_refresh_list(self) -> None:
        self.load_list()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_build":
            return self.building is not None
        if action == "build":
            return self.building is None
        return True

    # ---------------------------------------------------------------- the list

    @work(thread=True, exclusive=True, exit_on_error=False, group="installers-list", name="installer list")
    def load_list(self) -> None:
        found = list_installers(self.folder)
        self.app.call_from_thread(self.show_list, found)

    def show_list(self, found: list[BuiltInstaller]) -> None:
        self.installers = rows = found
        columns = [
            Column("installer", 24, lambda i: rows[i].path.name, flex=True),
            Column("platform", 10, lambda i: rows[i].platform),
            Column(
                "pkgs", 5, lambda i: count(rows[i].packages), sort=lambda i: rows[i].packages, align="right"
            ),
            Column("size", 9, lambda i: size(rows[i].size), sort=lambda i: rows[i].size, align="right"),
            Column("built", 14, lambda i: ago(rows[i].mtime), sort=lambda i: rows[i].mtime),
        ]
        position = self.table.cursor
        self.table.empty_text = "no installer yet: b builds one from a YAML file"
        self.table.set_data(columns, len(rows))
        self.table.cursor = position
        settings = self.state.settings
        head = Text(f"{len(rows)} installer(s) in {self.folder}")
        url = f"http://{settings.server_host}:{settings.server_port}/installers/"
        head.append(f"\nserved at {url} · users: sh FILE -b -p PREFIX", "dim")
        self.query_one("#installers-head", Static).update(head)

    # ---------------------------------------------------------------- building

    def action_build(self) -> None:
        if self.building is not None:
            self.notify("A build is going on already", severity="warning", timeout=3)
            return
        note = (
            "cas-installer's YAML (name, version, channels, specs, license_file, ...). "
            f"The installer is written into {self.folder}."
        )
        self.app.push_screen(BuildDialog("Build an installer from", self.last_yaml, note), self.start_build)

    def start_build(self, path: Path | None) -> None:
        if path is None:
            return
        self.last_yaml = path
        self.building = threading.Event()
        self.lines = [f"building from {path}…"]
        bar = self.query_one("#installers-progress", ProgressBar)
        bar.display = True
        bar.update(total=None, progress=0)
        self.show_lines()
        self.refresh_bindings()
        self.build(path, self.building)

    def action_cancel_build(self) -> None:
        if self.building is not None:
            self.building.set()
            self.lines.append("cancelling…")
            self.show_lines()

    @work(
        thread=True, exclusive=True, exit_on_error=False, group="installer-build", name="the installer build"
    )
    def build(self, path: Path, cancel: threading.Event) -> None:
        from casconsole.installer.build import build_installer
        from casconsole.installer.construct import read_spec
        from casconsole.upstream.policy import NetworkPolicy

        settings = self.state.settings
        worker = get_current_worker()
        try:
            spec = read_spec(path)
            stats = build_installer(
                spec,
                self.folder,
                policy=NetworkPolicy.of(settings),
                channel_name=settings.channel_name,
                sink=BuildSink(self),
                cancel=cancel,
            )
        except Cancelled:
            self.app.call_from_thread(self.build_done, "cancelled: nothing was written", None)
        except CasError as exc:
            self.app.call_from_thread(self.build_done, None, exc.message)
        else:
            if not worker.is_cancelled:
                line = (
                    f"{stats.path.name if stats.path else ''}: {len(stats.packages)} packages, "
                    f"{size(stats.size)}, sha256 {stats.sha256[:16]}…"
                )
                self.app.call_from_thread(self.build_done, line, None, stats.seconds)
        finally:
            if worker.is_cancelled:  # the screen went away
                cancel.set()

    @on(BuildProgress)
    def show_progress(self, message: BuildProgress) -> None:
        bar = self.query_one("#installers-progress", ProgressBar)
        bar.update(total=message.total, progress=message.done)
        if message.line.startswith("packed") and self.lines and self.lines[-1].startswith("packed"):
            self.lines[-1] = message.line  # one line that counts up
        else:
            self.lines.append(message.line)
        self.show_lines()

    def show_lines(self) -> None:
        self.query_one("#installers-log", Static).update(Text("\n".join(self.lines[-6:])))

    def build_done(self, line: str | None, error: str | None, seconds: float | None = None) -> None:
        self.building = None
        self.query_one("#installers-progress", ProgressBar).display = False
        self.refresh_bindings()
        if error is not None:
            self.lines.append(f"failed: {error.splitlines()[0]}")
            self.show_lines()
            self.app.push_screen(MessageDialog("The installer could not be built", error))
            return
        self.lines.append(line or "")
        self.show_lines()
        if seconds is not None:
            self.notify(f"{line} ({seconds:.1f} s)", title="Installer built", timeout=6)
        self.load_list()
