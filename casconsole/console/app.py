"""The Textual application: the console's shell. Screens live in casconsole/screens/, one each.

The app holds the console state (settings layers, working settings, plan), runs the work that
several screens share (loading the plan) and owns the one policy for failed workers: a
notification, or a dialog for what the user must not miss; never a traceback on the screen.
"""

from __future__ import annotations

import gc
import traceback
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.notifications import Notify
from textual.screen import Screen
from textual.signal import Signal
from textual.worker import Worker, WorkerState, get_current_worker

from casconsole.console.screens.airgap import AirgapScreen
from casconsole.console.screens.base import describe_error
from casconsole.console.screens.channels import ChannelsScreen
from casconsole.console.screens.clients import ClientsScreen
from casconsole.console.screens.config import ConfigScreen
from casconsole.console.screens.dialogs import ConfirmDialog, MessageDialog
from casconsole.console.screens.help import HelpScreen, ScreenList
from casconsole.console.screens.index import IndexScreen
from casconsole.console.screens.installers import InstallersScreen
from casconsole.console.screens.overview import OverviewScreen
from casconsole.console.screens.plan import PlanScreen
from casconsole.console.screens.server import ServerScreen
from casconsole.console.screens.sync import SyncScreen
from casconsole.console.session import ConsoleState, settle_heap
from casconsole.settings import Layer, Settings

SCREENS_BY_MODE = {
    "overview": OverviewScreen,
    "config": ConfigScreen,
    "plan": PlanScreen,
    "sync": SyncScreen,
    "channels": ChannelsScreen,
    "index": IndexScreen,
    "clients": ClientsScreen,
    "installers": InstallersScreen,
    "airgap": AirgapScreen,
    "server": ServerScreen,
}

# worker groups whose failure opens a dialog rather than a notification. Not the plan's: it is
# made at start, and a dialog then would hold every key until dismissed; its failure shows on the
# Overview and the Plan (with `r` to try again) and in a notification.
_DIALOG_GROUPS = {"sync": "The sync failed", "index": "Indexing failed"}
_FAILURE_TITLES = {"plan": "The plan could not be made"}


