"""cas-sync's sync half: run a sync (progress bars, plain lines or JSON), --status, --detach.

Exit status (docs/operations.md): 0 when every file is in place, 1 when a file (or the sync)
failed, 2 when another sync holds the mirror or the settings are wrong, 3 when the prune guard
held a subdir back, 4 when the mirror's disk refused (denied, read-only, full, too little free
space), 130 when stopped by Ctrl-C (or SIGTERM/SIGHUP), 141 when the reader of the output went
away (the sync stops then, as for a Ctrl-C).
`--status` exits 0 when the last sync ended done or one is running, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import humanize

from casconsole.cli import progress
from casconsole.cli.common import fail, start_detached, stdout_gone
from casconsole.cli.progress import BarsSink, transfer_bars
from casconsole.errors import EXIT_BROKEN_PIPE, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_PRUNE_WITHHELD
from casconsole.events import Event
from casconsole.layout import state_dir
from casconsole.settings import Settings, write_snapshot
from casconsole.sync import report
from casconsole.sync.events import SubdirDone, SubdirPlanned, SyncFinished, SyncStarted
from casconsole.sync.lock import lock_holder
from casconsole.sync.status import SyncStatus, event_line, log_path, read_status

if TYPE_CHECKING:  # the engine is imported where a sync starts: `cas-sync --dry-run` never needs it
    from casconsole.sync.engine import SyncStats

DETACHED_OUTPUT = "sync-detached.out"


def add_sync_arguments(parser: argparse.ArgumentParser, mode: argparse._MutuallyExclusiveGroup) -> None:
    mode.add_argument(
        "--status", action="store_true", help="report the running or last sync of the mirror and exit"
    )
    parser.add_argument("--verify", action="store_true", help="re-hash every mirrored file; repair bad ones")
    parser.add_argument(
        "--force-prune",
        action="store_true",
        help="prune even a subdir where more than max_prune of the files left the plan",
    )
    parser.add_argument(
        "--detach",
        action="store_true",
        help="run the sync in the background as its own session (survives logout); print its pid",
    )
    parser.add_argument("--no-progress", action="store_true", help="plain lines, even on a terminal")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="errors only: nothing when all went well (cron, timers)"
    )
    parser.add_argument(
        "--pypi-only", action="store_true", help="sync (or --dry-run) the pypi section only, not the channel"
    )
    parser.add_argument("--detached-child", action="store_true", help=argparse.SUPPRESS)


def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.status:
        return print_status(settings, args.json)
    if args.detach:
        return detach(settings, args)
    if args.detached_child and args.config:
        with contextlib.suppress(OSError):
            Path(args.config).unlink()  # the settings handed over by --detach; read already
    return foreground(settings, args)


# ---------------------------------------------------------------- running in the foreground


def foreground(settings: Settings, args: argparse.Namespace) -> int:
    if args.json:
        sink: _Sink = JsonSink(sys.stdout)
    elif args.quiet:
        sink = QuietSink()
    elif sys.stdout.isatty() and not args.no_progress:
        sink = RichSink()
    else:
        sink = PlainSink(sys.stdout)
    from casconsole.sync.engine import Sync  # 0.1 s of imports (workers, storage, fetch)

    sync = Sync(
        settings,
        sink,
        verify=args.verify,
        force_prune=args.force_prune,
        sections=sections(settings, args.pypi_only),
        conda=not args.pypi_only,
    )
    sink.on_gone = sync.cancel  # the reader of the output went away: stop, as SIGPIPE would

    def on_signal(signum: int, frame: Any) -> None:
        if sync.cancelled:
            raise KeyboardInterrupt  # a second Ctrl-C: stop waiting for the workers
        print(
            f"cas-sync: {signal.Signals(signum).name}: stopping (press Ctrl-C again to force)",
            file=sys.stderr,
        )
        sync.cancel()

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, on_signal) for sig in handled}
    try:
        with sink:
            stats = sync.run()
    except KeyboardInterrupt:
        print("cas-sync: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        # once stopping, the process only has its last lines to print: a further Ctrl-C from an
        # impatient user must not land in them (or in the interpreter's exit) as a second death
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_IGN if sync.cancelled else handler)
    if sink.gone:
        return EXIT_BROKEN_PIPE
    if not args.json and not (args.quiet and stats.exit_status == 0):
        summary(stats, args.verify, sys.stdout if stats.exit_status == 0 else sys.stderr)
    elif stats.exit_status != 0:  # stdout is the events' JSON; a person reads stderr
        summary(stats, args.verify, sys.stderr)
    return stats.exit_status


def sections(settings: Settings, pypi_only: bool) -> list:
    """What the sync carries besides the channel: the PyPI mirror when the settings name projects
    (with --pypi-only, only it; an error when there is none to sync). The PyPI half is imported
    only then: packaging and the email package cost a channel's no-op re-sync 0.09 s (measured)."""
    if not settings.pypi.enabled:
        if pypi_only:
            fail("--pypi-only: the pypi section names no projects (pypi.projects or pypi.requirements)")
        return []
    from casconsole.pypi.sync import pypi_sections

    return pypi_sections(settings)


