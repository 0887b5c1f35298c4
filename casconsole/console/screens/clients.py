"""Clients: the `.condarc` the mirror's users should use; channel order editable, written on request."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from rich.syntax import Syntax
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Input, Static

from casconsole.console.screens.base import ConsoleScreen, describe_error
from casconsole.console.screens.dialogs import MessageDialog, PathDialog
from casconsole.fsutil import atomic_write_bytes
from casconsole.layout import find_channels
from casconsole.widgets.vtable import Column, VirtualTable


@dataclass
class ClientChannel:
    name: str
    use: bool = True
    private: bool = False


def default_base_url(host: str, port: int) -> str:
    """Where clients reach the server: a wildcard address is this machine's name."""
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn() or "localhost"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def condarc_text(base_url: str, channels: list[ClientChannel], ssl_verify: bool | str, mirrored: str) -> str:
    """The client settings, channels in the order given; private ones through a token."""
    base = base_url.rstrip("/")

    def url(c: ClientChannel) -> str:
        return f"{base}/t/<TOKEN>/{c.name}" if c.private else f"{base}/{c.name}"

    used = [c for c in channels if c.use]
    lines = [f"# conda settings for the users of the casconsole mirror at {base}", "channels:"]
    lines += [f"  - {url(c)}" + ("  # private: put your token in" if c.private else "") for c in used]
    if not used:
        lines[-1] = "channels: []"
    lines += [
        "# 'defaults' means the mirror too, never the internet",
        "default_channels:",
        f"  - {base}/{mirrored}",
        f"channel_alias: {base}",
        f"ssl_verify: {str(ssl_verify).lower() if isinstance(ssl_verify, bool) else ssl_verify}",
    ]
    return "\n".join(lines) + "\n"


class ClientsScreen(ConsoleScreen):
    """What conda clients need: the `.condarc` for this mirror, written to a file on request."""

    NAV = "clients"
    TITLE_TEXT = "Clients"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "toggle_channel", "use"),
        Binding("K,shift+up", "move(-1)", "move up", key_display="K"),
        Binding("J,shift+down", "move(1)", "move down", key_display="J"),
        Binding("v", "ssl_verify", "ssl_verify"),
        Binding("e", "edit_url", "edit URL"),
        Binding("ctrl+s", "write", "write file"),
    ]
    COMMANDS_: ClassVar[list[tuple[str, str, str]]] = [
        ("Write .condarc", "Write the clients' .condarc to a file", "write"),
    ]

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="clients-bar"):
            yield Static("server URL ", id="clients-url-label")
            yield Input(id="clients-url", compact=True)
        yield VirtualTable(id="clients-table", empty_text="no channel under mirror_dir yet", sortable=False)
        yield Static(id="clients-preview")

    def on_mount(self) -> None:
        super().on_mount()
        settings = self.state.settings
        self.channels: list[ClientChannel] = []
        self.ssl_verify: bool | str = True
        self.base_url = default_base_url(settings.server_host, settings.server_port)
        self.query_one("#clients-url", Input).value = self.base_url
        self.table = self.query_one("#clients-table", VirtualTable)
        self.table.focus()

    def refresh_state(self) -> None:
        settings = self.state.settings
        known = {c.name for c in self.channels}
        found = [p.name for p in find_channels(settings.mirror_dir)]
        for name in [settings.channel_name, *found, *settings.private_channels]:
            if name not in known:
                private = name in settings.private_channels
                self.channels.append(ClientChannel(name, use=not private, private=private))
                known.add(name)
        self.show()

    def show(self) -> None:
        channels = self.channels
        columns = [
            Column(
                "use",
                5,
                lambda i: "[x]" if channels[i].use else "[ ]",
                lambda i: "good" if channels[i].use else "dim",
            ),
            Column("channel", 16, lambda i: channels[i].name + (" (private)" if channels[i].private else "")),
            Column("URL", 30, lambda i: self.url_of(channels[i]), flex=True),
        ]
        position = self.table.cursor
        self.table.set_data(columns, len(channels))
        self.table.cursor = position
        self.show_preview()

    def url_of(self, channel: ClientChannel) -> str:
        base = self.base_url.rstrip("/")
        return f"{base}/t/<TOKEN>/{channel.name}" if channel.private else f"{base}/{channel.name}"

    def text(self) -> str:
        return condarc_text(self.base_url, self.channels, self.ssl_verify, self.state.settings.channel_name)

    def show_preview(self) -> None:
        self.query_one("#clients-preview", Static).update(
            Syntax(self.text(), "yaml", theme="ansi_dark", background_color="default")
        )

    def action_toggle_channel(self) -> None:
        index = self.table.cursor_index
        if index is not None:
            self.channels[index].use = not self.channels[index].use
            self.show()

    def action_move(self, step: int) -> None:
        index = self.table.cursor_index
        if index is None or not 0 <= index + step < len(self.channels):
            return
        channels = self.channels
        channels[index], channels[index + step] = channels[index + step], channels[index]
        self.show()
        self.table.cursor = index + step

    def action_ssl_verify(self) -> None:
        self.ssl_verify = not self.ssl_verify if isinstance(self.ssl_verify, bool) else True
        self.show_preview()

    def action_edit_url(self) -> None:
        self.query_one("#clients-url", Input).focus()

    @on(Input.Changed, "#clients-url")
    def url_changed(self, event: Input.Changed) -> None:
        self.base_url = event.value.strip() or self.base_url
        if self.is_mounted and hasattr(self, "table"):
            self.table.refresh()
            self.show_preview()

    @on(Input.Submitted, "#clients-url")
    def url_done(self) -> None:
        self.table.focus()

    def key_escape(self) -> None:
        if self.focused is not self.table:
            self.table.focus()

    def action_write(self) -> None:
        default = self.state.settings.mirror_dir / "condarc"
        note = "Copy it to ~/.condarc on each client (or <conda root>/.condarc for every user)."
        self.app.push_screen(PathDialog("Write the clients' .condarc to", default, note), self.write_to)

    def write_to(self, path: Path | None) -> None:
        if path is None:
            return
        try:
            atomic_write_bytes(path, self.text().encode("utf-8"))
        except OSError as exc:
            self.app.push_screen(MessageDialog("The .condarc was not written", describe_error(exc)))
            return
        self.notify(f"Written to {path}", title=".condarc", timeout=5)
