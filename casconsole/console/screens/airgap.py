"""Air gap: this mirror's state, a bundle's comparison with it, export and import with progress.

`m` writes the mirror's manifest (what the offline side tells the connected one); `e` asks for
a bundle folder (and a manifest to export since), shows what the bundle would hold ("312 new,
4 changed, 17 deleted, 2.1 GB") and the room on the target, and writes it when confirmed; `i`
asks for a bundle folder, shows what importing it would change, and applies it when confirmed.
The table shows the comparison per channel and subdir (or, before any, the mirror per folder).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Input, Label, ProgressBar, Static

from casconsole.console.screens.base import ConsoleScreen, count, describe_error, size
from casconsole.console.screens.dialogs import ConfirmDialog, MessageDialog, PathDialog
from casconsole.errors import Cancelled, CasError
from casconsole.events import Event
from casconsole.widgets.vtable import Column, VirtualTable

STAGE_NAMES = {
    "hashing": "hashing files the store does not vouch for",
    "writing": "writing volumes",
    "checking": "checking every file of the bundle",
    "placing": "placing files",
    "index": "writing repodata",
    "deleting": "deleting what left the other side",
}


@dataclass
class Row:
    """A folder of the table: the mirror's (files, bytes) or a comparison's counts."""

    folder: str
    files: int = 0
    new: int = 0
    changed: int = 0
    deleted: int = 0
    index: int = 0
    bytes: int = 0


class AirgapProgress(Message):
    """Coalesced progress of an export or import: at most ten a second, plus stage changes."""

    def __init__(self, stage: str, files_done: int, files: int, bytes_done: int, total: int):
        super().__init__()
        self.stage = stage
        self.files_done = files_done
        self.files = files
        self.bytes_done = bytes_done
        self.total = total


class ProgressSink:
    """The sink an export or import reports to, in its worker thread."""

    def __init__(self, screen: AirgapScreen, interval: float = 0.1):
        self.screen = screen
        self.interval = interval
        self.stage = ""
        self.files = self.total = self.files_done = self.bytes_done = 0
        self.last = 0.0

    def __call__(self, event: Event) -> None:
        from casconsole.bundle import events as ev

        force = False
        if isinstance(event, ev.StageStarted):
            self.stage, self.files, self.total = event.stage, event.files, event.bytes
            self.files_done = self.bytes_done = 0
            force = True
        elif isinstance(event, (ev.FileDone, ev.BytesDone)):
            self.bytes_done += event.bytes
            self.files_done += isinstance(event, ev.FileDone)
        else:
            return
        now = time.monotonic()
        if force or now - self.last >= self.interval or self.files_done == self.files:
            self.last = now
            self.screen.post_message(
                AirgapProgress(self.stage, self.files_done, self.files, self.bytes_done, self.total)
            )


class ExportDialog(ModalScreen["dict[str, str] | None"]):
    """The export's questions: where to, since which manifest, volume size, signing key."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]
    FIELDS = (
        ("target", "bundle folder", "/media/usb/update (an empty folder)"),
        ("since", "since manifest", "empty: the whole mirror"),
        ("volume_size", "volume size", "empty: 4 GiB - 1 MiB (FAT32)"),
        ("sign_key", "sign with key", "empty: unsigned"),
    )

    def __init__(self, values: dict[str, str]):
        super().__init__(classes="dialog -path")
        self.values = values

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box"):
            yield Label("Export a bundle", classes="dialog-title")
            for key, label, placeholder in self.FIELDS:
                with Horizontal(classes="airgap-field"):
                    yield Label(label, classes="airgap-label")
                    yield Input(
                        self.values.get(key, ""), placeholder=placeholder, id=f"export-{key}", compact=True
                    )
            yield Label("tab next field   enter preview   escape cancel", classes="dialog-keys")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        values = {key: self.query_one(f"#export-{key}", Input).value.strip() for key, _, _ in self.FIELDS}
        if not values["target"]:
            self.notify("Name the bundle folder", severity="warning", timeout=3)
            self.query_one("#export-target", Input).focus()
            return
        self.dismiss(values)

    def action_cancel(self) -> None:
        self.dismiss(None)


