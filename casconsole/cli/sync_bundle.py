"""cas-sync's air-gap half: --manifest, --export, --import, --gen-key (docs/airgap.md).

Exit status: 0 done (or nothing to do), 1 refused or failed (a damaged, unsigned or mismatched
bundle, no room, a disk error), 2 bad arguments or the mirror busy, 130 stopped (Ctrl-C,
SIGTERM, SIGHUP; an export leaves no manifest, an import completes when run again).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from casconsole.cli.progress import BarsSink, QuietSink, transfer_bars
from casconsole.errors import EXIT_INTERRUPTED, Cancelled
from casconsole.events import Event
from casconsole.settings import Settings

DEFAULT_VOLUME_TEXT = "4 GiB - 1 MiB"


def add_bundle_arguments(parser: argparse.ArgumentParser, mode: argparse._MutuallyExclusiveGroup) -> None:
    group = parser.add_argument_group("air gap", "carry the mirror across an air gap (docs/airgap.md)")
    mode.add_argument(
        "--manifest",
        metavar="FILE",
        type=Path,
        help="write the mirror's state (every file's size and sha256) to FILE, for --export --since",
    )
    mode.add_argument(
        "--export",
        metavar="DIR",
        type=Path,
        help="write a bundle of the mirror into DIR: all of it, or what --since's mirror lacks",
    )
    mode.add_argument(
        "--import",
        dest="import_",
        metavar="DIR",
        type=Path,
        help="check the bundle in DIR whole, then apply it to the mirror",
    )
    mode.add_argument(
        "--gen-key",
        metavar="FILE",
        type=Path,
        help="write a new Ed25519 key pair: FILE (private, for --sign-key) and FILE.pub (bundle_trusted_key)",
    )
    group.add_argument(
        "--since",
        metavar="MANIFEST",
        type=Path,
        help="with --export: carry only what the mirror whose --manifest this is lacks or holds wrong",
    )
    group.add_argument(
        "--volume-size",
        metavar="SIZE",
        help=f"with --export: the largest volume file, e.g. 4G, 700M (default {DEFAULT_VOLUME_TEXT}: "
        "FAT32 holds 4 GiB - 1 byte a file)",
    )
    group.add_argument(
        "--sign-key", metavar="KEY", type=Path, help="with --export: sign the manifest (Ed25519)"
    )
    group.add_argument(
        "--rehash",
        action="store_true",
        help="with --manifest, --export, --import: hash every file on disk instead of trusting the store",
    )


def wanted(args: argparse.Namespace) -> bool:
    return any(getattr(args, name) is not None for name in ("manifest", "export", "import_", "gen_key"))


def check_arguments(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    export_only = {"--since": args.since, "--volume-size": args.volume_size, "--sign-key": args.sign_key}
    for flag, value in export_only.items():
        if value is not None and args.export is None:
            parser.error(f"{flag} goes with --export")
    if args.rehash and not (args.manifest or args.export or args.import_):
        parser.error("--rehash goes with --manifest, --export or --import")


def run(settings: Settings, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    check_arguments(args, parser)
    if args.gen_key is not None:
        return gen_key(args.gen_key)
    out = sys.stdout
    sink = make_sink(args, out)
    cancel = threading.Event()
    restore = _handle_signals(cancel)
    try:
        with sink:
            if args.manifest is not None:
                return manifest(settings, args, sink, cancel)
            if args.export is not None:
                return export(settings, args, sink, cancel, parser)
            return import_(settings, args, sink, cancel)
    except Cancelled:
        print("cas-sync: stopped; run the same command again to complete it", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        restore()


def _handle_signals(cancel: threading.Event) -> Callable[[], None]:
    """Ctrl-C, SIGTERM and SIGHUP stop the work at the next file (a second Ctrl-C at once)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_signal(signum: int, frame: Any) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        print(f"cas-sync: {signal.Signals(signum).name}: stopping", file=sys.stderr)
        cancel.set()

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, on_signal) for sig in handled}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


# ---------------------------------------------------------------- the commands


def gen_key(path: Path) -> int:
    from casconsole.bundle.signing import generate_key

    public = generate_key(path)
    print(f"cas-sync: wrote {path} (the private key: keep it on the connected side; --sign-key {path})")
    print(f"cas-sync: wrote {public} (the public key: on the offline side, set bundle_trusted_key: {public})")
    return 0


def manifest(settings: Settings, args: argparse.Namespace, sink: _Sink, cancel: threading.Event) -> int:
    from casconsole.bundle.state import MirrorState, scan_mirror, write_state
    from casconsole.sync.lock import SyncLock

    mirror = settings.mirror_dir
    if settings.in_bucket:  # scanned from the bucket, under its lock object
        from casconsole.bundle.bucket import mirror_lock
        from casconsole.storage import open_storage

        storage = open_storage(settings)
        with mirror_lock(storage):
            state, stats = scan_mirror(storage, rehash=args.rehash, sink=sink, cancel=cancel)
    elif mirror.is_dir():
        with SyncLock(mirror):
            state, stats = scan_mirror(mirror, rehash=args.rehash, sink=sink, cancel=cancel)
    else:  # a site's first copy: the mirror holds nothing yet, and says so
        state, stats = MirrorState(mirror=str(mirror)), None
    write_state(state, args.manifest)
    hashed = f", {stats.hashed:,} hashed" if stats is not None else ""
    sink.say(
        f"wrote {args.manifest}: {len(state.files):,} files in {len(state.channels())} channel(s), "
        f"{_size(state.size)}{hashed}; state {state.digest}"
    )
    return 0


