"""Modal dialogs: a message, a yes/no question, the settings diff before a save, a file name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from casconsole.console.screens.base import describe_error
from casconsole.redact import redact_url
from casconsole.settings import SettingsError, write_settings

if TYPE_CHECKING:
    from casconsole.console.session import ConsoleState, SaveTarget


class MessageDialog(ModalScreen[None]):
    """A message that stays until dismissed: what failed and why, never a traceback."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,enter,space", "dismiss_dialog", "close"),
    ]

    def __init__(self, title: str, message: str, severity: str = "error"):
        super().__init__(classes=f"dialog -{severity}")
        self.title_text = title
        self.message = message

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(self.title_text, classes="dialog-title")
            with VerticalScroll(classes="dialog-body"):
                yield Static(Text(self.message), id="message")
            yield Label("enter close", classes="dialog-keys")

    def action_dismiss_dialog(self) -> None:
        self.dismiss(None)


class ConfirmDialog(ModalScreen[bool]):
    """A yes/no question; `y` answers yes, `n` or escape no."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "yes"),
        Binding("n,escape", "answer(False)", "no"),
    ]

    def __init__(self, title: str, message: str):
        super().__init__(classes="dialog -warning")
        self.title_text = title
        self.message = message

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(self.title_text, classes="dialog-title")
            with VerticalScroll(classes="dialog-body"):
                yield Static(Text(self.message))
            yield Label("y yes   n no", classes="dialog-keys")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


def diff_text(diff: str) -> Text:
    text = Text()
    for line in diff.splitlines():
        style = ""
        if line.startswith(("+++", "---")):
            style = "bold"
        elif line.startswith("+"):
            style = "green"
        elif line.startswith("-"):
            style = "red"
        elif line.startswith("@@"):
            style = "cyan"
        text.append(line + "\n", style)
    return text


class SaveDialog(ModalScreen["SaveTarget | None"]):
    """The change a save makes to a settings file, shown before anything is written.

    `t` cycles the target among the layer files (user, --config file, system); `y` writes, `n`
    or escape goes back without writing.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "write", "write"),
        Binding("t", "next_target", "other file"),
        Binding("n,escape", "cancel", "cancel"),
    ]

    def __init__(
        self,
        state: ConsoleState,
        preview: Callable[[str, Path], SaveTarget] | None = None,
        title: str = "Save settings",
        effect: str = "the plan",
    ):
        super().__init__(classes="dialog -save")
        self.state = state
        self.preview = preview or state.preview_save  # what a save to (layer, path) would change
        self.title_text = title
        self.effect = effect  # what a save to a file under a higher layer leaves unchanged
        self.targets = state.save_targets()
        self.choice = 0
        self.target: SaveTarget | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(id="target")
            with VerticalScroll(classes="dialog-body"):
                yield Static(id="diff")
            yield Label("y write   t other file   n cancel", classes="dialog-keys")

    def on_mount(self) -> None:
        self.show_target()

    def show_target(self) -> None:
        layer, path = self.targets[self.choice]
        from casconsole.settings import unified_diff

        header = Text()
        header.append(f"{layer} file: ", "bold")
        header.append(str(path))
        try:
            self.target = self.preview(layer, path)
        except (SettingsError, OSError) as exc:
            self.target = None
            header.append(f"\ncannot write here: {exc}", "bold red")
            self.query_one("#target", Static).update(header)
            self.query_one("#diff", Static).update("")
            return
        for warning in self.target.overridden:
            header.append(f"\n! {warning}: saving here will not change {self.effect}", "bold yellow")
        if self.target.old_text == "" and not path.exists():
            header.append("\n(a new file)", "italic")
        self.query_one("#target", Static).update(header)
        # shown, not written: a token or password in the file stays off the screen
        diff = redact_url(unified_diff(self.target.old_text, self.target.new_text, path))
        self.query_one("#diff", Static).update(diff_text(diff) if diff else Text("no change"))

    def action_next_target(self) -> None:
        self.choice = (self.choice + 1) % len(self.targets)
        self.show_target()

    def action_write(self) -> None:
        if self.target is not None:
            self.dismiss(self.target)

    def action_cancel(self) -> None:
        self.dismiss(None)


class PathDialog(ModalScreen["Path | None"]):
    """Asks for a file name; enter accepts, escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]

    def __init__(self, title: str, default: Path, note: str = ""):
        super().__init__(classes="dialog -path")
        self.title_text = title
        self.default = default
        self.note = note

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label(self.title_text, classes="dialog-title")
            if self.note:
                yield Static(self.note, classes="dialog-note")
            yield Input(str(self.default), id="path")
            yield Label("enter write   escape cancel", classes="dialog-keys")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if text:
            self.dismiss(Path(text).expanduser())

    def action_cancel(self) -> None:
        self.dismiss(None)


def write_chosen(screen, target: SaveTarget | None) -> bool:
    """Write the keys of the file a SaveDialog's user chose (None: cancelled); a failure is shown
    in a dialog over `screen`. True when written: the caller reads the layers again."""
    if target is None:
        return False
    try:
        write_settings(target.path, target.updates)
    except (SettingsError, OSError) as exc:
        screen.app.push_screen(MessageDialog("The settings were not saved", describe_error(exc)))
        return False
    return True
