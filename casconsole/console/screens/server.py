"""Server: start, stop and watch cas-server; its tokens; which channels are private.

The server runs as `cas-server --detach` (serve/daemon.py): its own session, so it outlives the
console and the SSH connection, and a console opened later finds it again by its record under
`<mirror_dir>/.cas/`. Once a second a thread looks at the record, asks the health URL and reads
what the access log gained; the screen shows the address, the health, requests per second and
bytes, and the last requests. Tokens are added (shown once, copyable), listed and revoked per
channel, as `cas-server token` does; `p` makes the selected channel private or public, saved with
the diff first as the Plan's toggles are.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Label, RichLog, Static
from textual.worker import get_current_worker

from casconsole.console.screens.base import ConsoleScreen, count, describe_error, size
from casconsole.console.screens.dialogs import ConfirmDialog, MessageDialog, SaveDialog, write_chosen
from casconsole.errors import CasError, ServerError
from casconsole.layout import PYPI_DIR, channel_name_problem, find_channels, state_dir
from casconsole.serve import daemon
from casconsole.serve.tokens import TokenRecord, add_token, read_tokens, revoke_tokens
from casconsole.settings import Settings
from casconsole.widgets.vtable import Column, VirtualTable

POLL_SECONDS = 1.0


@dataclass
class ServerView:
    """What the watcher thread saw: the server, its health, its traffic, the tokens."""

    record: daemon.ServerRecord | None = None
    health: daemon.HealthAnswer | None = None
    other: str = ""  # a server not started here that answers at the settings' address
    rate: tuple[float, float] = (0.0, 0.0)
    requests: int = 0
    bytes: int = 0
    errors: int = 0
    since: float = field(default_factory=time.time)
    new_lines: list[daemon.AccessLine] = field(default_factory=list)
    tokens: list[TokenRecord] = field(default_factory=list)
    token_error: str = ""
    channels: list[str] = field(default_factory=list)


class ServerUpdate(Message):
    def __init__(self, view: ServerView):
        super().__init__()
        self.view = view


class TokenDialog(ModalScreen[None]):
    """A new token, shown once: selectable on the screen, `c` copies it (OSC 52, over SSH too)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("c", "copy", "copy"),
        Binding("escape,enter", "close", "close"),
    ]

    def __init__(self, token: str, record: TokenRecord, url: str, note: str = ""):
        super().__init__(classes="dialog -token")
        self.token, self.record, self.url, self.note = token, record, url, note

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(
                f"Token {self.record.id} for {self.record.channel} ({self.record.rights})",
                classes="dialog-title",
            )
            yield Static(Text(self.token, "bold"), id="token-text")
            body = Text()
            body.append("\nclients use ", "dim")
            body.append(self.url)
            body.append("\n\nShown once: only its hash is kept. Copy it now.", "yellow")
            if self.note:
                body.append(f"\n{self.note}", "dim")
            yield Static(body, id="token-note")
            yield Label("c copy   enter close", classes="dialog-keys")

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.token)  # OSC 52: the terminal's clipboard, through SSH
        self.notify("Token copied to the terminal's clipboard", timeout=3)

    def action_close(self) -> None:
        self.dismiss(None)


