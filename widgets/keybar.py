"""A two-line footer: the screens on the first line, the keys of what has focus on the second.

Textual's `Footer` puts every key on one line, which at 80 columns cannot hold seven screens and
a screen's own keys. `KeyBar` shows the app's navigation bindings (those whose `id` starts with
`nav.`) on the first line, the current one highlighted, and the other shown bindings of the
focused widget, the screen and the app on the second, app-wide ones last.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import RenderResult
from textual.binding import Binding
from textual.widget import Widget

NAV_PREFIX = "nav."


class KeyBar(Widget):
    """The keys of the screen, as a two-line footer."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "keybar--key",
        "keybar--description",
        "keybar--current",
        "keybar--disabled",
    }

    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 2;
        background: $footer-background;
        color: $footer-foreground;
        & > .keybar--key { color: $footer-key-foreground; text-style: bold; }
        & > .keybar--description { color: $footer-description-foreground; }
        & > .keybar--current { background: $accent; color: $text; text-style: bold; }
        & > .keybar--disabled { color: $text-disabled; }
    }
    """

    def __init__(self, current: str = "", *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.current = current  # the `nav.` id suffix of the screen showing this bar

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, screen: object) -> None:
        self.refresh()

    def nav_bindings(self) -> list[Binding]:
        """The app's navigation bindings, one per id (a binding of two keys shows once)."""
        seen: dict[str, Binding] = {}
        for _, binding in self.app._bindings:
            if binding.id and binding.id.startswith(NAV_PREFIX):
                seen.setdefault(binding.id, binding)
        return list(seen.values())

    def _name_length(self, nav: list[Binding], width: int) -> int:
        """How much of each screen's name the first line has room for (the current one's is
        whole): all of it while they fit, else the longest cut of three letters or more, else none."""
        longest = max((len(b.description) for b in nav), default=0)
        for keep in range(longest, 2, -1):
            text = sum(
                len(f" {self.app.get_key_display(b)}")
                + len(f" {b.description if b.id == NAV_PREFIX + self.current else b.description[:keep]} ")
                for b in nav
            )
            if text <= width:
                return keep
        return 0

    def action_bindings(self) -> tuple[list[tuple[Binding, bool]], list[tuple[Binding, bool]]]:
        """Shown, non-navigation bindings in force now: the screen's and its widgets', the app's."""
        screen_keys: list[tuple[Binding, bool]] = []
        widget_keys: list[tuple[Binding, bool]] = []
        app_keys: list[tuple[Binding, bool]] = []
        seen: set[str] = set()
        for node, binding, enabled, _tooltip in self.screen.active_bindings.values():
            if not binding.show or (binding.id or "").startswith(NAV_PREFIX) or binding.action in seen:
                continue
            seen.add(binding.action)
            group = app_keys if node is self.app else screen_keys if node is self.screen else widget_keys
            group.append((binding, enabled))
        return screen_keys + widget_keys, app_keys

    def render(self) -> RenderResult:
        key_style = self.get_component_rich_style("keybar--key")
        description_style = self.get_component_rich_style("keybar--description")
        current_style = self.get_component_rich_style("keybar--current")
        disabled_style = self.get_component_rich_style("keybar--disabled")
        width = self.size.width
        top = Text(no_wrap=True, overflow="ellipsis")
        nav = self.nav_bindings()
        keep = self._name_length(nav, width)
        for binding in nav:
            is_current = binding.id == NAV_PREFIX + self.current
            name = binding.description if is_current else binding.description[:keep]
            top.append(f" {self.app.get_key_display(binding)}", current_style if is_current else key_style)
            if name:
                top.append(f" {name} ", current_style if is_current else description_style)
        bottom = Text(no_wrap=True, overflow="ellipsis")
        own, app_wide = self.action_bindings()
        palette = self.app.COMMAND_PALETTE_BINDING
        if self.app.ENABLE_COMMAND_PALETTE and palette in self.screen.active_bindings:
            app_wide.append((Binding(palette, "command_palette", "commands"), True))
        for n, (binding, enabled) in enumerate(own + app_wide):
            key = f" {binding.key_display or self.app.get_key_display(binding)}"
            description = f" {binding.description} "
            if n >= len(own) and bottom.cell_len + len(key) + len(description) > width:
                continue  # app-wide keys only where they fit whole; the help screen lists them all
            bottom.append(key, key_style if enabled else disabled_style)
            bottom.append(description, description_style if enabled else disabled_style)
        top.truncate(width, overflow="ellipsis")
        bottom.truncate(width, overflow="ellipsis")
        return Text("\n").join([top, bottom])
