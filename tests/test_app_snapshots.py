"""Snapshots of every console screen at 80x24 (pytest-textual-snapshot).

`pytest tests/test_app_snapshots.py --snapshot-update` rewrites them after a deliberate change;
look at the report (snapshot_report.html) before accepting one. The tests run in a folder of
relative paths with times frozen (console_fixtures), so the pictures are the same everywhere.
"""

from __future__ import annotations

import time

import pytest
from console_helpers import add_channel, make_app, wait_workers

pytest_plugins = ["console_fixtures"]

SIZE = (80, 24)


@pytest.fixture
def mirror(internal_channel, demo_channel, frozen_ago):
    """An indexed channel, and a second one with files its index does not know yet."""
    add_channel(internal_channel.parent, "team", demo_channel, {"noarch": ["click-"]}, index=False)
    return internal_channel.parent


def settle(*keys: str):
    async def run_before(pilot) -> None:
        await wait_workers(pilot)
        for key in keys:
            await pilot.press(key)
            await wait_workers(pilot)
        pilot.app.clear_notifications()
        await pilot.pause()

    return run_before


def test_overview(snap_compare, mirror):
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=settle())


def test_config(snap_compare, console_dir, monkeypatch):
    (console_dir / "system.yaml").write_text("concurrency: 4\nretries: lots\n")
    monkeypatch.setenv("CAS_MIRROR_TIMEOUT", "30")
    # the cursor goes to `retries` by itself: its problem shows in place
    assert snap_compare(make_app(load_plan=False), terminal_size=SIZE, run_before=settle("2"))


def test_plan(snap_compare, console_dir):
    # ghostscript (AGPL, dropped by license) whitelisted: the funnel, the row, the reason change
    keys = ("3", "down", "down", "w")
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=settle(*keys))


def test_plan_save_shows_the_diff(snap_compare, console_dir):
    keys = ("3", "down", "b", "ctrl+s")
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=settle(*keys))


def test_plan_filter_dropped(snap_compare, console_dir):
    keys = ("3", "f", "f")
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=settle(*keys))


def test_sync(snap_compare, console_dir, monkeypatch):
    """A sync run here, finished: clock times, durations and the rate frozen."""
    import casconsole.console.screens.sync as sync

    monkeypatch.setattr(sync, "clock", lambda t: "12:00:00" if t else "--:--:--")
    monkeypatch.setattr(
        sync.report, "duration", lambda seconds: "unknown" if seconds is None else "3 seconds"
    )
    monkeypatch.setattr(sync.SyncStatus, "rate", property(lambda self: 2_500_000.0))
    with (console_dir / "user.yaml").open("a") as fh:
        fh.write("concurrency: 1\n")  # one file at a time: the log lines come in one order

    async def run_before(pilot) -> None:
        await wait_workers(pilot)
        await pilot.press("4", "s")
        deadline = time.monotonic() + 30
        while pilot.app.screen.view.state != "done" or pilot.app.sync_job is not None:
            assert time.monotonic() < deadline
            await pilot.pause(0.05)
        await wait_workers(pilot)
        pilot.app.clear_notifications()
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=run_before)


def test_channels(snap_compare, mirror):
    assert snap_compare(make_app(load_plan=False), terminal_size=SIZE, run_before=settle("5"))


def test_index(snap_compare, mirror):
    assert snap_compare(make_app(load_plan=False), terminal_size=SIZE, run_before=settle("6"))


def test_clients(snap_compare, mirror):
    assert snap_compare(make_app(load_plan=False), terminal_size=SIZE, run_before=settle("7"))


def test_help(snap_compare, console_dir):
    assert snap_compare(make_app(load_plan=False), terminal_size=SIZE, run_before=settle("question_mark"))


def test_failure_dialog(snap_compare, console_dir):
    # nothing listens on the discard port: the fetch fails with "connection refused"
    (console_dir / "user.yaml").write_text(
        "remote_url: http://127.0.0.1:9\nmirror_dir: mirror\nplatforms: [linux-64]\n"
    )
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=settle())


def test_airgap_import_comparison(snap_compare, mirror, console_dir):
    """An older copy of the mirror, shown what a bundle made since its manifest would change."""
    import shutil

    from casconsole.bundle.export import export_bundle
    from casconsole.bundle.state import scan_mirror, write_state

    offline = shutil.copytree(console_dir / "mirror", console_dir / "offline", symlinks=True)
    for path in sorted(offline.glob("internal-pkgs/linux-64/curl-*")):
        path.unlink()
    (offline / "internal-pkgs/noarch/retired-1.0-0.tar.bz2").write_bytes(b"gone upstream")
    write_state(scan_mirror(offline)[0], console_dir / "offline.json")
    export_bundle(
        console_dir / "mirror", console_dir / "stick", since=console_dir / "offline.json", volume_size=1 << 20
    )
    user = console_dir / "user.yaml"
    user.write_text(user.read_text().replace("mirror_dir: mirror", "mirror_dir: offline"))

    async def run_before(pilot) -> None:
        await settle("9", "i")(pilot)
        pilot.app.screen.query_one("Input").value = "stick"
        await settle("enter", "n")(pilot)

    assert snap_compare(make_app(load_plan=False), terminal_size=SIZE, run_before=run_before)
