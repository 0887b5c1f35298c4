"""What the commands' progress sinks share: a sink that shows nothing, and rich's bars.

Each command turns its own events into lines and bars; the context-manager protocol, the bars'
start and stop and the columns of a transfer are the same everywhere, so they live here. rich is
imported only when bars are made: a command writing to a pipe or a log never pays for it.
"""

from __future__ import annotations

from typing import Any, TypeVar

from casconsole.events import Event

_S = TypeVar("_S", bound="QuietSink")


class QuietSink:
    """A sink that shows nothing (--quiet), and the base of every command's sinks."""

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def __call__(self, event: Event) -> None:
        pass


class BarsSink(QuietSink):
    """A sink drawing rich progress bars on a terminal: started on entry, stopped on exit."""

    progress: Any

    def __enter__(self: _S) -> _S:
        self.progress.start()  # type: ignore[attr-defined]
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


def transfer_bars(
    *,
    console: Any = None,
    stderr: bool = False,
    label: str = "{task.description}",
    bar_width: int | None = 40,
    transient: bool = True,
) -> Any:
    """Bars for moving bytes: a label, the bar, bytes done of total, the rate and the time left.

    `bar_width=None` stretches the bar over the terminal; the label's format (`{task.description:<10}`)
    lines up bars whose labels differ in length.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn(label),
        BarColumn(bar_width=bar_width),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console if console is not None else Console(stderr=stderr),
        transient=transient,
        refresh_per_second=5,
    )
