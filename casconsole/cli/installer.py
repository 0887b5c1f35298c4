"""cas-installer: build a self-extracting offline installer from the mirror's channels.

    cas-installer my-installer.yaml [--platform P] [--output DIR]

writes `DIR/NAME-VERSION-PLATFORM.sh` (DIR: the current folder). Exit status: 0 written; 1 a
package could not be had or the file not written; 2 bad YAML or arguments, a spec that cannot be
solved, a channel that cannot be reached; 130 interrupted. Nothing is left half-written.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

import humanize

from casconsole.cli.common import add_version_argument, entry_point
from casconsole.cli.progress import BarsSink, QuietSink, transfer_bars
from casconsole.events import Event
from casconsole.installer.build import (
    ChannelRead,
    InstallerStats,
    InstallerWritten,
    PackagePacked,
    Solved,
    build_installer,
)
from casconsole.installer.construct import read_spec
from casconsole.settings import load_settings
from casconsole.upstream.policy import NetworkPolicy

EPILOG = """\
my-installer.yaml:
  name: my-installer
  version: 1.0
  channels: [ http://mirror:8080, http://mirror:8080/t/<token>/internal-pkgs ]
  specs: [python, conda]
  license_file: my-license.txt      # optional: shown, and accepted, before installing
  welcome: Welcome to our Python    # optional
  default_prefix: ~/my-installer    # optional (this is the default)
  post_install: post.sh             # optional: run at the end, with PREFIX set

The network settings (timeout, retries, ssl_verify, proxy) and channel_name come from the
usual settings files and CAS_MIRROR_* variables. See docs/installer.md.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cas-installer",
        description="Build a self-extracting installer (NAME-VERSION-PLATFORM.sh) that installs the "
        "specs of FILE, solved against its channels, with no network and no conda on the target.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", metavar="FILE", type=Path, help="the installer's description (YAML)")
    add_version_argument(parser)
    parser.add_argument("--platform", metavar="P", help="the target platform (default: this machine's)")
    parser.add_argument("--output", metavar="DIR", type=Path, default=Path("."), help="where to write it")
    parser.add_argument("--config", metavar="FILE", type=Path, help="a settings file (network settings)")
    parser.add_argument("--quiet", action="store_true", help="print only the installer's path")
    return parser


@entry_point
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    spec = read_spec(args.file, args.platform)
    settings = load_settings(args.config)
    reporter = QuietSink() if args.quiet else _Bars() if sys.stderr.isatty() else _Lines()
    cancel = threading.Event()
    try:
        with reporter:
            stats = build_installer(
                spec,
                args.output,
                policy=NetworkPolicy.of(settings),
                channel_name=settings.channel_name,
                sink=reporter,
                cancel=cancel,
            )
    except KeyboardInterrupt:
        cancel.set()
        raise
    try:
        _summary(stats, args.quiet)
    except BrokenPipeError:  # the reader went away (`| head`): the installer is written all the same
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _summary(stats: InstallerStats, quiet: bool) -> None:
    if quiet:
        print(stats.path)
        return
    size = humanize.naturalsize(stats.size, format="%.1f")
    print(f"{stats.path}: {_plural(len(stats.packages), 'package')}, {size}, sha256 {stats.sha256}")
    downloaded = humanize.naturalsize(stats.downloaded, format="%.1f")
    installed = humanize.naturalsize(stats.installed_bytes, format="%.1f")
    print(
        f"  {downloaded} downloaded, {installed} once installed, {stats.edits} files with prefix "
        f"placeholders, {stats.seconds:.1f} s"
    )
    print(f"  install with: sh {stats.path.name if stats.path else ''} -b -p PREFIX   (-h for the options)")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _describe(event: Event) -> str | None:
    if isinstance(event, ChannelRead):
        return f"{event.channel}/{event.subdir}: {_plural(event.records, 'record')}"
    if isinstance(event, Solved):
        size = humanize.naturalsize(event.download_bytes, format="%.1f")
        return f"solved: {_plural(event.packages, 'package')} ({size})"
    if isinstance(event, PackagePacked):
        edits = f", {event.edits} to relocate" if event.edits else ""
        return f"[{event.done}/{event.total}] {event.fn}: {_plural(event.files, 'file')}{edits}"
    return None


class _Lines(QuietSink):
    """A line per step, for logs and pipes."""

    def __call__(self, event: Event) -> None:
        line = _describe(event)
        if line is not None:
            print(line, file=sys.stderr, flush=True)


class _Bars(BarsSink):
    """A progress bar over the packages on a terminal, each step printed above it."""

    def __init__(self) -> None:
        self.progress = transfer_bars(stderr=True)
        self.task = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, Solved):
            self.task = self.progress.add_task("packing", total=max(event.download_bytes, 1))
        elif isinstance(event, PackagePacked) and self.task is not None:
            self.progress.advance(self.task, event.size)
        elif isinstance(event, InstallerWritten) and self.task is not None:
            self.progress.update(self.task, description="written")
        line = _describe(event)
        if line is not None:
            self.progress.console.print(line, highlight=False, markup=False)


if __name__ == "__main__":
    sys.exit(main())
