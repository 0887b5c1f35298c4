"""cas-index: index conda channel folders (`conda index`, incremental), or show their status.

A DIR is a channel folder (every subdir is indexed) or one subdir folder of a channel
(`cas-index /srv/mirror/internal-pkgs/linux-64`, the form the cas-mirror FAQ gives
`conda index`): only that subdir is indexed, and noarch while it has no index yet. It may be a
channel in a bucket, `s3://bucket/prefix/internal-pkgs`, reached with the settings' s3_* keys
(or the AWS variables and files); its index is written conditionally (docs/scale-out.md).

Exit status: 0 done; 1 problems under --strict; 2 bad input (not a channel, being indexed
already); 4 a file or folder that cannot be read or written; 130 interrupted; 141 the reader
of the output went away.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
from collections.abc import Callable
from pathlib import Path

import humanize

from casconsole.cli.common import add_version_argument, entry_point
from casconsole.cli.progress import BarsSink, QuietSink
from casconsole.errors import EXIT_STORAGE
from casconsole.events import Event
from casconsole.index.channel import (
    ChannelError,
    ChannelStatus,
    IndexRaced,
    IndexStarted,
    IndexStats,
    PackageRead,
    ProblemFound,
    SubdirStatus,
    index_channel,
    index_status,
)
from casconsole.layout import KNOWN_SUBDIRS, BucketURL, subdir_folders


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cas-index",
        description="Index conda channel folders: write repodata.json (+ .zst) for each subdir "
        "and channeldata.json. Only new or changed packages are read.",
    )
    parser.add_argument(
        "dirs",
        nargs="+",
        metavar="DIR",
        type=_location,
        help="a channel folder, or one subdir folder of a channel (or s3://bucket/prefix/channel)",
    )
    parser.add_argument("--config", metavar="FILE", help="settings file (for a channel in a bucket)")
    parser.add_argument(
        "--status",
        action="store_true",
        help="show, per subdir, whether the index is fresh or stale; index nothing",
    )
    parser.add_argument("--json", action="store_true", help="with --status: print JSON")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="bad packages or stray files are an error (exit 1): no output is replaced",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="processes that read packages (default: one per CPU)",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="errors only: no progress or summary; skipped packages only under --strict",
    )
    add_version_argument(parser)
    return parser


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.json and not args.status:
        parser.error("--json goes with --status")
    if args.quiet and args.status:
        parser.error("--quiet goes with indexing, not with --status")
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    settings = _settings(args)
    try:
        if args.status:
            return _status(args.dirs, as_json=args.json, settings=settings)
        return max(
            _index(d, strict=args.strict, workers=args.workers, quiet=args.quiet, settings=settings)
            for d in args.dirs
        )
    except KeyboardInterrupt:
        print("cas-index: interrupted; what was read is cached for the next run", file=sys.stderr)
        return 130


def _location(text: str) -> Path | BucketURL:
    try:
        bucket = BucketURL.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return bucket if bucket is not None else Path(text)


def _status_of(exc: ChannelError) -> int:
    """2 for a folder that is not a channel (bad input), 4 for one the disk refuses to list or
    write into (permission denied, read-only)."""
    return EXIT_STORAGE if isinstance(exc.__cause__, OSError) else 2


def target(directory: Path | BucketURL) -> tuple[Path | BucketURL, list[str] | None]:
    """(channel folder, the subdirs to index or None for all) of a DIR argument: a subdir folder
    (a known subdir name, holding no subdir folders itself) stands for itself in its channel."""
    if isinstance(directory, BucketURL):  # a subdir's URL: its channel, that subdir only
        if directory.name in KNOWN_SUBDIRS:
            return directory.parent, [directory.name]
        return directory, None
    if directory.name in KNOWN_SUBDIRS and directory.is_dir() and not subdir_folders(directory):
        return directory.parent, [directory.name]
    return directory, None


def _settings(args: argparse.Namespace):
    """The settings, for a channel in a bucket only (a folder needs none; the index reads none
    itself: they are handed to it)."""
    if args.config is None and not any(isinstance(d, BucketURL) for d in args.dirs):
        return None
    from casconsole.settings import load_settings

    return load_settings(args.config)


# -- status ------------------------------------------------------------------------------------


def _status(dirs: list[Path], *, as_json: bool, settings=None) -> int:
    code = 0
    results: list[ChannelStatus] = []
    for directory in dirs:
        channel, only = target(directory)
        try:
            status = index_status(channel, settings)
            if only is not None:
                status = dataclasses.replace(
                    status, subdirs=tuple(s for s in status.subdirs if s.subdir in only)
                )
            results.append(status)
        except ChannelError as exc:
            print(f"cas-index: {exc}", file=sys.stderr)
            code = max(code, _status_of(exc))
    if as_json:
        print(json.dumps([r.to_json() for r in results], indent=2))
    else:
        for result in results:
            _print_status(result)
    return code


def _print_status(status: ChannelStatus) -> None:
    print(f"{status.channel}: {'fresh' if status.fresh else 'stale'}")
    width = max(len(s.subdir) for s in status.subdirs)
    for s in status.subdirs:
        print(f"  {s.subdir:<{width}}  {'fresh' if s.fresh else 'stale'}  {_status_detail(s)}")
    if not status.channeldata_fresh:
        print("  channeldata.json  stale")


def _status_detail(s: SubdirStatus) -> str:
    parts = [f"{s.packages} packages"]
    changes = [f"{n} {what}" for n, what in ((s.new, "new"), (s.changed, "changed")) if n]
    if s.missing:
        changes.append(f"{s.missing} missing")
    if changes:
        parts.append(", ".join(changes))
    if s.problems:
        parts.append(f"{s.problems} left out")
    if s.indexed_at is None:
        parts.append("never indexed")
    else:
        when = datetime.datetime.fromtimestamp(s.indexed_at)
        parts.append(f"indexed {when:%Y-%m-%d %H:%M} ({humanize.naturaltime(when)})")
        if s.outputs_changed:
            parts.append("repodata.json changed since")
    return "; ".join(parts)


# -- indexing ----------------------------------------------------------------------------------


def _index(directory: Path, *, strict: bool, workers: int | None, quiet: bool = False, settings=None) -> int:
    if quiet:
        reporter: _PlainReporter = _QuietReporter(strict)
    else:
        reporter = _ProgressReporter() if sys.stdout.isatty() else _PlainReporter()
    channel, only = target(directory)
    try:
        with reporter:
            stats = index_channel(
                channel, sink=reporter, strict=strict, workers=workers, subdirs=only, settings=settings
            )
    except ChannelError as exc:
        print(f"cas-index: {exc}", file=sys.stderr)
        return _status_of(exc)
    except BrokenPipeError:
        raise  # not a channel problem: entry_point handles it
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"cas-index: {directory}: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_STORAGE
    if not quiet:
        _print_summary(stats)
    if stats.withheld:
        print(
            f"cas-index: {directory}: {_plural(len(stats.problems), 'problem')} under --strict; "
            "no output was replaced",
            file=sys.stderr,
        )
        return 1
    return 0


def _print_summary(stats: IndexStats) -> None:
    for s in stats.subdirs:
        if s.written:
            done = "written"
        elif stats.withheld and (s.read or s.gone):
            done = "not written (--strict)"
        else:
            done = "up to date"
        changes = ", ".join(f"{n} {what}" for n, what in ((s.read, "read"), (s.gone, "gone")) if n)
        changes = f" ({changes})" if changes else ""
        print(f"  {s.subdir}: {_plural(s.packages, 'package')}{changes}, {done}")
    extra = f", {_plural(len(stats.problems), 'problem')}" if stats.problems else ""
    verb = "indexed" if stats.written else "up to date"
    if stats.withheld:
        verb = "left as it was"
    print(
        f"{stats.channel}: {verb}, {_plural(stats.packages, 'package')} "
        f"({stats.read} read, {stats.cached} cached{extra}) in {stats.seconds:.2f} s"
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _warn(problem: ProblemFound, echo: Callable[[str], None]) -> None:
    echo(f"warning: {problem.subdir}/{problem.fn}: {problem.reason}")


class _PlainReporter(QuietSink):
    """Lines for logs and pipes: what will be read, then warnings as they come."""

    def __call__(self, event: Event) -> None:
        if isinstance(event, IndexStarted):
            read = (
                f", reading {_plural(event.to_read, 'file')} ({humanize.naturalsize(event.to_read_bytes)})"
                if event.to_read
                else ""
            )
            print(f"{event.channel}: {_plural(event.packages, 'package file')}{read}", flush=True)
        elif isinstance(event, ProblemFound):
            _warn(event, lambda line: print(line, file=sys.stderr, flush=True))
        elif isinstance(event, IndexRaced):
            print(_raced(event), file=sys.stderr, flush=True)


def _raced(event: IndexRaced) -> str:
    return f"cas-index: {event.reason}: another writer's index came first; starting again from it"


class _QuietReporter(_PlainReporter):
    """--quiet: nothing but the packages that fail a --strict run (errors there, warnings else)."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict

    def __call__(self, event: Event) -> None:
        if self.strict and isinstance(event, ProblemFound):
            _warn(event, lambda line: print(line, file=sys.stderr, flush=True))


class _ProgressReporter(BarsSink):
    """A rich progress bar over the files being read; warnings printed above it."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=True,
        )
        self.task = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, IndexStarted):
            self.progress.console.print(
                f"{event.channel}: {_plural(event.packages, 'package file')}, {event.to_read} to read",
                highlight=False,
            )
            if event.to_read:
                self.task = self.progress.add_task(Path(event.channel).name, total=event.to_read)
        elif isinstance(event, PackageRead) and self.task is not None:
            self.progress.advance(self.task)
        elif isinstance(event, ProblemFound):
            from rich.text import Text

            _warn(event, lambda line: self.progress.console.print(Text(line, style="yellow")))
        elif isinstance(event, IndexRaced):
            self.progress.console.print(_raced(event), highlight=False)


if __name__ == "__main__":
    sys.exit(main())
