"""cas-upload: publish conda packages into a channel of a cas-server, indexed at once.

Every file is checked locally first (nothing is sent if one cannot be uploaded), then each is
streamed with a progress bar (a line per file when stderr is not a terminal).

Exit status: 0 every file uploaded (or already there with the same bytes); 1 some were refused
(each named with the server's reason) or the server cannot be reached; 2 bad arguments or a
file that cannot be uploaded as given; 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import humanize

from casconsole.cli.common import add_version_argument, entry_point
from casconsole.cli.progress import BarsSink, QuietSink, transfer_bars
from casconsole.errors import EXIT_FAILED
from casconsole.events import Event
from casconsole.layout import channel_name_problem
from casconsole.upload.client import (
    UploadFinished,
    UploadProgress,
    UploadSent,
    UploadStarted,
    UploadStats,
    check_files,
    tls_verify,
    token_from,
    upload_packages,
)

EPILOG = """\
examples:
  cas-upload mytool-1.0-h0_0.conda --channel internal-pkgs --server http://mirror:8080 --token T
  CAS_UPLOAD_TOKEN=T cas-upload dist/*.conda --channel internal-pkgs --server https://conda.example.org
  cas-upload mytool-1.0-h0_0.conda ... --force   replace a file of that name with other bytes
                                                (the server keeps the old one under .history/)

The token comes from `cas-server token add internal-pkgs --upload`.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cas-upload",
        description="Upload conda packages into a channel of a cas-server; each is indexed at once.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="a .conda or .tar.bz2 package")
    parser.add_argument("--channel", required=True, help="the channel to upload into, e.g. internal-pkgs")
    parser.add_argument(
        "--server", required=True, metavar="URL", help="the cas-server, e.g. http://mirror:8080"
    )
    parser.add_argument(
        "--token", metavar="T", help="a token with upload rights (default: the variable CAS_UPLOAD_TOKEN)"
    )
    parser.add_argument(
        "--subdir", help="the subdir to upload into (default: the one each package's info/index.json names)"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace a file of the same name with other bytes (the server keeps the old one)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="give up on a server that takes no bytes or gives no answer for this long (default: 300)",
    )
    parser.add_argument(
        "--ssl-verify",
        default="true",
        metavar="VALUE",
        help="verify the server's certificate: true (default), false, or a CA bundle file",
    )
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    add_version_argument(parser)
    return parser


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.server.startswith(("http://", "https://")):
        parser.error(f"--server {args.server}: expected an http:// or https:// URL")
    problem = channel_name_problem(args.channel)
    if problem:
        parser.error(f"--channel: {problem}")
    if not args.timeout > 0:
        parser.error("--timeout: expected a number of seconds > 0")
    verify = {"true": True, "false": False}.get(args.ssl_verify.lower(), args.ssl_verify)
    token = token_from(args.token)
    packages = check_files(args.files, args.subdir)
    reporter = QuietSink() if args.quiet else _Bars() if sys.stderr.isatty() else _Lines()
    with reporter:
        stats = upload_packages(
            packages,
            args.server,
            args.channel,
            token,
            force=args.force,
            timeout=args.timeout,
            verify=tls_verify(verify),
            sink=reporter,
        )
    return _summary(stats, args.quiet)


def _summary(stats: UploadStats, quiet: bool) -> int:
    failed = stats.failed
    for result in failed:
        print(f"cas-upload: error: {result.message}", file=sys.stderr)
    if not quiet:
        done = len(stats.results) - len(failed)
        print(
            f"cas-upload: {done} of {len(stats.results)} uploaded "
            f"({humanize.naturalsize(stats.bytes_sent)} sent in {stats.seconds:.1f} s)",
            file=sys.stderr,
        )
    return EXIT_FAILED if failed else 0


def _line(event: UploadFinished) -> str | None:
    """What a file's upload did; None for a failure (the summary names it, with its reason)."""
    if event.outcome == "failed":
        return None
    return f"{event.subdir}/{event.fn}: {event.outcome}, indexed ({event.message}; {event.seconds:.1f} s)"


class _Lines(QuietSink):
    """A line per file, for logs and pipes."""

    def __call__(self, event: Event) -> None:
        line = _line(event) if isinstance(event, UploadFinished) else None
        if line is not None:
            print(line, file=sys.stderr, flush=True)


class _Bars(BarsSink):
    """A progress bar per file on a terminal (bytes, rate, time left); its line stays after."""

    def __init__(self) -> None:
        self.progress = transfer_bars(stderr=True)
        self.tasks: dict[str, int] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, UploadStarted):
            self.tasks[event.fn] = self.progress.add_task(event.fn, total=max(event.size, 1))
        elif isinstance(event, UploadProgress) and event.fn in self.tasks:
            self.progress.update(self.tasks[event.fn], completed=event.sent)
        elif isinstance(event, UploadSent) and event.fn in self.tasks:
            waiting = f"{event.fn}: the server checks and indexes it…"
            self.progress.update(self.tasks[event.fn], description=waiting)
        elif isinstance(event, UploadFinished):
            task = self.tasks.pop(event.fn, None)
            if task is not None:
                self.progress.remove_task(task)
            line = _line(event)
            if line is not None:
                self.progress.console.print(line, highlight=False, markup=False)


if __name__ == "__main__":
    sys.exit(main())
