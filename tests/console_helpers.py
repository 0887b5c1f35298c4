"""Helpers of the console tests (the fixtures are in console_fixtures.py)."""

from __future__ import annotations

import contextlib
import io
import shutil
import time
from pathlib import Path

from rich.console import Console
from textual.worker import WorkerCancelled, WorkerFailed

from casconsole.console.app import CasConsole
from casconsole.console.session import ConsoleState
from casconsole.index.channel import index_channel


def add_channel(
    mirror: Path, name: str, upstream: Path, picks: dict[str, list[str]], index: bool = True
) -> Path:
    """A custom channel under `mirror`: the demo packages whose file names start with `picks`."""
    channel = mirror / name
    for subdir, prefixes in picks.items():
        (channel / subdir).mkdir(parents=True, exist_ok=True)
        for path in sorted((upstream / subdir).iterdir()):
            if any(path.name.startswith(p) for p in prefixes):
                shutil.copy2(path, channel / subdir / path.name)
    if index:
        index_channel(channel, workers=1)
    return channel


def make_app(**kwargs) -> CasConsole:
    """The console over the settings the environment names (no server probe: tests own ports)."""
    kwargs.setdefault("probe", False)
    return CasConsole(ConsoleState(), **kwargs)


@contextlib.asynccontextmanager
async def on_screen(key: str, size: tuple[int, int] = (80, 24), **kwargs):
    """The console opened at `size`, its first workers done, then `key` pressed: (app, pilot)."""
    app = make_app(**kwargs)
    async with app.run_test(size=size) as pilot:
        await wait_workers(pilot)
        await pilot.press(key)
        await pilot.pause()
        yield app, pilot


FOLLOWERS = ("sync-follow", "server-watch")


async def wait_workers(pilot) -> None:
    """Until every worker has finished (failed ones too) and the messages they sent are handled."""
    for _ in range(2):
        # the Sync screen follows the status log and the Server screen watches the server for as
        # long as they live: not workers to wait for
        for worker in [w for w in pilot.app.workers if w.group not in FOLLOWERS]:
            try:
                await worker.wait()
            except WorkerFailed:
                pass  # the app's failure policy shows it; the tests look at what it showed
            except WorkerCancelled:
                pass  # an exclusive worker replaced by a newer one (a rescan after a sync): over too
        await pilot.pause()


async def wait_for(pilot, condition, timeout: float = 30.0) -> None:
    """Until `condition()` holds, the app running meanwhile (AssertionError after `timeout` s)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await pilot.pause(0.05)


def static_text(app, selector: str) -> str:
    """The text a Static of the current screen shows, as plain text."""
    console = Console(width=200, file=io.StringIO(), record=True, color_system=None)
    console.print(app.screen.query_one(selector).content)
    return console.export_text()