class ServerScreen(ConsoleScreen):
    """cas-server: start, stop, health, live requests; tokens and private channels."""

    NAV = "server"
    TITLE_TEXT = "Server"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "start", "start"),
        Binding("x", "stop", "stop"),
        Binding("a", "add_token(False)", "add token"),
        Binding("u", "add_token(True)", "add upload token"),
        Binding("delete,R", "revoke", "revoke", key_display="R"),
        Binding("p", "toggle_private", "private"),
        Binding("ctrl+s", "save", "save"),
        Binding("d", "discard", "discard", show=False),
        Binding("tab", "switch_table", "tokens/channels", show=False),
    ]
    COMMANDS_: ClassVar[list[tuple[str, str, str]]] = [
        ("Start cas-server", "Serve the mirror in the background (survives the console)", "start"),
        ("Stop cas-server", "Stop the server started in the background", "stop"),
        ("Add a token", "A token for the selected channel, shown once", "add_token(False)"),
        ("Save private channels", "Show the change to the settings file, then write it", "save"),
    ]

    def compose_body(self) -> ComposeResult:
        yield Static(id="server-head")
        with Horizontal(id="server-tables"):
            yield VirtualTable(id="server-channels", empty_text="no channel yet", sortable=False)
            yield VirtualTable(id="server-tokens", empty_text="no token for this channel", sortable=False)
        yield Static(id="server-detail")
        yield RichLog(id="server-log", max_lines=300, wrap=False, markup=False)

    def on_mount(self) -> None:
        super().on_mount()
        self.view = ServerView()
        self.private: list[str] = list(self.state.settings.private_channels)
        self.channels_table = self.query_one("#server-channels", VirtualTable)
        self.tokens_table = self.query_one("#server-tokens", VirtualTable)
        self.channel_names: list[str] = []
        self.shown_tokens: list[TokenRecord] = []
        self.channels_table.focus()
        self.watch_server(self.state.settings)

    def refresh_state(self) -> None:
        self.show(self.view)

    # ---------------------------------------------------------------- watching

    @work(thread=True, exclusive=True, exit_on_error=False, group="server-watch", name="watching the server")
    def watch_server(self, settings: Settings) -> None:
        worker = get_current_worker()
        mirror = Path(settings.mirror_dir)
        tail: daemon.AccessTail | None = None
        since = time.time()
        while not worker.is_cancelled:
            view = ServerView(since=since)
            view.record = daemon.running(mirror)
            log = Path(view.record.access_log) if view.record and view.record.access_log else None
            log = log or daemon.access_log_path(mirror)
            if tail is None or tail.path != log:
                tail, seen = daemon.AccessTail(log), 0
            if view.record is not None:
                view.health = daemon.ask_health(view.record.url)
            elif self.console.probe:
                host = settings.server_host
                answer = daemon.ask_health(f"http://{host}:{settings.server_port}/", timeout=0.5)
                view.other = answer.text if answer.ok else ""
            tail.poll()
            view.rate, view.requests, view.bytes, view.errors = (
                tail.rate(),
                tail.requests,
                tail.bytes,
                tail.errors,
            )
            new = min(tail.added - seen, len(tail.lines))
            view.new_lines = list(tail.lines)[len(tail.lines) - new :] if new > 0 else []
            seen = tail.added
            try:
                view.tokens = read_tokens(mirror)
            except CasError as exc:
                view.token_error = str(exc)
            view.channels = [p.name for p in find_channels(mirror)]
            self.post_message(ServerUpdate(view))
            time.sleep(POLL_SECONDS)

    @on(ServerUpdate)
    def server_update(self, message: ServerUpdate) -> None:
        self.view = message.view
        log = self.query_one("#server-log", RichLog)
        for line in message.view.new_lines:
            log.write(access_text(line))
        self.show(message.view)
        self.refresh_bindings()

    # ---------------------------------------------------------------- drawing

    def show(self, v: ServerView) -> None:
        head = Text()
        if v.record is not None:
            up = v.health is not None and v.health.ok
            head.append("● running " if up else "● not answering ", "bold green" if up else "bold yellow")
            started = clock(v.record.started)
            head.append(f"pid {v.record.pid} since {started} at ")
            head.append(v.record.url, "bold")
            head.append("\nhealth ", "bold")
            head.append(v.health.text if v.health else "asking…", "green" if up else "yellow")
        else:
            head.append("○ not running", "bold")
            head.append(" · s starts it in the background (it outlives the console)")
            head.append("\n")
            if v.other:
                head.append(f"a server not started here answers: {v.other}", "yellow")
            else:
                settings = self.state.settings
                head.append(f"would listen on {settings.server_host}:{settings.server_port}", "dim")
        rps, bps = v.rate
        head.append("\ntraffic ", "bold")
        head.append(f"{rps:.1f} req/s · {size(bps)}/s", "bold" if rps else "dim")
        requests = f"{count(v.requests)} request{'' if v.requests == 1 else 's'}"
        head.append(f" · {requests}, {size(v.bytes)} since {clock(v.since)[:5]}", "dim")
        if v.errors:
            head.append(f" · {count(v.errors)} answered 5xx", "bold red")
        self.query_one("#server-head", Static).update(head)
        self.show_channels(v)

    def show_channels(self, v: ServerView) -> None:
        names = sorted(set(v.channels) | set(self.private))
        if names != self.channel_names or not self.channels_table.columns:
            self.channel_names = names
            tokens = lambda name: sum(1 for t in self.view.tokens if t.channel == name)  # noqa: E731
            columns = [
                Column("channel", 12, lambda i: self.channel_names[i], flex=True),
                Column(
                    "access",
                    7,
                    lambda i: "private" if self.channel_names[i] in self.private else "public",
                    lambda i: "warn" if self.channel_names[i] in self.private else "dim",
                ),
                Column("tokens", 6, lambda i: str(tokens(self.channel_names[i])), align="right"),
            ]
            position = self.channels_table.cursor
            self.channels_table.set_data(columns, len(names))
            self.channels_table.cursor = position
        else:
            self.channels_table.refresh_rows()
        self.show_tokens()

    @property
    def channel(self) -> str | None:
        index = self.channels_table.cursor_index
        return self.channel_names[index] if index is not None and index < len(self.channel_names) else None

    def show_tokens(self) -> None:
        channel = self.channel
        tokens = [t for t in self.view.tokens if t.channel == channel]
        empty = self.view.token_error or (f"no token for {channel}: a adds one" if channel else "no channel")
        if empty != self.tokens_table.empty_text:  # the channel moved, or the first look came
            self.tokens_table.empty_text = empty
            self.tokens_table.refresh()
        if [t.id for t in tokens] != [t.id for t in self.shown_tokens] or not self.tokens_table.columns:
            self.shown_tokens = tokens
            columns = [
                Column("token", 8, lambda i: self.shown_tokens[i].id),
                Column("rights", 12, lambda i: self.shown_tokens[i].rights),
                Column("created", 10, lambda i: self.shown_tokens[i].created[:10], flex=True),
            ]
            position = self.tokens_table.cursor
            self.tokens_table.set_data(columns, len(tokens))
            self.tokens_table.cursor = position
        self.show_detail()

    def show_detail(self) -> None:
        text = Text()
        channel = self.channel
        pending = self.pending()
        if channel is not None:
            text.append(f"{channel}", "bold")
            if channel in self.private:
                text.append(" is private: clients need ")
                text.append(f"{self.base_url()}/t/<token>/{channel}", "bold")
            else:
                text.append(" is public: anyone reaching the server reads it")
        if pending:
            text.append("\nunsaved: ", "bold yellow")
            text.append(f"private_channels {pending} (ctrl+s saves, d discards)", "yellow")
        self.query_one("#server-detail", Static).update(text)

    def base_url(self) -> str:
        record = self.view.record
        if record is not None:
            return record.url.rstrip("/")
        s = self.state.settings
        return f"http://{s.server_host}:{s.server_port}"

    @on(VirtualTable.CursorMoved, "#server-channels")
    def channel_moved(self) -> None:
        if hasattr(self, "view"):
            self.show_tokens()

    # ---------------------------------------------------------------- start and stop

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if not hasattr(self, "view"):
            return True
        running = self.view.record is not None
        if action == "start":
            return None if running else True
        if action == "stop":
            return True if running else None
        if action in ("save", "discard"):
            return True if self.pending() else None
        return True

    def action_start(self) -> None:
        if self.view.record is not None:
            self.notify(f"cas-server runs already (pid {self.view.record.pid})", timeout=3)
            return
        if self.pending():
            self.notify(
                "The private channels changed here are not saved: the server starts with the files' "
                "(ctrl+s saves them)",
                severity="warning",
                timeout=6,
            )
        self.start_server(self.state.saved)

    @work(thread=True, exclusive=True, exit_on_error=False, group="server-start", name="starting cas-server")
    def start_server(self, settings: Settings) -> None:
        """`cas-server --detach` with the settings the files give: its own session."""
        from casconsole.settings import write_snapshot

        cas = state_dir(settings.mirror_dir)
        cas.mkdir(parents=True, exist_ok=True)
        config = write_snapshot(settings, cas.resolve() / f"console-server.{os.getpid()}.yaml")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_MIRROR_")}
        env["CAS_MIRROR_SYSTEM_CONFIG"] = env["CAS_MIRROR_USER_CONFIG"] = os.devnull
        command = [sys.executable, "-m", "casconsole.cli.server", "--detach", "--config", str(config)]
        try:
            result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
        finally:
            Path(config).unlink(missing_ok=True)
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise ServerError(lines[-1] if lines else f"cas-server --detach exited with {result.returncode}")
        self.app.call_from_thread(self.notify, result.stdout.strip().splitlines()[0], title="Server")

    def action_stop(self) -> None:
        record = self.view.record
        if record is None:
            self.notify("No server started here runs", timeout=3)
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.stop_server(Path(self.state.settings.mirror_dir))

        question = (
            f"Stop cas-server (pid {record.pid}, {record.url})? Responses in flight are finished; "
            "clients get no answer until it is started again."
        )
        self.app.push_screen(ConfirmDialog("Stop the server?", question), answer)

    @work(thread=True, exclusive=True, exit_on_error=False, group="server-stop", name="stopping cas-server")
    def stop_server(self, mirror: Path) -> None:
        record = daemon.stop(mirror)
        if record is not None:
            self.app.call_from_thread(self.notify, f"cas-server (pid {record.pid}) stopped", title="Server")

    # ---------------------------------------------------------------- tokens

    def action_add_token(self, upload: bool) -> None:
        channel = self.channel
        if channel is None:
            self.notify("No channel selected", severity="warning", timeout=3)
            return
        problem = channel_name_problem(channel)
        if problem:
            self.app.push_screen(MessageDialog("No token added", problem))
            return
        if upload and channel == self.state.settings.channel_name:
            self.app.push_screen(
                MessageDialog(
                    "No upload token for the mirrored channel",
                    f"{channel} is written by each sync from upstream; upload into a channel of your own.",
                )
            )
            return
        try:
            token, record = add_token(Path(self.state.settings.mirror_dir), channel, upload=upload)
        except (CasError, OSError) as exc:
            self.app.push_screen(MessageDialog("No token added", describe_error(exc)))
            return
        note = ""
        if channel not in self.private and channel != PYPI_DIR:
            note = f"{channel} is public: the token matters once p makes it private (and it is saved)."
        url = f"{self.base_url()}/t/{token}/{channel}"
        self.view.tokens = [*self.view.tokens, record]
        self.show_channels(self.view)
        self.app.push_screen(TokenDialog(token, record, url, note))

    def action_revoke(self) -> None:
        index = self.tokens_table.cursor_index
        if index is None or index >= len(self.shown_tokens):
            self.notify("No token selected (tab goes to the tokens)", severity="warning", timeout=3)
            return
        record = self.shown_tokens[index]

        def answer(yes: bool | None) -> None:
            if not yes:
                return
            try:
                revoke_tokens(Path(self.state.settings.mirror_dir), record.channel, [record.id])
            except (CasError, OSError) as exc:
                self.app.push_screen(MessageDialog("The token was not revoked", describe_error(exc)))
                return
            self.view.tokens = [t for t in self.view.tokens if t.id != record.id]
            self.show_channels(self.view)
            self.notify(f"Token {record.id} revoked: its next request is refused", title="Server", timeout=5)

        question = f"Revoke token {record.id} of {record.channel} ({record.rights}, made {record.created})?"
        self.app.push_screen(ConfirmDialog("Revoke the token?", question), answer)

    def action_switch_table(self) -> None:
        if self.focused is self.channels_table:
            self.tokens_table.focus()
        else:
            self.channels_table.focus()

    # ---------------------------------------------------------------- private channels

    def pending(self) -> str:
        """The private channels changed here and not saved, as `+a -b`."""
        saved = list(self.state.settings.private_channels)
        added = [f"+{c}" for c in self.private if c not in saved]
        removed = [f"-{c}" for c in saved if c not in self.private]
        return " ".join(added + removed)

    def action_toggle_private(self) -> None:
        channel = self.channel
        if channel is None:
            return
        if channel == PYPI_DIR:
            self.notify("The PyPI side is made private per project: pypi.private_projects", timeout=5)
            return
        if channel in self.private:
            self.private = [c for c in self.private if c != channel]
        else:
            self.private = [*self.private, channel]
        self.channels_table.refresh_rows()
        self.show_detail()
        self.refresh_bindings()

    def preview_save(self, layer: str, path: Path):
        return self.state.preview_save(layer, path, {"private_channels": list(self.private)})

    def action_save(self) -> None:
        if not self.pending():
            self.notify("Nothing to save: the private channels are as the files say", timeout=3)
            return
        dialog = SaveDialog(
            self.state, preview=self.preview_save, title="Save the private channels", effect="the server"
        )
        self.app.push_screen(dialog, self.save_to)

    def save_to(self, target) -> None:
        if not write_chosen(self, target):
            return
        self.state.reload()
        self.private = list(self.state.settings.private_channels)
        running = self.view.record is not None
        restart = ": stop (x) and start (s) the server for it to take effect" if running else ""
        self.notify(f"Saved to {target.path}{restart}", title="Private channels", timeout=8)
        self.channels_table.refresh_rows()
        self.show_detail()
        self.refresh_bindings()

    def action_discard(self) -> None:
        self.private = list(self.state.settings.private_channels)
        self.channels_table.refresh_rows()
        self.show_detail()
        self.refresh_bindings()


def clock(timestamp: float) -> str:
    """A moment of today as a clock shows it (HH:MM:SS)."""
    return datetime.datetime.fromtimestamp(timestamp).strftime("%H:%M:%S")


def access_text(line: daemon.AccessLine) -> Text:
    """A request of the access log, short: time, status, bytes, request, seconds."""
    style = "red" if line.status >= 500 else "yellow" if line.status >= 400 else ""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"{line.time} ", "dim")
    text.append(f"{line.status} ", style or "green")
    text.append(f"{size(line.sent):>9} ", "dim")
    text.append(line.request.removesuffix(" HTTP/1.1").removesuffix(" HTTP/1.0"), style)
    text.append(f" {line.seconds * 1000:.0f} ms  {line.addr}", "dim")
    return text