def export(
    settings: Settings,
    args: argparse.Namespace,
    sink: _Sink,
    cancel: threading.Event,
    parser: argparse.ArgumentParser,
) -> int:
    from casconsole.bundle.export import export_bundle
    from casconsole.bundle.volumes import DEFAULT_VOLUME_SIZE, MIN_VOLUME_SIZE, parse_size

    volume_size = DEFAULT_VOLUME_SIZE
    if args.volume_size is not None:
        try:
            volume_size = parse_size(args.volume_size)
        except ValueError as exc:
            parser.error(f"--volume-size: {exc}")
        if volume_size < MIN_VOLUME_SIZE:
            parser.error(f"--volume-size: {args.volume_size!r} is below the least, 1M")

    def on_plan(plan) -> None:
        sink.say(plan.summary())
        fs = f", {plan.fstype}" if plan.fstype else ""
        sink.say(
            f"target {plan.target}{fs}: {_size(plan.free + plan.reclaimable)} free, {_size(plan.size)} needed"
        )

    mirror = settings.mirror_dir
    if settings.in_bucket:  # read from the bucket (bundle/bucket.py)
        from casconsole.storage import open_storage

        mirror = open_storage(settings)
    export_bundle(
        mirror,
        args.export,
        since=args.since,
        volume_size=volume_size,
        sign_key=args.sign_key,
        rehash=args.rehash,
        sink=sink,
        cancel=cancel,
        on_plan=on_plan,
    )
    return 0


def import_(settings: Settings, args: argparse.Namespace, sink: _Sink, cancel: threading.Event) -> int:
    from casconsole.bundle.importer import import_bundle

    if settings.in_bucket:
        from casconsole.errors import SettingsError

        raise SettingsError(
            f"mirror_dir is a bucket ({settings.mirror_dir}): a bundle is imported into a mirror folder "
            "(the offline side); export from a bucket, import into a folder (docs/scale-out.md)"
        )
    trusted = settings.bundle_trusted_key

    def on_plan(plan) -> None:
        sink.say(plan.summary())

    import_bundle(
        settings.mirror_dir,
        args.import_,
        trusted_key=trusted,
        rehash=args.rehash,
        sink=sink,
        cancel=cancel,
        on_plan=on_plan,
    )
    return 0


def _size(n: int) -> str:
    import humanize

    return humanize.naturalsize(n, format="%.1f")


# ---------------------------------------------------------------- progress


def make_sink(args: argparse.Namespace, out: TextIO) -> _Sink:
    if args.json:
        return JsonSink(out)
    if args.quiet:
        return _Sink(out)
    if out.isatty() and not args.no_progress:
        return RichSink(out)
    return PlainSink(out)


class _Sink(QuietSink):
    """The events of a manifest, export or import as the user sees them; the base says nothing
    (--quiet: errors go to stderr through the command's error path)."""

    def __init__(self, out: TextIO):
        self.out = out

    def __call__(self, event: Event) -> None:
        pass

    def say(self, text: str) -> None:
        """A line of the command's own (the plan, the outcome)."""


class JsonSink(_Sink):
    """One JSON object a line per event; the command's own lines as `{"event": "say"}`."""

    def __call__(self, event: Event) -> None:
        self.out.write(json.dumps(event.to_json()) + "\n")
        self.out.flush()

    def say(self, text: str) -> None:
        self.out.write(json.dumps({"event": "say", "time": time.time(), "text": text}) + "\n")
        self.out.flush()


class PlainSink(_Sink):
    """Lines for logs and pipes: each stage, a progress line every ten seconds, the outcome."""

    EVERY = 10.0

    def __init__(self, out: TextIO):
        super().__init__(out)
        self.stage = ""
        self.files = self.bytes = self.done_files = self.done_bytes = 0
        self.last = time.monotonic()

    def line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def say(self, text: str) -> None:
        self.line(f"cas-sync: {text}")

    def __call__(self, event: Event) -> None:
        from casconsole.bundle import events as ev

        if isinstance(event, ev.StageStarted):
            self.stage, self.files, self.bytes = event.stage, event.files, event.bytes
            self.done_files = self.done_bytes = 0
            if event.files:
                self.line(f"{event.stage}: {event.files:,} files, {_size(event.bytes)}")
        elif isinstance(event, (ev.FileDone, ev.BytesDone)):
            self.done_bytes += event.bytes
            self.done_files += isinstance(event, ev.FileDone)
            now = time.monotonic()
            if now - self.last >= self.EVERY:
                self.last = now
                self.line(
                    f"{self.stage}: {self.done_files:,}/{self.files:,} files, "
                    f"{_size(self.done_bytes)} of {_size(self.bytes)}"
                )
        elif isinstance(event, ev.BundleWarning):
            self.line(f"warning: {event.message}")
        elif isinstance(event, ev.BundleFinished):
            self.say(f"{event.summary} ({event.seconds:.1f} s)")


class RichSink(BarsSink, PlainSink):
    """A progress bar per stage on a terminal (bytes, rate, time left)."""

    def __init__(self, out: TextIO):
        super().__init__(out)
        from rich.console import Console

        self.console = Console(file=out)
        self.progress = transfer_bars(
            console=self.console, label="{task.description:<9}", bar_width=None, transient=False
        )
        self.task: Any = None

    def line(self, text: str) -> None:
        from rich.text import Text

        self.progress.console.print(Text(text))

    def __call__(self, event: Event) -> None:
        from casconsole.bundle import events as ev

        if isinstance(event, ev.StageStarted):  # a bar for stages that move bytes
            self.task = self.progress.add_task(event.stage, total=event.bytes) if event.bytes else None
        elif isinstance(event, (ev.FileDone, ev.BytesDone)) and self.task is not None:
            self.progress.advance(self.task, event.bytes)
        elif isinstance(event, (ev.BundleWarning, ev.BundleFinished)):
            super().__call__(event)