def summary(stats: SyncStats, verify: bool, out: TextIO) -> None:
    for line in report.summary(stats, verify):
        print(f"cas-sync: {line}", file=out)


class _Sink(progress.QuietSink):
    """A sink that keeps the sync's status from its events: the totals every view shows.

    When the reader of its output goes away (`cas-sync | head`), it stops writing and calls
    `on_gone` (the sync's cancel): a sync nobody reads stops, as a program killed by SIGPIPE.
    """

    gone = False
    on_gone: Any = None

    def __init__(self) -> None:
        self.status = SyncStatus()

    def __call__(self, event: Event) -> None:
        if self.gone:
            return
        try:
            self.write(event)
        except BrokenPipeError:
            self.gone = True
            stdout_gone()
            if self.on_gone is not None:
                self.on_gone()

    def write(self, event: Event) -> None:
        fields = report.fields_of(event)
        self.status.apply(fields)
        self.show(event, fields)

    def show(self, event: Event, fields: dict[str, Any]) -> None:
        raise NotImplementedError


class QuietSink(_Sink):
    """--quiet: nothing while the sync runs; a sync that fails says so in its summary (stderr)."""

    def show(self, event: Event, fields: dict[str, Any]) -> None:
        pass


class JsonSink(_Sink):
    """One JSON object per event and line."""

    def __init__(self, out: TextIO):
        self.out = out
        out.flush()

    def write(self, event: Event) -> None:
        line = event_line(event)
        buffer = getattr(self.out, "buffer", None)
        if buffer is not None:
            buffer.write(line)
        else:
            self.out.write(line.decode())
        self.out.flush()


class PlainSink(_Sink):
    """Lines for logs and pipes: the report's lines, and a progress line now and then."""

    EVERY = 10.0  # seconds between progress lines

    def __init__(self, out: TextIO):
        super().__init__()
        self.out = out
        self.last = time.monotonic()

    def line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def show(self, event: Event, fields: dict[str, Any]) -> None:
        said = report.describe(fields)
        if isinstance(event, SyncStarted):
            self.line(f"cas-sync: {said.text}")
        elif said is not None and not isinstance(event, SyncFinished):  # the summary says it
            self.line(said.text)
        now = time.monotonic()
        if now - self.last >= self.EVERY and not isinstance(event, SyncFinished):
            self.last = now
            st = self.status
            done = st.bytes_done
            rate = done / st.elapsed if st.elapsed else 0
            total = st.bytes_total - st.bytes_failed
            eta = (total - done) / rate if rate else 0
            self.line(
                f"progress: {st.files_done + st.files_failed:,}/{st.files_total:,} files, "
                f"{report.size(done)} of {report.size(total)}, {report.size(rate)}/s, {eta:.0f} s left"
            )


class RichSink(BarsSink, _Sink):
    """Progress bars on a terminal: overall bytes with rate and ETA, one bar per subdir."""

    STYLE = {report.WARNING: "yellow", report.ERROR: "red"}

    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console

        self.console = Console(stderr=False)
        self.progress = transfer_bars(
            console=self.console, label="{task.description:<10}", bar_width=None, transient=False
        )
        self.overall = self.progress.add_task("all", total=None)
        self.tasks: dict[str, Any] = {}
        self.lock = threading.Lock()

    def show(self, event: Event, fields: dict[str, Any]) -> None:
        from rich.text import Text

        p, st = self.progress, self.status
        with self.lock:
            subdir = fields.get("subdir")
            if isinstance(event, SubdirPlanned):
                self.tasks[event.subdir] = p.add_task(event.subdir, total=event.bytes + event.check_bytes)
            if subdir in self.tasks and subdir in st.subdirs:
                sub = st.subdirs[subdir]
                done = st.subdir_bytes_done(subdir)
                p.update(self.tasks[subdir], completed=done, total=sub.settled_total_bytes)
            if st.subdirs:
                p.update(self.overall, completed=st.bytes_done, total=st.bytes_total - st.bytes_failed)
            said = report.describe(fields)
            if isinstance(event, SyncStarted):
                p.console.print(Text(f"cas-sync: {said.text}"))
            elif said is not None and not isinstance(event, (SubdirPlanned, SubdirDone, SyncFinished)):
                p.console.print(Text(said.text, style=self.STYLE.get(said.level, "")))


# ---------------------------------------------------------------- --status


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


# --status exits 0 while the mirror is as its last sync left it in good order (or one runs), 1
# otherwise: monitoring (a systemd timer's check, nagios, cron) reads the outcome without parsing
STATUS_OK = ("done", "running")


