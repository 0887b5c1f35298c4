"""The help screen: every key of the console, read from the bindings themselves."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.keys import format_key
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList, Static
from textual.widgets.option_list import Option

from casconsole.widgets.vtable import VirtualTable


def _bindings(source: Iterable[BindingType]) -> list[Binding]:
    out = []
    for item in source:
        if isinstance(item, Binding):
            out.append(item)
        else:
            key, action, description = (*item, "")[:3]
            out.append(Binding(key, action, description))
    return out


def _key_text(binding: Binding) -> str:
    """Every key of a binding, as a user types it: `? f1`, `^s`, `K ⇧↑`."""
    arrows = {"up": "↑", "down": "↓", "left": "←", "right": "→"}
    out = []
    for key in (k.strip() for k in binding.key.split(",")):
        *modifiers, name = key.split("+")
        text = arrows.get(name) or format_key(name)
        if "shift" in modifiers:
            text = "⇧" + text
        if "ctrl" in modifiers:
            text = "^" + text
        out.append(text)
    return " ".join(out)


class HelpScreen(ModalScreen[None]):
    """Every key, grouped: screens, everywhere, then each screen's own and the tables'."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,question_mark,f1,q", "close", "close")]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box help-box"):
            yield Label("Keys", classes="dialog-title")
            with VerticalScroll(classes="dialog-body", id="help-body"):
                yield Static(self.keys_table())
            yield Label("↑↓ scroll   escape close", classes="dialog-keys")

    def on_mount(self) -> None:
        self.query_one("#help-body").focus()

    def sections(self) -> list[tuple[str, list[Binding]]]:
        app = self.app
        app_bindings = _bindings(type(app).BINDINGS)
        nav = [b for b in app_bindings if (b.id or "").startswith("nav.")]
        general = [b for b in app_bindings if b not in nav]
        general.append(Binding("ctrl+p", "command_palette", "command palette: screens and actions"))
        sections = [("Screens", nav), ("Everywhere", general)]
        for mode, screen_type in getattr(app, "SCREENS_BY_MODE", {}).items():
            own = [b for b in _bindings(screen_type.BINDINGS) if b.description]
            if own:
                sections.append((f"{screen_type.TITLE_TEXT or mode}", own))
        table_keys = [b for b in _bindings(VirtualTable.BINDINGS) if b.description]
        sections.append(("Package tables", table_keys))
        return sections

    def keys_table(self) -> Table:
        table = Table.grid(padding=(0, 2))
        table.add_column(width=10, style="bold")
        table.add_column()
        for title, bindings in self.sections():
            table.add_row(Text(title, style="bold underline"), "")
            for binding in bindings:
                table.add_row(_key_text(binding), binding.tooltip or binding.description)
            table.add_row("", "")
        return table

    def action_close(self) -> None:
        self.dismiss(None)


class ScreenList(ModalScreen["str | None"]):
    """Every screen with its key and what it shows; enter or the screen's key goes there."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,g,q", "close", "close")]

    def __init__(self, screens: list[tuple[str, str, str, str]], current: str):
        super().__init__(classes="dialog -screens")
        self.screens = screens  # (key, mode, title, docstring)
        self.current = current

    def compose(self) -> ComposeResult:
        options = []
        for key, _mode, title, doc in self.screens:
            line = Text()
            line.append(f"{key} ", "bold")
            line.append(f"{title:<11}", "bold")
            line.append(doc.splitlines()[0] if doc else "", "dim")
            options.append(Option(line, id=_mode))
        with Vertical(classes="dialog-box"):
            yield Label("Screens", classes="dialog-title")
            yield OptionList(*options, id="screen-list")
            yield Label("↑↓ enter go   0-9 go   escape close", classes="dialog-keys")

    def on_mount(self) -> None:
        option_list = self.query_one(OptionList)
        modes = [mode for _key, mode, _title, _doc in self.screens]
        option_list.highlighted = modes.index(self.current) if self.current in modes else 0
        option_list.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def on_key(self, event) -> None:
        for key, mode, _title, _doc in self.screens:
            if event.key == key:
                event.stop()
                self.dismiss(mode)
                return

    def action_close(self) -> None:
        self.dismiss(None)