class AirgapScreen(ConsoleScreen):
    """Carry the mirror across an air gap: manifest, export and import, with progress."""

    NAV = "airgap"
    TITLE_TEXT = "Airgap"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("e", "export", "export"),
        Binding("i", "import_bundle", "import"),
        Binding("m", "manifest", "manifest"),
        Binding("x", "stop", "stop"),
        Binding("r", "rescan", "rescan"),
    ]
    COMMANDS_: ClassVar[list[tuple[str, str, str]]] = [
        ("Export a bundle", "Write what another mirror lacks into a folder (a USB stick)", "export"),
        ("Import a bundle", "Check a bundle whole, then apply it to this mirror", "import_bundle"),
        ("Write the mirror's manifest", "What this mirror holds, for an export --since it", "manifest"),
    ]

    def compose_body(self) -> ComposeResult:
        yield Static(id="airgap-head")
        yield VirtualTable(id="airgap-table", empty_text="looking at the mirror…")
        yield ProgressBar(id="airgap-progress", show_eta=True)
        yield Static(id="airgap-log")

    def on_mount(self) -> None:
        super().on_mount()
        self.rows: list[Row] = []
        self.running = ""  # "export", "import", "manifest" while one runs
        self.comparing = False  # the table shows a bundle's comparison, not the mirror
        self.cancel = threading.Event()
        self.export_values: dict[str, str] = {}
        self.import_folder = ""
        self.table = self.query_one("#airgap-table", VirtualTable)
        self.table.focus()
        self.query_one("#airgap-progress").display = False

    def refresh_state(self) -> None:
        # shown again (a dialog closed, another screen left): a comparison on show stays
        if not self.running and not self.comparing:
            self.scan()

    def action_rescan(self) -> None:
        if not self.busy():
            self.comparing = False
            self.scan()

    def log_line(self, text: str | Text) -> None:
        self.query_one("#airgap-log", Static).update(text)

    # ---------------------------------------------------------------- the mirror's state

    @work(thread=True, exclusive=True, exit_on_error=False, group="airgap-scan", name="mirror state")
    def scan(self) -> None:
        from casconsole.bundle.state import scan_mirror
        from casconsole.sync.lock import SyncLock, SyncLocked

        mirror = self.state.settings.mirror_dir
        if not mirror.is_dir():
            self.app.call_from_thread(
                self.show_state, None, f"no mirror at {mirror} yet: import a bundle (i)"
            )
            return
        try:
            with SyncLock(mirror):
                state, _ = scan_mirror(mirror)
        except SyncLocked as exc:
            self.app.call_from_thread(self.show_state, None, f"the mirror is busy: {exc}")
            return
        self.app.call_from_thread(self.show_state, state, "")

    def show_state(self, state: Any, note: str) -> None:
        mirror = self.state.settings.mirror_dir
        text = Text()
        if state is None:
            text.append(note, "yellow")
            self.show_rows([], comparison=False)
        else:
            rows: dict[str, Row] = {}
            for path, entry in state.files.items():
                row = rows.setdefault(path.rpartition("/")[0], Row(path.rpartition("/")[0]))
                row.files += 1
                row.bytes += entry.size
            text.append(
                f"{mirror}: {count(len(state.files))} files in {len(state.channels())} channel(s), "
                f"{size(state.size)}; state {state.digest.removeprefix('sha256:')[:12]}"
            )
            self.show_rows([rows[k] for k in sorted(rows)], comparison=False)
        text.append("\ne export   i import   m write the manifest", "italic")
        self.query_one("#airgap-head", Static).update(text)

    def show_rows(self, rows: list[Row], comparison: bool) -> None:
        self.rows = rows
        self.comparing = comparison

        def num(attr: str, width: int) -> Column:
            return Column({"changed": "chg", "deleted": "del"}.get(attr, attr), width,
                          lambda i: count(getattr(rows[i], attr)), sort=lambda i: getattr(rows[i], attr),
                          align="right")  # fmt: skip

        columns = [Column("channel/subdir", 20, lambda i: rows[i].folder, flex=True)]
        if comparison:
            columns += [num("new", 6), num("changed", 6), num("deleted", 6), num("index", 5)]
        else:
            columns += [num("files", 8)]
        columns.append(
            Column("size", 9, lambda i: size(rows[i].bytes), sort=lambda i: rows[i].bytes, align="right")
        )
        self.table.empty_text = "nothing to carry" if comparison else "no channel in the mirror yet"
        self.table.set_data(columns, len(rows))

    def show_plan(self, summary: str, changes: list[tuple[str, str, int]], extra: str = "") -> None:
        from casconsole.bundle.events import by_folder

        rows = [Row(f.folder, 0, f.new, f.changed, f.deleted, f.index, f.bytes) for f in by_folder(changes)]
        self.show_rows(rows, comparison=True)
        text = Text(summary)
        if extra:
            text.append(f"\n{extra}")
        self.query_one("#airgap-head", Static).update(text)

    # ---------------------------------------------------------------- actions

    def busy(self) -> bool:
        if self.running:
            self.notify(f"An {self.running} is running (x stops it)", severity="warning", timeout=3)
            return True
        return False

    def action_stop(self) -> None:
        if self.running:
            self.cancel.set()
            self.log_line(Text("stopping at the next file…", "italic"))

    def action_manifest(self) -> None:
        if self.busy():
            return
        note = "What this mirror holds (every file's size and sha256): carry it to the connected side."
        default = Path("mirror-state.json")
        self.app.push_screen(PathDialog("Write the mirror's manifest to", default, note), self.write_manifest)

    def write_manifest(self, path: Path | None) -> None:
        if path is not None:
            self.begin("manifest")
            self.run_manifest(path)

    def action_export(self) -> None:
        if not self.busy():
            self.app.push_screen(ExportDialog(self.export_values), self.preview_export)

    def preview_export(self, values: dict[str, str] | None) -> None:
        if values is None:
            return
        self.export_values = values
        from casconsole.bundle.volumes import DEFAULT_VOLUME_SIZE, parse_size

        try:
            volume_size = parse_size(values["volume_size"]) if values["volume_size"] else DEFAULT_VOLUME_SIZE
        except ValueError as exc:
            self.app.push_screen(MessageDialog("Volume size", str(exc)))
            return
        self.begin("export")
        self.plan_export(values, volume_size)

    def action_import_bundle(self) -> None:
        if self.busy():
            return
        note = "The folder holding manifest.json and bundle.001, bundle.002, … (a USB stick)."
        default = Path(self.import_folder or "/media/usb/update")
        self.app.push_screen(PathDialog("Import the bundle in", default, note), self.preview_import)

    def preview_import(self, folder: Path | None) -> None:
        if folder is not None:
            self.import_folder = str(folder)
            self.begin("import")
            self.plan_import(folder)

    # ---------------------------------------------------------------- the work, in threads

    def begin(self, what: str) -> None:
        self.running = what
        self.cancel = threading.Event()
        bar = self.query_one("#airgap-progress", ProgressBar)
        bar.display = True
        bar.update(total=None, progress=0)
        self.log_line(Text(f"{what}: looking at the mirror…", "italic"))

    def end(self, line: str | Text = "") -> None:
        self.running = ""
        self.query_one("#airgap-progress", ProgressBar).display = False
        if line:
            self.log_line(line)

    def failed(self, title: str, error: BaseException) -> None:
        self.end(Text(describe_error(error), "red"))
        self.app.push_screen(MessageDialog(title, describe_error(error)))

    def _guard(self, title: str, job) -> None:
        """Run `job()` in the worker; stops and refusals are shown, never a traceback."""
        try:
            job()
        except Cancelled:
            self.app.call_from_thread(self.end, Text("stopped; run it again to complete it", "yellow"))
        except (CasError, OSError) as exc:
            self.app.call_from_thread(self.failed, title, exc)

    @work(thread=True, exclusive=True, exit_on_error=False, group="airgap", name="manifest")
    def run_manifest(self, path: Path) -> None:
        from casconsole.bundle.state import scan_mirror, write_state
        from casconsole.sync.lock import SyncLock

        def job() -> None:
            with SyncLock(self.state.settings.mirror_dir):
                state, _ = scan_mirror(
                    self.state.settings.mirror_dir, sink=ProgressSink(self), cancel=self.cancel
                )
            write_state(state, path)
            line = f"wrote {path}: {count(len(state.files))} files, {size(state.size)}"
            self.app.call_from_thread(self.end, line)
            self.app.call_from_thread(self.notify, line, title="Manifest", timeout=5)

        self._guard("The manifest could not be written", job)

    @work(thread=True, exclusive=True, exit_on_error=False, group="airgap", name="export preview")
    def plan_export(self, values: dict[str, str], volume_size: int) -> None:
        from casconsole.bundle.export import plan_export
        from casconsole.sync.lock import SyncLock

        def job() -> None:
            mirror = self.state.settings.mirror_dir
            since = Path(values["since"]).expanduser() if values["since"] else None
            with SyncLock(mirror):
                plan = plan_export(
                    mirror, Path(values["target"]).expanduser(), since=since, volume_size=volume_size,
                    sink=ProgressSink(self), cancel=self.cancel,
                )  # fmt: skip
            self.app.call_from_thread(self.confirm_export, plan, values)

        self._guard("The export was refused", job)

    def confirm_export(self, plan: Any, values: dict[str, str]) -> None:
        room = f"{plan.target}: {size(plan.free + plan.reclaimable)} free, {size(plan.size)} needed"
        self.show_plan(plan.summary(), plan.changes(), room)
        problem = plan.problem() or plan.space_problem()
        if problem:
            self.end(Text(problem, "red"))
            self.app.push_screen(MessageDialog("The export cannot be written", problem))
            return
        self.end(Text("export: waiting for your answer", "italic"))
        question = f"{plan.summary()}\n\n{room}\n\nWrite the bundle?"

        def answer(yes: bool | None) -> None:
            if yes:
                self.begin("export")
                self.run_export(values, plan.volume_size)
            else:
                self.end("export: not written")

        self.app.push_screen(ConfirmDialog("Write this bundle?", question), answer)

    @work(thread=True, exclusive=True, exit_on_error=False, group="airgap", name="export")
    def run_export(self, values: dict[str, str], volume_size: int) -> None:
        from casconsole.bundle.export import export_bundle

        def job() -> None:
            stats = export_bundle(
                self.state.settings.mirror_dir,
                Path(values["target"]).expanduser(),
                since=Path(values["since"]).expanduser() if values["since"] else None,
                volume_size=volume_size,
                sign_key=Path(values["sign_key"]).expanduser() if values["sign_key"] else None,
                sink=ProgressSink(self),
                cancel=self.cancel,
            )
            self.app.call_from_thread(self.end, Text(stats.summary, "green"))
            self.app.call_from_thread(self.notify, stats.summary, title="Export done", timeout=8)

        self._guard("The export failed", job)

    @work(thread=True, exclusive=True, exit_on_error=False, group="airgap", name="import preview")
    def plan_import(self, folder: Path) -> None:
        from casconsole.bundle.importer import plan_import
        from casconsole.bundle.manifest import open_bundle
        from casconsole.sync.lock import SyncLock

        def job() -> None:
            settings = self.state.settings
            bundle = open_bundle(folder, settings.bundle_trusted_key)
            mirror, sink = settings.mirror_dir, ProgressSink(self)
            if not mirror.is_dir():  # a first copy: a preview makes no folder
                plan = plan_import(mirror, bundle, sink=sink, cancel=self.cancel)
            else:
                with SyncLock(mirror):
                    plan = plan_import(mirror, bundle, sink=sink, cancel=self.cancel)
            self.app.call_from_thread(self.confirm_import, plan)

        self._guard("The import was refused", job)

    def confirm_import(self, plan: Any) -> None:
        problem = plan.problem() or plan.space_problem()
        self.show_plan(plan.summary(), plan.changes(), problem or "")
        if problem:
            self.end(Text(problem, "red"))
            self.app.push_screen(MessageDialog("The import was refused", problem))
            return
        if plan.already:
            self.end(Text("already imported: nothing to do", "green"))
            return
        self.end(Text("import: waiting for your answer", "italic"))
        question = (
            f"{plan.summary()}\n\nEvery file is checked before anything changes; then files, "
            "repodata, deletions. Apply it to this mirror?"
        )

        def answer(yes: bool | None) -> None:
            if yes:
                self.begin("import")
                self.run_import(plan.bundle.folder)
            else:
                self.end("import: not applied")

        self.app.push_screen(ConfirmDialog("Import this bundle?", question), answer)

    @work(thread=True, exclusive=True, exit_on_error=False, group="airgap", name="import")
    def run_import(self, folder: Path) -> None:
        from casconsole.bundle.importer import import_bundle

        def job() -> None:
            settings = self.state.settings
            stats = import_bundle(
                settings.mirror_dir, folder, trusted_key=settings.bundle_trusted_key,
                sink=ProgressSink(self), cancel=self.cancel,
            )  # fmt: skip
            self.app.call_from_thread(self.end, Text(stats.summary, "green"))
            self.app.call_from_thread(self.notify, stats.summary, title="Import done", timeout=8)
            self.app.call_from_thread(self.action_rescan)

        self._guard("The import failed", job)

    @on(AirgapProgress)
    def show_progress(self, message: AirgapProgress) -> None:
        bar = self.query_one("#airgap-progress", ProgressBar)
        bar.update(
            total=message.total or max(1, message.files), progress=message.bytes_done or message.files_done
        )
        what = STAGE_NAMES.get(message.stage, message.stage)
        self.log_line(
            f"{self.running}: {what}: {count(message.files_done)} of {count(message.files)} files, "
            f"{size(message.bytes_done)} of {size(message.total)}"
        )