def print_status(settings: Settings, as_json: bool) -> int:
    """Print the running or last sync; exit 0 when it is running or ended done, 3 when it ended
    done with the prune guard holding a subdir back (as the sync itself exited), else 1 (it
    failed, stopped, was killed, or no sync has run)."""
    if settings.in_bucket:
        from casconsole.sync.target import bucket_status

        status = bucket_status(settings)
    else:
        status = read_status(settings.mirror_dir)
    if as_json:
        print(json.dumps(status.to_json(), indent=1, default=str))
    else:
        print(format_status(status, settings.local_dir))
    if status.state not in STATUS_OK:
        return EXIT_FAILED
    return EXIT_PRUNE_WITHHELD if status.withheld and status.state != "running" else 0


def format_status(status: SyncStatus, mirror_dir: Path) -> str:
    if status.state == "none":
        return f"no sync has run in {mirror_dir} (no {log_path(mirror_dir)})"
    state = status.state
    if state == "running":
        state = f"running (pid {status.pid})"
    elif state == "interrupted":
        state = f"interrupted (pid {status.pid} is gone without finishing; run cas-sync again to resume)"
    size = humanize.naturalsize
    lines = [
        f"sync of {status.remote_url} into {status.mirror_dir}/{status.channel}",
        f"  state     {state}" + (", verifying every file" if status.verify else ""),
        f"  started   {_when(status.started)}",
        f"  finished  {_when(status.finished)}",
        f"  files     {status.files_done:,} done, {status.files_left:,} left, {status.files_failed:,} failed"
        f" (of {status.files_total:,} to fetch or check)",
        f"  bytes     {size(status.bytes_done)} done, {size(status.bytes_left)} left"
        f" (of {size(status.bytes_total)}; {size(status.rate)}/s on average)",
    ]
    if status.eta is not None:
        lines.append(f"  eta       {humanize.naturaldelta(status.eta)}")
    if status.error:
        lines.append(f"  error     {status.error}")
    for name, sub in status.subdirs.items():
        if sub.finished:
            mark = f"{sub.packages:,} packages in repodata"
        else:  # a sync that ended (failed, cancelled, killed) left this subdir as it was
            mark = "in progress" if status.state == "running" else "not finished"
        lines.append(
            f"  {name:<10}{sub.done:,}/{sub.total:,} files, {sub.failed:,} failed,"
            f" {sub.removed:,} removed; {mark}"
        )
    for transfer in list(status.active.values())[:10]:
        lines.append(
            f"  fetching  {transfer.subdir}/{transfer.fn} {size(transfer.done)} / {size(transfer.size)}"
        )
    for failure in status.failures[:50]:
        lines.append(f"  failed    {failure['subdir']}/{failure['fn']}: {failure['reason']}")
    if len(status.failures) > 50:
        lines.append(
            f"  ... and {len(status.failures) - 50:,} more failures (--status --json lists them all)"
        )
    for subdir, files in status.withheld.items():
        lines.append(
            f"  withheld  {subdir}: prune guard kept {files:,} files that left the plan and the "
            "previous repodata.json (--force-prune removes them)"
        )
    for warning in status.warnings[:20]:
        lines.append(f"  warning   {warning}")
    return "\n".join(lines)


# ---------------------------------------------------------------- --detach


def detach(settings: Settings, args: argparse.Namespace) -> int:
    """Start the sync as its own session (setsid), print its pid and log, and return."""
    holder = (
        None if settings.in_bucket else lock_holder(settings.mirror_dir)
    )  # a bucket's: the child's to tell
    if holder:
        fail(f"another sync of this mirror is running (pid {holder})", status=2)
    cas = state_dir(settings.local_dir)
    cas.mkdir(parents=True, exist_ok=True)
    config = write_snapshot(settings, cas / f"detached-settings.{os.getpid()}.yaml")
    output = cas / DETACHED_OUTPUT
    command = [sys.executable, "-m", "casconsole.cli.sync", "--config", str(config), "--detached-child"]
    command += ["--no-progress"] + (["--verify"] if args.verify else []) + (["--json"] if args.json else [])
    command += ["--quiet"] if args.quiet else []
    command += ["--force-prune"] if args.force_prune else []
    command += ["--pypi-only"] if args.pypi_only else []
    pid, code = start_detached(  # until the child holds the lock, or gave up
        command, output, config, lambda pid: read_status(settings.local_dir).pid == pid, timeout=15
    )
    if code is not None:
        return code
    if args.quiet:
        return 0
    print(f"cas-sync: syncing in the background, pid {pid}")
    print(f"  status log  {log_path(settings.local_dir)}")
    print(f"  output      {output}")
    print(f"  follow it   cas-sync --status --mirror-dir {settings.mirror_dir}   (stop it: kill {pid})")
    return 0
