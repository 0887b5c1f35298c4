"""A two-line footer: the screens on the first line, the keys of what has focus on the second.

Textual's `Footer` puts every key on one line, which at 80 columns cannot hold ten screens and
a screen's own keys. `KeyBar` shows the app's navigation bindings (those whose `id` starts with
`nav.`) on the first line, the current one highlighted, and the other shown bindings of the
focused widget, the screen and the app on the second, app-wide ones last.

The first line is laid out for the width it has: every screen's whole name when they fit (120
columns hold ten), else names cut to no fewer than four letters, else the screens' keys alone
with the current screen's name whole (80 columns). The navigation bindings that are not screens
(a screen list, help) are always whole, at the end.

The app's bindings whose `id` starts with `always.` (quit) are shown whatever the width: first
among the app-wide keys of the second line, or, where a screen's own keys leave them no room
there (the Server screen at 80 columns), at the end of the first.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import RenderResult
from textual.binding import Binding
from textual.widget import Widget

NAV_PREFIX = "nav."
ALWAYS_PREFIX = "always."  # app bindings shown on the first line, after the navigation


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

    def nav_bindings(self, prefix: str = NAV_PREFIX) -> list[Binding]:
        """The app's navigation bindings (or those of another id `prefix`), one per id (a
        binding of two keys shows once)."""
        seen: dict[str, Binding] = {}
        for _, binding in self.app._bindings:
            if binding.id and binding.id.startswith(prefix):
                seen.setdefault(binding.id, binding)
        return list(seen.values())

    def _cells(self, bindings: list[Binding]) -> int:
        """The width of `bindings` on the second line."""
        keys = (b.key_display or self.app.get_key_display(b) for b in bindings)
        return sum(len(f" {key}  {b.description} ") for key, b in zip(keys, bindings))

    @staticmethod
    def is_screen(binding: Binding) -> bool:
        return binding.action.startswith("show(")

    def _layout(self, nav: list[Binding], width: int) -> tuple[int | None, list[Binding]]:
        """How much of each other screen's name the first line has room for (None: whole, 0:
        the key alone), and which of the other navigation keys (screen list, help) it shows."""
        screens = [b for b in nav if self.is_screen(b)]
        extras = [b for b in nav if not self.is_screen(b)]
        current = NAV_PREFIX + self.current

        def length(keep: int | None, shown: list[Binding]) -> int:
            total = 0
            for b in screens:
                name = b.description if keep is None or b.id == current else b.description[:keep]
                total += len(f" {self.app.get_key_display(b)}") + (len(f" {name} ") if name else 1)
            return total + sum(len(f" {self.app.get_key_display(b)} {b.description} ") for b in shown)

        longest = max((len(b.description) for b in screens), default=0)
        essential = [b for b in extras if b.id == NAV_PREFIX + "help" or b.id.startswith(ALWAYS_PREFIX)]
        tries: list[tuple[int | None, list[Binding]]] = [(None, extras), (None, essential)]
        tries += [(keep, extras) for keep in range(longest - 1, 3, -1)]
        for keep, shown in tries:
            if length(keep, shown) <= width:
                return keep, shown
        return 0, extras

    def action_bindings(self) -> tuple[list[tuple[Binding, bool]], list[tuple[Binding, bool]]]:
        """Shown, non-navigation bindings in force now: the screen's and its widgets', the app's."""
        screen_keys: list[tuple[Binding, bool]] = []
        widget_keys: list[tuple[Binding, bool]] = []
        app_keys: list[tuple[Binding, bool]] = []
        seen: set[str] = set()
        for node, binding, enabled, _tooltip in self.screen.active_bindings.values():
            if not binding.show or (binding.id or "").startswith((NAV_PREFIX, ALWAYS_PREFIX)):
                continue
            if binding.action in seen:
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
        own, app_wide = self.action_bindings()
        always = self.nav_bindings(ALWAYS_PREFIX)
        on_top = self._cells([b for b, _ in own] + always) > width
        nav = self.nav_bindings() + (always if on_top else [])
        keep, extras = self._layout(nav, width)
        for binding in nav:
            is_current = binding.id == NAV_PREFIX + self.current
            if self.is_screen(binding):
                name = binding.description if keep is None or is_current else binding.description[:keep]
            elif binding in extras:
                name = binding.description
            else:
                continue
            top.append(f" {self.app.get_key_display(binding)}", current_style if is_current else key_style)
            if name:
                top.append(f" {name} ", current_style if is_current else description_style)
            elif not is_current:
                top.append(" ", description_style)
        bottom = Text(no_wrap=True, overflow="ellipsis")
        if not on_top:
            app_wide[:0] = [(b, True) for b in always]
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
