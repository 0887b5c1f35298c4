"""Clients: the `.condarc` the mirror's users should use, as `cas-server --condarc` prints it,
and below it the `pip.conf` for the PyPI side, as `cas-server --pip-conf` prints it.

It starts from the settings (`public_url`, `client_channels` and the other `client_*` keys); the
channel order, the URL and `ssl_verify` can be changed here, saved back to a settings file (so
`cas-server --condarc` says the same), and the files written for the clients.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from rich.syntax import Syntax
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Input, Static

from casconsole.console.screens.base import ConsoleScreen, describe_error
from casconsole.console.screens.dialogs import MessageDialog, PathDialog, SaveDialog, write_chosen
from casconsole.fsutil import atomic_write_bytes
from casconsole.redact import redact_url
from casconsole.serve.condarc import ClientChannel, Condarc, base_url_of
from casconsole.serve.pipconf import pip_conf
from casconsole.widgets.vtable import Column, VirtualTable

# the keys a save from this screen may write
CLIENT_KEYS = ("public_url", "client_channels", "client_ssl_verify")


class ClientsScreen(ConsoleScreen):
    """What conda clients need: the `.condarc` for this mirror, written to a file on request."""

    NAV = "clients"
    TITLE_TEXT = "Clients"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "toggle_channel", "use"),
        Binding("K,shift+up", "move(-1)", "up", key_display="K"),
        Binding("J,shift+down", "move(1)", "down", key_display="J"),
        # short on the key bar, where all of them fit in 80 columns; whole in the help
        Binding("v", "ssl_verify", "ssl", tooltip="ssl_verify of the .condarc: on or off"),
        Binding("e", "edit_url", "edit URL"),
        Binding("s", "save_settings", "save"),
        Binding("ctrl+s", "write", ".condarc", tooltip="write the .condarc to a file"),
        Binding("p", "write_pip", "pip.conf", tooltip="write the pip.conf to a file"),
    ]
    COMMANDS_: ClassVar[list[tuple[str, str, str]]] = [
        ("Write .condarc", "Write the clients' .condarc to a file", "write"),
        ("Write pip.conf", "Write the pip.conf for the mirror's PyPI side to a file", "write_pip"),
        ("Save the clients' settings", "Save the channel order, URL and ssl_verify", "save_settings"),
    ]

    def compose_body(self) -> ComposeResult:
        with Horizontal(id="clients-bar"):
            yield Static("public URL ", id="clients-url-label")
            yield Input(id="clients-url", compact=True)
        yield VirtualTable(id="clients-table", empty_text="no channel under mirror_dir yet", sortable=False)
        with VerticalScroll(id="clients-preview-box"):  # a long file scrolls (tab to it)
            yield Static(id="clients-preview")
            yield Static(id="clients-pip")

    def on_mount(self) -> None:
        super().on_mount()
        self.table = self.query_one("#clients-table", VirtualTable)
        self.condarc = self.from_settings()
        self.query_one("#clients-url", Input).value = self.condarc.base_url
        self.table.focus()

    def from_settings(self) -> Condarc:
        return Condarc.from_settings(self.state.settings)

    def refresh_state(self) -> None:
        """Channel folders made since the screen was built join the list, unused."""
        known = {c.entry for c in self.condarc.channels}
        fresh = self.from_settings()
        for channel in fresh.channels:
            if channel.entry not in known:
                self.condarc.channels.append(ClientChannel(channel.entry, use=False, private=channel.private))
        self.show()

    @property
    def channels(self) -> list[ClientChannel]:
        return self.condarc.channels

    def show(self) -> None:
        channels = self.channels
        columns = [
            Column(
                "use",
                5,
                lambda i: "[x]" if channels[i].use else "[ ]",
                lambda i: "good" if channels[i].use else "dim",
            ),
            Column("channel", 10, lambda i: self.label(channels[i]), auto=True, max_width=30),
            Column(
                "URL", 20, lambda i: redact_url(self.condarc.url(channels[i].entry)), flex=True, keep="end"
            ),
        ]
        position = self.table.cursor
        self.table.styles.height = max(2, len(channels) + 1)  # the rest is the file's
        self.table.set_data(columns, len(channels))
        self.table.cursor = position
        self.show_preview()

    @staticmethod
    def label(channel: ClientChannel) -> str:
        if channel.private:
            return f"{channel.entry} (private)"
        if channel.of_mirror or channel.entry == "defaults":
            return channel.entry
        return channel.entry.rstrip("/").rsplit("/", 1)[-1] + " (URL)"  # a channel elsewhere

    def text(self) -> str:
        """The whole file, secrets included: what is written for the clients."""
        return self.condarc.text()

    def show_preview(self) -> None:
        shown = self.condarc.text(hide_secrets=True)
        self.query_one("#clients-preview", Static).update(
            Syntax(shown, "yaml", theme="ansi_dark", background_color="default", word_wrap=True)
        )
        pip = pip_conf(self.state.settings, self.condarc.base_url, hide_secrets=True)
        self.query_one("#clients-pip", Static).update(
            Syntax(pip, "ini", theme="ansi_dark", background_color="default", word_wrap=True)
        )

    # ---------------------------------------------------------------- editing

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
        verify = self.condarc.ssl_verify
        self.condarc.ssl_verify = not verify if isinstance(verify, bool) else True
        self.show_preview()

    def action_edit_url(self) -> None:
        self.query_one("#clients-url", Input).focus()

    @on(Input.Changed, "#clients-url")
    def url_changed(self, event: Input.Changed) -> None:
        if not hasattr(self, "condarc"):
            return
        self.condarc.base_url = event.value.strip().rstrip("/") or self.condarc.base_url
        if self.is_mounted:
            self.table.refresh()
            self.show_preview()

    @on(Input.Submitted, "#clients-url")
    def url_done(self) -> None:
        self.table.focus()

    def key_escape(self) -> None:
        if self.focused is not self.table:
            self.table.focus()

    # ---------------------------------------------------------------- saving the settings

    def updates(self) -> dict[str, Any]:
        """The client keys whose value on screen differs from what the settings give."""
        settings = self.state.settings
        given = self.from_settings()
        updates: dict[str, Any] = {}
        if self.condarc.base_url != base_url_of(settings):
            updates["public_url"] = self.condarc.base_url
        order = [c.entry for c in self.condarc.used]
        if order != [c.entry for c in given.used]:
            updates["client_channels"] = order
        if self.condarc.ssl_verify != given.ssl_verify:
            updates["client_ssl_verify"] = self.condarc.ssl_verify
        return updates

    def preview_save(self, layer: str, path: Path):
        return self.state.preview_save(layer, path, self.updates())

    def action_save_settings(self) -> None:
        if not self.updates():
            self.notify("The settings already say what this screen shows", title="Clients")
            return
        self.app.push_screen(
            SaveDialog(
                self.state,
                preview=self.preview_save,
                title="Save the clients' settings",
                effect="the clients' .condarc",
            ),
            self.save_to,
        )

    def save_to(self, target) -> None:
        if not write_chosen(self, target):
            return
        before = self.state.saved.as_dict()
        self.state.reload()  # unsaved Plan toggles are kept
        after = self.state.saved.as_dict()
        if any(before[k] != after[k] for k in before if k not in CLIENT_KEYS):
            self.console.reload_plan()  # the files changed other keys meanwhile
        self.notify(f"Saved to {target.path}", title="Clients", timeout=5)

    # ---------------------------------------------------------------- writing the file

    def action_write(self) -> None:
        mirror = self.state.settings.mirror_dir
        if self.has_secrets():
            default = Path.home() / "condarc"
            note = (
                "It holds secrets (a token or a proxy password): keep it out of the mirror folder, "
                "which cas-server serves. Copy it to ~/.condarc on each client."
            )
        else:
            default = mirror / "condarc"
            note = "Copy it to ~/.condarc on each client (or <conda root>/.condarc for every user)."
        self.app.push_screen(PathDialog("Write the clients' .condarc to", default, note), self.write_to)

    def action_write_pip(self) -> None:
        default = self.state.settings.mirror_dir / "pip.conf"
        note = "Copy it to ~/.config/pip/pip.conf on each client (or /etc/pip.conf for every user)."
        self.app.push_screen(PathDialog("Write the clients' pip.conf to", default, note), self.write_pip_to)

    def write_pip_to(self, path: Path | None) -> None:
        if path is None:
            return
        try:
            atomic_write_bytes(path, pip_conf(self.state.settings, self.condarc.base_url).encode("utf-8"))
        except OSError as exc:
            self.app.push_screen(MessageDialog("The pip.conf was not written", describe_error(exc)))
            return
        self.notify(f"Written to {path}", title="pip.conf", timeout=5)

    def has_secrets(self) -> bool:
        return self.condarc.text(hide_secrets=True) != self.text()

    def write_to(self, path: Path | None) -> None:
        if path is None:
            return
        if self.has_secrets() and _inside(path, self.state.settings.mirror_dir):
            self.app.push_screen(
                MessageDialog(
                    "The .condarc was not written",
                    f"{path} is inside the mirror folder, which cas-server serves to anyone, and the "
                    "file holds secrets (a token or a proxy password). Choose a place outside it.",
                )
            )
            return
        try:
            atomic_write_bytes(path, self.text().encode("utf-8"))
        except OSError as exc:
            self.app.push_screen(MessageDialog("The .condarc was not written", describe_error(exc)))
            return
        self.notify(f"Written to {path}", title=".condarc", timeout=5)


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(Path(folder).resolve())
    except OSError:
        return False
