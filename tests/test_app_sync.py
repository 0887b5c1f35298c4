"""The Sync screen driven by keys: a sync run here, one in the background, one of another process
attached through the status log and cancelled, failures and errors shown with the console up.

Real syncs against a real loopback upstream (tests/upstream_server.py, with slow or failing
files where a test needs a sync to last or to fail); nothing of casconsole is mocked.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from casconsole.widgets.vtable import VirtualTable
from console_helpers import make_app, static_text, wait_for, wait_workers
from upstream_server import Fault, Upstream

from casconsole.console.screens.base import count, size
from casconsole.console.screens.dialogs import ConfirmDialog, MessageDialog
from casconsole.console.screens.sync import SyncScreen
from casconsole.sync.lock import lock_holder
from casconsole.sync.safety import free_space
from casconsole.sync.status import sync_history

pytest_plugins = ["console_fixtures"]

SETTINGS = """\
remote_url: {url}
mirror_dir: mirror
platforms: [linux-64]
blacklist: [r-*, mkl, python, qt-main, pyqt]
"""


def sync_screen(app) -> SyncScreen:
    screen = app.screen
    assert isinstance(screen, SyncScreen)
    return screen


@pytest.fixture
def upstream(console_dir, demo_channel):
    with Upstream(demo_channel) as server:
        (console_dir / "user.yaml").write_text(SETTINGS.format(url=server.url))
        yield server


def slow_down(server: Upstream, root: Path, bytes_per_second: float = 2_000) -> None:
    for subdir in ("linux-64", "noarch"):
        for path in (root / subdir).iterdir():
            if path.name.endswith((".conda", ".tar.bz2")):
                server.always(f"{subdir}/{path.name}", Fault.slow(bytes_per_second))


async def test_a_sync_started_here_mirrors_the_plan_and_the_plan_sees_it(upstream, console_dir):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_workers(pilot)
        kept = app.state.plan.total.kept
        assert app.state.plan.total.download == kept > 0
        await pilot.press("4", "s", "y")  # y: the sync asks once, showing its size
        screen = sync_screen(app)
        await wait_for(pilot, lambda: screen.view.state == "done")
        assert screen.view.here and screen.view.files_done == kept
        channel = console_dir / "mirror" / "pkgs"
        assert (channel / "linux-64" / "repodata.json").exists()
        assert len([p for p in (channel / "linux-64").iterdir() if p.name.endswith((".conda", ".bz2"))]) > 0
        await wait_for(pilot, lambda: app.state.plan.total.download == 0)  # rescanned after the sync
        assert app.state.plan.total.present == kept
        log = "\n".join(str(line.text) for line in screen.query_one("#sync-log").lines)
        assert "sync done" in log and "linux-64: done" in log
        assert app.sync_job is None


async def test_failed_files_are_listed_with_their_reason_and_the_console_stays_up(upstream, demo_channel):
    bad = next(p.name for p in (demo_channel / "noarch").iterdir() if p.name.startswith("six-"))
    upstream.always(f"noarch/{bad}", Fault.status(404))
    app = make_app(load_plan=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4", "s", "y")  # y: the sync asks once, showing its size
        screen = sync_screen(app)
        await wait_for(pilot, lambda: screen.view.state == "failed")
        assert screen.view.files_failed == 1
        assert any(bad in f and "404" in f for f in screen.view.failures)
        await wait_workers(pilot)
        assert app.is_running and app.screen is screen


async def test_an_upstream_that_cannot_be_reached_gives_a_clear_message(console_dir):
    (console_dir / "user.yaml").write_text(SETTINGS.format(url="http://127.0.0.1:9"))
    app = make_app(load_plan=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4", "s", "y")  # y: the sync asks once, showing its size
        await wait_for(pilot, lambda: isinstance(app.screen, MessageDialog))
        assert app.screen.title_text == "The sync failed"
        assert "127.0.0.1:9" in app.screen.message and "Traceback" not in app.screen.message
        await pilot.press("enter")
        screen = sync_screen(app)
        await wait_for(pilot, lambda: screen.view.state == "error")
        assert app.is_running


async def test_cancelling_this_consoles_sync(upstream, demo_channel):
    slow_down(upstream, demo_channel)
    app = make_app(load_plan=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4", "s", "y")  # y: the sync asks once, showing its size
        screen = sync_screen(app)
        await wait_for(pilot, lambda: screen.view.state == "running" and screen.view.active_count > 0)
        assert screen.view.active and screen.view.bytes_total > 0
        await pilot.press("ctrl+q")  # quitting would cancel it: the console asks
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog) and "Quit" in app.screen.title_text
        await pilot.press("n")
        await pilot.pause()
        assert app.is_running and app.sync_job is not None
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("y")
        await wait_for(pilot, lambda: screen.view.state == "cancelled")
        await wait_for(pilot, lambda: app.sync_job is None)
        assert lock_holder(Path("mirror")) is None


async def test_attaching_to_a_sync_of_another_process_and_cancelling_it(upstream, demo_channel, console_dir):
    slow_down(upstream, demo_channel)
    env = {k: v for k, v in os.environ.items()}
    other = subprocess.Popen(
        [sys.executable, "-m", "casconsole.cli.sync", "--no-progress"],
        cwd=console_dir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while lock_holder(console_dir / "mirror") != other.pid:
            assert time.monotonic() < deadline and other.poll() is None
            time.sleep(0.05)
        app = make_app(load_plan=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("4")
            screen = sync_screen(app)
            await wait_for(pilot, lambda: screen.view.state == "running" and screen.view.pid == other.pid)
            assert not screen.view.here
            await wait_for(pilot, lambda: screen.view.files_total > 0)
            await pilot.press("s")  # refused: that sync holds the mirror
            await pilot.pause()
            assert app.sync_job is None
            await pilot.press("c")
            await pilot.pause()
            await pilot.press("y")
            await wait_for(pilot, lambda: screen.view.state == "cancelled")
        assert other.wait(30) == 130
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()


async def test_a_sync_started_in_the_background_outlives_nothing_and_is_followed(upstream, console_dir):
    app = make_app(load_plan=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4", "b", "y")
        screen = sync_screen(app)
        await wait_for(pilot, lambda: screen.view.state == "done", timeout=60)
        assert screen.view.pid != os.getpid() and not screen.view.here
        assert screen.view.files_done > 0
        assert (console_dir / "mirror" / "pkgs" / "linux-64" / "repodata.json").exists()
        assert not list((console_dir / "mirror" / ".cas").glob("console-settings.*"))  # handed over, removed


async def test_a_sync_asks_once_with_its_size_then_lists_in_the_history(upstream, console_dir):
    """The question before a sync shows the plan's download and delete and the disk's free space;
    escape starts nothing; h lists the past syncs from the status log; no notification lies over
    the log."""
    app = make_app()
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await wait_workers(pilot)
        total = app.state.plan.total
        await pilot.press("4", "s")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog) and app.screen.title_text == "Start the sync?"
        question = app.screen.message
        assert f"download  {count(total.download)} file(s), {size(total.download_bytes)}" in question
        assert "delete    0 file(s)" in question and f"{upstream.url}" in question
        free = re.search(r"free      (\S+ \S+) on the mirror's disk", question)
        assert free and free[1] == size(free_space(console_dir / "mirror"))
        await pilot.press("escape")  # asked, declined: nothing starts
        await pilot.pause()
        screen = sync_screen(app)
        assert lock_holder(console_dir / "mirror") is None and app.sync_job is None
        await pilot.press("h")
        await pilot.pause()
        assert "No sync in the status log yet" in static_text(app, "#sync-detail")
        await pilot.press("h", "s", "y")
        await wait_for(pilot, lambda: screen.view.state == "done")
        await wait_for(pilot, lambda: app.state.plan.total.download == 0)
        for n in range(3):  # a busy console's notifications, long ones: the newest shown
            app.notify(f"notification {n}: " + "a message that wraps over lines " * 3, timeout=30)
        await pilot.pause()
        toasts = list(app.screen.query("Toast"))
        log = app.screen.query_one("#sync-log").region
        app.save_screenshot("/tmp/toasts.svg")
        assert len(toasts) == app.TOASTS_SHOWN and all(not toast.region.overlaps(log) for toast in toasts)
        assert log.height >= 5

        # a package blacklisted (unsaved) on the Plan: the next question says what goes
        sp = app.state.plan.subdirs["linux-64"]
        gone = next(r for r, d in zip(sp.records, sp.decisions) if d.included and r.name.startswith("z"))
        await pilot.press("3", "slash", *gone.name, "enter")
        table = app.screen.query_one(VirtualTable)
        table.cursor = next(p for p, i in enumerate(table.view) if sp.records[i].name == gone.name)
        await pilot.press("b")
        await pilot.pause()
        deleted = app.state.plan.total.delete
        assert deleted > 0
        await pilot.press("4", "s")
        await pilot.pause()
        question = app.screen.message
        assert f"delete    {count(deleted)} file(s) that left the plan" in question
        assert f"Unsaved changes go with it: blacklist +{gone.name}" in question
        await pilot.press("escape")
        await pilot.pause()

        await pilot.press("h")
        await wait_for(pilot, lambda: screen.history)
        assert [p.state for p in screen.history] == ["done"]
        assert screen.history[0].downloaded == total.download
        history = static_text(app, "#sync-detail")
        assert "1 past sync(s)" in history and "done" in history and count(total.download) in history
        await pilot.press("h")  # back to the detail
        await pilot.pause()
        assert screen.history is None and "1 past sync(s)" not in static_text(app, "#sync-detail")


def test_the_history_reads_the_rotated_log_and_tells_an_interrupted_sync(upstream, console_dir):
    """Two real syncs by cas-sync, the first log rotated away, then a sync killed in the middle."""
    env = {**os.environ, "CAS_MIRROR_USER_CONFIG": "user.yaml"}
    for _ in range(2):
        run = subprocess.run([sys.executable, "-m", "casconsole.cli.sync"], env=env, capture_output=True)
        assert run.returncode == 0, run.stderr
        log = console_dir / "mirror" / ".cas" / "sync.jsonl"
        if not log.with_name("sync.jsonl.1").exists():
            log.rename(log.with_name("sync.jsonl.1"))
    with log.open("a") as fh:  # what a killed sync leaves: a start and no end
        fh.write(f'{{"event":"started","time":{time.time()},"pid":999999999,"verify":true}}\n')
    past = sync_history(console_dir / "mirror")
    assert [(p.state, p.verify) for p in past] == [("interrupted", True), ("done", False), ("done", False)]
    assert past[2].downloaded > 0 and past[1].downloaded == 0 and past[2].seconds is not None
    assert past[0].seconds is None
