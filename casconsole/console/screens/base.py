"""What every console screen shares: the header, the two-line key bar, worker failures, formats."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast

import humanize
from textual import on
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Header
from textual.worker import Worker

from casconsole.errors import CasError
from casconsole.redact import redact_url
from casconsole.widgets.keybar import KeyBar

if TYPE_CHECKING:
    from textual.signal import Signal

    from casconsole.console.session import ConsoleState


class ConsoleHost(Protocol):
    """What a screen asks of the app it runs in (the app is CasConsole; screens never import it)."""

    state: ConsoleState
    plan_changed: Signal[None]
    plan_progress: str
    probe: bool
    sync_job: Any

    def reload_plan(self) -> None: ...

    def start_sync(self, verify: bool = False) -> None: ...

    def sync_finished(self, state: str, error: str | None) -> None: ...

    def worker_state_changed(self, event: Worker.StateChanged) -> None: ...


class ConsoleScreen(Screen):
    """A screen of the console: reachable by the `nav.<NAV>` key, refreshed when shown."""

    NAV: ClassVar[str] = ""
    TITLE_TEXT: ClassVar[str] = ""

    @property
    def console(self) -> ConsoleHost:
        return cast("ConsoleHost", self.app)

    @property
    def state(self) -> ConsoleState:
        return self.console.state

    def compose(self) -> ComposeResult:
        yield Header(icon="≡")
        yield from self.compose_body()
        yield KeyBar(self.NAV)

    def compose_body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        self.title = "casconsole"
        self.sub_title = self.TITLE_TEXT

    def on_screen_resume(self) -> None:
        self.refresh_state()

    def refresh_state(self) -> None:
        """Show the console state afresh (called when the screen is shown and when it changes)."""

    @on(Worker.StateChanged)
    def _worker_state(self, event: Worker.StateChanged) -> None:
        # worker messages do not bubble: hand them to the app's one failure policy
        self.console.worker_state_changed(event)


def size(n: int | float | None) -> str:
    return "-" if n is None else humanize.naturalsize(n, format="%.1f")


def count(n: int) -> str:
    return f"{n:,}"


def date(timestamp: int | float | None) -> str:
    """A record's timestamp (seconds or, as conda writes them, milliseconds) as a date."""
    if not timestamp:
        return ""
    seconds = timestamp / 1000 if timestamp > 1e11 else timestamp
    try:
        return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%d")
    except (OverflowError, OSError, ValueError):
        return "?"


def ago(timestamp: float | None) -> str:
    if timestamp is None:
        return "never"
    return humanize.naturaltime(datetime.datetime.now() - datetime.datetime.fromtimestamp(timestamp))


def archive_format(fn: str) -> str:
    """The package format of a file name, short: `conda` or `bz2` (a build comes in either; a
    table shows which row is which)."""
    if fn.endswith(".conda"):
        return "conda"
    return "bz2" if fn.endswith(".tar.bz2") else "?"


def describe_error(error: BaseException) -> str:
    """A one-line message for the user: ours carry one; others get their type named. A URL's
    password or token is hidden."""
    return redact_url(_describe(error))


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if isinstance(error, OSError) and error.strerror:
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror}"
    if isinstance(error, CasError) and text:
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
