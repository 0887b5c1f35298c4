"""Snapshots of every console screen at 80x24 (what an SSH session gives) and 120x40 (a larger
terminal, which the screens use), with pytest-textual-snapshot.

`pytest tests/test_app_snapshots.py --snapshot-update` rewrites them after a deliberate change;
look at the report (snapshot_report.html) before accepting one. The tests run in a folder of
relative paths with times frozen (console_fixtures), so the pictures are the same everywhere.
"""

from __future__ import annotations

import time

import pytest
from console_helpers import add_channel, make_app, wait_workers

pytest_plugins = ["console_fixtures"]


@pytest.fixture(params=[(80, 24), (120, 40)], ids=["80x24", "120x40"])
def size(request) -> tuple[int, int]:
    return request.param


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


def test_overview(snap_compare, size, mirror):
    assert snap_compare(make_app(), terminal_size=size, run_before=settle())


def test_config(snap_compare, size, console_dir, monkeypatch):
    (console_dir / "system.yaml").write_text("concurrency: 4\nretries: lots\n")
    monkeypatch.setenv("CAS_MIRROR_TIMEOUT", "30")
    monkeypatch.setenv("XDG_DATA_HOME", "/home/admin/.local/share")  # the default mirror_dir, shown whole
    # the cursor goes to `retries` by itself: its problem shows in place
    assert snap_compare(make_app(load_plan=False), terminal_size=size, run_before=settle("2"))


def test_plan(snap_compare, size, console_dir):
    # ghostscript (AGPL, dropped by license) whitelisted: the funnel, the row, the reason change
    keys = ("3", "down", "down", "w")
    assert snap_compare(make_app(), terminal_size=size, run_before=settle(*keys))


def test_plan_save_shows_the_diff(snap_compare, size, console_dir):
    keys = ("3", "down", "b", "ctrl+s")
    assert snap_compare(make_app(), terminal_size=size, run_before=settle(*keys))


def test_plan_filter_dropped(snap_compare, size, console_dir):
    keys = ("3", "f", "f")
    assert snap_compare(make_app(), terminal_size=size, run_before=settle(*keys))


def test_sync(snap_compare, size, console_dir, monkeypatch):
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
        await pilot.press("4", "s", "y")  # y: the sync asks once
        deadline = time.monotonic() + 30
        while pilot.app.screen.view.state != "done" or pilot.app.sync_job is not None:
            assert time.monotonic() < deadline
            await pilot.pause(0.05)
        await wait_workers(pilot)
        pilot.app.clear_notifications()
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=size, run_before=run_before)


def test_channels(snap_compare, size, mirror):
    assert snap_compare(make_app(load_plan=False), terminal_size=size, run_before=settle("5"))


def test_index(snap_compare, size, mirror):
    assert snap_compare(make_app(load_plan=False), terminal_size=size, run_before=settle("6"))


def test_clients(snap_compare, size, mirror):
    assert snap_compare(make_app(load_plan=False), terminal_size=size, run_before=settle("7"))


def test_plan_dependencies_warning(snap_compare, size, console_dir):
    """readline blacklisted: python is left without it; the warning names it and offers W."""
    keys = ("3", "slash", *"readline", "enter", "b", "escape")
    assert snap_compare(make_app(), terminal_size=size, run_before=settle(*keys))


def test_sync_question(snap_compare, size, console_dir, monkeypatch):
    """What the sync will do, asked before it starts (the disk's free space fixed)."""
    import casconsole.console.screens.sync as sync

    monkeypatch.setattr(sync, "free_space", lambda folder: 50 * 10**9)
    assert snap_compare(make_app(), terminal_size=size, run_before=settle("4", "s"))


def test_installers(snap_compare, size, mirror, monkeypatch):
    import casconsole.console.screens.installers as installers

    monkeypatch.setattr(installers, "ago", lambda timestamp: "a moment ago")
    assert snap_compare(make_app(load_plan=False), terminal_size=size, run_before=settle("8"))


def test_airgap(snap_compare, size, mirror):
    assert snap_compare(make_app(load_plan=False), terminal_size=size, run_before=settle("9"))


def test_server(snap_compare, size, mirror, monkeypatch):
    """Not running (it would listen on the settings' address), a channel made private and not
    saved yet: the detail says so."""
    import casconsole.console.screens.server as server

    monkeypatch.setattr(server, "clock", lambda timestamp: "12:00:00")

    async def run_before(pilot) -> None:
        await settle("0")(pilot)
        deadline = time.monotonic() + 30
        while not pilot.app.screen.channel_names:  # the watcher's first look
            assert time.monotonic() < deadline
            await pilot.pause(0.05)
        await settle("down", "p")(pilot)

    assert snap_compare(make_app(load_plan=False), terminal_size=size, run_before=run_before)


def test_screen_list(snap_compare, size, console_dir):
    assert snap_compare(make_app(load_plan=False), terminal_size=size, run_before=settle("g"))


def test_help(snap_compare, size, console_dir):
    assert snap_compare(make_app(load_plan=False), terminal_size=size, run_before=settle("question_mark"))


def test_plan_failure_at_start(snap_compare, size, console_dir):
    """No dialog: the Overview says why the plan failed, every key works."""
    # nothing listens on the discard port: the fetch fails with "connection refused"
    (console_dir / "user.yaml").write_text(
        "remote_url: http://127.0.0.1:9\nmirror_dir: mirror\nplatforms: [linux-64]\n"
    )
    assert snap_compare(make_app(), terminal_size=size, run_before=settle())


def test_airgap_import_comparison(snap_compare, size, mirror, console_dir):
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

    assert snap_compare(make_app(load_plan=False), terminal_size=size, run_before=run_before)