class CasConsole(App):
    """casconsole: review, filter, sync, index and hand out an on-premises conda mirror."""

    TITLE = "casconsole"
    CSS_PATH = "app.tcss"
    MODES: ClassVar[dict[str, Any]] = dict(SCREENS_BY_MODE)
    SCREENS_BY_MODE = SCREENS_BY_MODE
    BINDINGS: ClassVar[list[BindingType]] = [
        *(
            Binding(
                str(n % 10),
                f"show('{mode}')",
                screen.TITLE_TEXT,
                id=f"nav.{mode}",
            )
            for n, (mode, screen) in enumerate(SCREENS_BY_MODE.items(), 1)
        ),
        Binding("g", "screen_list", "screens", id="nav.screens"),
        Binding("question_mark,f1", "help", "help", key_display="?", id="nav.help"),
        Binding("ctrl+q", "quit", "quit", priority=True, id="always.quit"),
    ]

    def __init__(self, state: ConsoleState, *, load_plan: bool = True, probe: bool = True):
        super().__init__()
        self.state = state
        self.auto_load_plan = load_plan
        self.probe = probe
        self.plan_changed: Signal[None] = Signal(self, "plan_changed")
        self.plan_progress = ""
        self.sync_job: Any = None  # the Sync this console runs, if any

    @property
    def settings(self) -> Settings:
        return self.state.settings

    TOASTS_SHOWN = 2  # at 80x24 two fit above every screen's log; more would reach down over it

    def on_notify(self, event: Notify) -> None:
        """Before Textual's own handler shows a new notification: the oldest shown make room, so
        that the stack under the header stays off the logs."""
        shown = list(self._notifications)
        for old in shown[: max(0, len(shown) - self.TOASTS_SHOWN + 1)]:
            self._unnotify(old, refresh=False)

    def on_mount(self) -> None:
        self.switch_mode("overview")
        if self.auto_load_plan:
            self.load_plan()

    # ---------------------------------------------------------------- navigation

    def action_show(self, mode: str) -> None:
        if self.current_mode != mode:
            self.switch_mode(mode)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_screen_list(self) -> None:
        """Every screen by name, for a terminal too narrow to name them in the key bar."""
        if isinstance(self.screen, ScreenList):
            return
        screens = [
            (str(n % 10), mode, t.TITLE_TEXT, t.__doc__ or "")
            for n, (mode, t) in enumerate(SCREENS_BY_MODE.items(), 1)
        ]

        def chosen(mode: str | None) -> None:
            if mode:
                self.action_show(mode)

        self.push_screen(ScreenList(screens, self.current_mode), chosen)

    def run_on(self, mode: str, action: str) -> None:
        """Show the screen of `mode` and run one of its actions (from the command palette)."""

        def run() -> None:
            screen = self.screen
            self.call_later(screen.run_action, action)

        self.switch_mode(mode)
        self.call_after_refresh(run)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        for mode, screen_type in SCREENS_BY_MODE.items():
            yield SystemCommand(
                f"Show {screen_type.TITLE_TEXT}",
                screen_type.__doc__.splitlines()[0] if screen_type.__doc__ else "",
                lambda mode=mode: self.action_show(mode),
            )
        for mode, screen_type in SCREENS_BY_MODE.items():
            for title, help_text, action in getattr(screen_type, "COMMANDS_", ()):
                yield SystemCommand(title, help_text, lambda m=mode, a=action: self.run_on(m, a))
        yield SystemCommand("Keys", "List every key of the console (?)", self.action_help)
        for command in super().get_system_commands(screen):
            if command.title != "Keys":  # Textual's key panel: ours lists every screen's keys
                yield command

    # ---------------------------------------------------------------- the plan

    def reload_plan(self) -> None:
        gc.unfreeze()  # the old plan may go: let the collector see it again
        self.state.plan = None
        self.state.plan_error = None
        self.plan_changed.publish(None)
        self.load_plan()

    @work(thread=True, exclusive=True, exit_on_error=False, group="plan")
    def load_plan(self) -> Any:
        """Fetch the upstream repodata of every subdir and decide every record."""
        worker = get_current_worker()

        def progress(text: str) -> None:
            self.call_from_thread(self._plan_progress, text)

        return self.state.build_plan(progress, lambda: worker.is_cancelled)

    def _plan_progress(self, text: str) -> None:
        self.plan_progress = text
        self.plan_changed.publish(None)

    def _plan_done(self, worker: Worker) -> None:
        if worker.state == WorkerState.SUCCESS and worker.result is not None:
            self.adopt_plan(worker.result)
            return
        if worker.state == WorkerState.ERROR:
            self.state.plan_error = describe_error(worker.error)
        self.plan_progress = ""
        self.plan_changed.publish(None)

    def adopt_plan(self, plan: Any) -> None:
        """Make `plan` the console's plan and show it on every screen."""
        if plan.settings != self.state.settings:  # toggled while it loaded
            plan.update(self.state.settings)
        self.state.plan, self.state.plan_error = plan, None
        settle_heap()
        self.plan_progress = ""
        self.plan_changed.publish(None)

    # ---------------------------------------------------------------- the sync

    def start_sync(self, verify: bool = False) -> None:
        """Run a sync of the working settings in this process (the Sync screen follows its log)."""
        from casconsole.pypi.sync import pypi_sections
        from casconsole.sync.engine import Sync

        settings = self.state.settings
        self.sync_job = Sync(settings, verify=verify, sections=pypi_sections(settings))
        self.run_sync(self.sync_job)
        self.refresh_bindings()

    @work(thread=True, exclusive=True, exit_on_error=False, group="sync", name="the sync")
    def run_sync(self, job: Any) -> Any:
        return job.run()

    def _sync_done(self, worker: Worker) -> None:
        self.sync_job = None
        self.refresh_bindings()
        self.sync_finished("", None)
        if worker.state != WorkerState.SUCCESS:
            return  # a failure to start: the policy below shows it
        stats = worker.result
        if stats.state == "error":
            self.push_screen(MessageDialog("The sync failed", stats.error or "no reason given"))
        elif stats.state == "failed":
            self.notify(
                f"{stats.failed} file(s) could not be had; the rest is in place. See Sync (4).",
                title="Sync finished with failures",
                severity="warning",
                timeout=10,
            )
        elif stats.state == "cancelled":
            self.notify("Sync cancelled; partial files are kept for the next run", title="Sync", timeout=5)
        else:
            self.notify(f"{stats.downloaded} file(s) downloaded", title="Sync done", timeout=5)

    def sync_finished(self, state: str, error: str | None) -> None:
        """A sync (this console's or another process's) ended: look at the disk again."""
        if self.state.plan is not None:
            self.rescan_plan()

    @work(thread=True, exclusive=True, exit_on_error=False, group="plan-rescan", name="rescanning the mirror")
    def rescan_plan(self) -> None:
        plan = self.state.plan
        if plan is not None:
            plan.rescan()
            if self.state.pypi_plan is not None:
                self.state.pypi_plan.rescan()
            self.call_from_thread(self.plan_changed.publish, None)

    async def action_quit(self) -> None:
        if self.sync_job is None:
            self.exit()
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.sync_job.cancel()
                self.exit()

        question = (
            "A sync runs in this console: quitting cancels it (partial files are kept and resume "
            "on the next run). Use b on Sync to run one that survives the console. Quit?"
        )
        self.push_screen(ConfirmDialog("Quit and cancel the sync?", question), answer)

    # ---------------------------------------------------------------- failures

    @on(Worker.StateChanged)
    def _worker_state(self, event: Worker.StateChanged) -> None:
        self.worker_state_changed(event)

    def worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one policy for workers: failures become a dialog or a notification."""
        worker = event.worker
        finished = event.state in (WorkerState.SUCCESS, WorkerState.ERROR)
        if finished and worker.node is self and worker.group == "plan":
            self._plan_done(worker)
        if finished and worker.node is self and worker.group == "sync":
            self._sync_done(worker)
        if event.state != WorkerState.ERROR or worker.error is None:
            return
        error = worker.error
        self.log.error("".join(traceback.format_exception(error)))
        message = describe_error(error)
        title = _DIALOG_GROUPS.get(worker.group)
        if title is not None:
            self.push_screen(MessageDialog(title, message))
        else:
            title = _FAILURE_TITLES.get(worker.group) or f"{worker.name or worker.group} failed"
            self.notify(message, title=title, severity="error", timeout=10)


def run_app(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    cli: Mapping[str, tuple[Any, str]] | None = None,
    layers: list[Layer] | None = None,
) -> int:
    """Run the console over the given settings layers (read afresh when not given)."""
    state = ConsoleState(config_file, env, cli, layers)
    CasConsole(state).run()
    return 0
