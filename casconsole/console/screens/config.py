"""Config: the six settings layers side by side, which one wins each key, problems in place."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Static

from casconsole.console.screens.base import ConsoleScreen
from casconsole.redact import HIDDEN, redact_value
from casconsole.settings import LAYERS, SCHEMA, Layer, Problem
from casconsole.widgets.vtable import Column, VirtualTable

_KEY_PROBLEM = re.compile(r"^([\w.]+): ")  # a section's keys hold a dot: pypi.closure
_UNKNOWN_KEY = re.compile(r"^unknown key '([^']+)'")


def show_value(value: Any, key: str = "") -> str:
    """A settings value as text: a credential key's as <hidden>, URL passwords and channel
    tokens hidden."""
    spec = SCHEMA.get(key)
    value = HIDDEN if spec is not None and spec.secret and value is not None else redact_value(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    return str(value)


def short(value: Any, width: int, key: str = "") -> str:
    """A value cut to `width` cells; a path keeps its end, which tells paths apart."""
    text = show_value(value, key)
    if len(text) <= width:
        return text
    if isinstance(value, Path) or "/" in text:
        return "…" + text[-(width - 1) :]
    return text[: width - 1] + "…"


class KeyRow:
    """One settings key across the layers: each layer's value or problem, and the winner."""

    def __init__(self, key: str, known: bool = True):
        self.key = key
        self.known = known
        self.values: dict[str, Any] = {}
        self.origins: dict[str, str] = {}
        self.problems: dict[str, Problem] = {}
        self.winner: str | None = None


def key_rows(layers: list[Layer]) -> tuple[list[KeyRow], list[Problem]]:
    """A row per key (unknown keys a layer names included) and the problems tied to no key."""
    rows = {key: KeyRow(key) for key in SCHEMA}
    loose: list[Problem] = []
    for layer in layers:
        for key, value in layer.values.items():
            row = rows[key]
            row.values[layer.name] = value
            row.origins[layer.name] = layer.origins[key].source
            row.winner = layer.name
        for problem in layer.problems:
            match = _KEY_PROBLEM.match(problem.message)
            unknown = _UNKNOWN_KEY.match(problem.message)
            if match and match.group(1) in SCHEMA:
                rows[match.group(1)].problems[layer.name] = problem
            elif unknown:
                row = rows.setdefault(unknown.group(1), KeyRow(unknown.group(1), known=False))
                row.problems[layer.name] = problem
            else:
                loose.append(problem)
    return list(rows.values()), loose


class ConfigScreen(ConsoleScreen):
    """The settings: each key's value in every layer, the one in force, and the problems."""

    NAV = "config"
    TITLE_TEXT = "Config"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("r", "reload", "reload files")]
    COMMANDS_: ClassVar[list[tuple[str, str, str]]] = [
        ("Reload settings files", "Read every settings layer again", "reload"),
    ]
    CELL = 9

    def compose_body(self) -> ComposeResult:
        yield Static(id="config-files")
        yield VirtualTable(id="config-table", empty_text="no settings", sortable=False)
        yield Static(id="config-detail")

    def on_mount(self) -> None:
        super().on_mount()
        self.rows: list[KeyRow] = []
        self._shown_once = False
        self.query_one(VirtualTable).focus()

    def refresh_state(self) -> None:
        self.rows, loose = key_rows(self.state.layers)
        table = self.query_one(VirtualTable)
        rows = self.rows

        def cell(layer: str):
            def text(i: int) -> str:
                row = rows[i]
                if layer in row.problems:
                    return "⚠ invalid"
                return short(row.values[layer], self.CELL, row.key) if layer in row.values else ""

            def style(i: int) -> str | None:
                row = rows[i]
                if layer in row.problems:
                    return "bad"
                if layer == row.winner:
                    return "good"
                return "dim"

            return Column(layer, self.CELL, text, style)

        columns = [
            Column(
                "key",
                18,
                lambda i: ("⚠ " if rows[i].problems else "") + rows[i].key,
                lambda i: "bad" if rows[i].problems else None,
            ),
            *(cell(layer) for layer in LAYERS),
        ]
        position = table.cursor
        table.set_data(columns, len(rows))
        with_problems = [i for i, row in enumerate(rows) if row.problems]
        if with_problems and not self._shown_once:
            position = with_problems[0]  # the first look goes where something is wrong
        self._shown_once = True
        table.cursor = position
        self.show_files(loose)
        self.show_detail(table.cursor_index)

    def show_files(self, loose: list[Problem]) -> None:
        text = Text()
        for layer in self.state.layers:
            if layer.path is None:
                continue
            if text:
                text.append("\n")
            text.append(f"{layer.name:<7}", "bold")
            text.append(str(layer.path))
            if not layer.exists:
                text.append(" (absent)", "dim")
            elif layer.name == "user":
                text.append(" (saves go here)", "dim")
        on_keys = sum(len(row.problems) for row in self.rows)
        if on_keys:
            text.append(f"\n⚠ {on_keys} problem(s) on the keys marked ⚠ below", "bold red")
        for problem in loose:
            text.append(f"\n⚠ {problem}", "bold red")
        pending = self.state.pending_summary()
        if pending:
            text.append(f"\nunsaved in the console: {pending} (save on Plan, 3)", "yellow")
        self.query_one("#config-files", Static).update(text)

    @on(VirtualTable.CursorMoved, "#config-table")
    def cursor_moved(self, event: VirtualTable.CursorMoved) -> None:
        self.show_detail(event.index)

    def show_detail(self, index: int | None) -> None:
        detail = self.query_one("#config-detail", Static)
        if index is None or index >= len(self.rows):
            detail.update("")
            return
        row = self.rows[index]
        text = Text()
        text.append(row.key, "bold")
        if row.known:
            text.append(f" — {SCHEMA[row.key].help}")
            effective = self.state.saved.origins.get(row.key)
            text.append("\nin force: ", "bold")
            text.append(show_value(getattr(self.state.saved, row.key), row.key), "green")
            if effective is not None:
                text.append(f"  from {effective.layer}", "bold")
                text.append(f" {self.where(effective.layer, effective.source)}", "dim")
        else:
            text.append(" — not a settings key")
        for layer in LAYERS:
            if layer in row.problems:
                text.append(f"\n  {layer:<8}", "bold")
                text.append(f"⚠ {row.problems[layer]}", "red")
            elif layer in row.values:
                text.append(f"\n  {layer:<8}", "bold")
                text.append(show_value(row.values[layer], row.key), "green" if layer == row.winner else "")
                text.append(f"  {self.where(layer, row.origins[layer])}", "dim")
        detail.update(text)

    def where(self, layer_name: str, source: str) -> str:
        """An origin's source, short: `line 3` when the file is the layer's own (listed above)."""
        for layer in self.state.layers:
            if layer.name == layer_name and layer.path is not None:
                prefix = f"{layer.path}:"
                if source.startswith(prefix):
                    return f"line {source[len(prefix) :]}"
        return source

    def action_reload(self) -> None:
        changed = self.state.reload()
        self.refresh_state()
        if changed:
            self.notify("The settings changed: making the plan again", title="Settings")
            self.console.reload_plan()
        else:
            self.notify("The settings files say what they said", title="Settings")
