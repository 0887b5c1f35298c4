"""The Server screen and `cas-server --detach`: a real server started detached from the console,
asked for its health, its access log followed, found again by a second console, stopped; tokens
added, used by a real HTTP client against that server, revoked; a channel made private through
the save-with-diff flow. Nothing of casconsole is mocked.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from console_helpers import make_app, static_text, wait_for, wait_workers

from casconsole.console.screens.dialogs import ConfirmDialog, SaveDialog
from casconsole.console.screens.server import ServerScreen, TokenDialog
from casconsole.serve import daemon

pytest_plugins = ["console_fixtures"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(console_dir, internal_channel):
    """The console's folder with a channel and a free port for cas-server; any server left is
    stopped at the end."""
    port = free_port()
    with (console_dir / "user.yaml").open("a") as fh:
        fh.write(f"server_port: {port}\n")
    yield port
    daemon.stop(console_dir / "mirror")


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def server_screen(app) -> ServerScreen:
    assert isinstance(app.screen, ServerScreen)
    return app.screen


async def test_the_server_runs_detached_outlives_the_console_and_is_found_again(served, console_dir):
    port = served
    app = make_app(load_plan=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("0")
        screen = server_screen(app)
        await wait_for(pilot, lambda: screen.view.channels == ["internal-pkgs"])
        assert "not running" in static_text(app, "#server-head")
        await pilot.press("s")
        await wait_for(pilot, lambda: screen.view.health is not None and screen.view.health.ok)
        record = screen.view.record
        assert record is not None and record.url == f"http://127.0.0.1:{port}/"
        for _ in range(12):
            assert get(f"http://127.0.0.1:{port}/internal-pkgs/noarch/repodata.json") == 200
        assert get(f"http://127.0.0.1:{port}/nothing-here") == 404
        await wait_for(
            pilot, lambda: screen.view.requests >= 13
        )  # the console's own health checks not counted
        assert screen.view.requests == 13 and screen.view.rate[0] > 0 and screen.view.bytes > 0
        head = static_text(app, "#server-head")
        assert "running" in head and f"127.0.0.1:{port}" in head and "health ok" in head and "req/s" in head
        log = "\n".join(str(line.text) for line in screen.query_one("#server-log").lines)
        assert "GET /internal-pkgs/noarch/repodata.json" in log and "404" in log
    # the console has quit: the server goes on, in its own session
    assert daemon.running(console_dir / "mirror") == record
    assert os.getsid(record.pid) == record.pid
    assert get(f"http://127.0.0.1:{port}/internal-pkgs/noarch/repodata.json") == 200

    app = make_app(load_plan=False, probe=True)
    async with app.run_test(size=(80, 24)) as pilot:
        # the Overview tells of it, and where to manage it
        await wait_for(pilot, lambda: "listening at" in static_text(app, "#mirror-summary"))
        assert f"in the background, pid {record.pid}" in static_text(app, "#mirror-summary")
        await pilot.press("0")
        screen = server_screen(app)
        await wait_for(pilot, lambda: screen.view.record is not None)
        assert screen.view.record.pid == record.pid  # found again
        await pilot.press("x")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("y")
        await wait_for(pilot, lambda: screen.view.record is None)
        await wait_workers(pilot)
    assert not record.alive and daemon.read_record(console_dir / "mirror") is None
    app = make_app(load_plan=False, probe=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: "not reachable" in static_text(app, "#mirror-summary"))
        assert "0: the Server screen starts it" in static_text(app, "#mirror-summary")
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)


async def test_tokens_and_a_private_channel_from_the_console_against_the_real_server(served, console_dir):
    port = served
    base = f"http://127.0.0.1:{port}"
    app = make_app(load_plan=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("0")
        screen = server_screen(app)
        await wait_for(pilot, lambda: screen.channel == "internal-pkgs")
        assert screen.tokens_table.empty_text == "no token for internal-pkgs: a adds one"
        # private, saved with the diff shown first
        await pilot.press("p")
        assert "private_channels +internal-pkgs" in static_text(app, "#server-detail")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, SaveDialog)
        diff = static_text(app, "#diff")
        assert "+private_channels:" in diff and "internal-pkgs" in diff
        await pilot.press("y")
        await pilot.pause()
        assert yaml.safe_load((console_dir / "user.yaml").read_text())["private_channels"] == [
            "internal-pkgs"
        ]
        assert app.state.settings.private_channels == ["internal-pkgs"] and not screen.pending()
        # a token with upload rights, shown once and copied
        await pilot.press("u")
        await pilot.pause()
        assert isinstance(app.screen, TokenDialog)
        token, record = app.screen.token, app.screen.record
        assert record.upload and record.channel == "internal-pkgs"
        assert token in static_text(app, "#token-text")
        assert f"{base}/t/{token}/internal-pkgs" in static_text(app, "#token-note")
        await pilot.press("c")
        assert app.clipboard == token
        await pilot.press("escape")
        await pilot.pause()
        assert screen.tokens_table.count == 1
        assert token not in str(screen.tokens_table.columns[0].text(0))  # listed by id only
        # the server, started now, keeps the channel behind the token
        await pilot.press("s")
        await wait_for(pilot, lambda: screen.view.health is not None and screen.view.health.ok)
        assert get(f"{base}/internal-pkgs/noarch/repodata.json") == 404
        assert get(f"{base}/t/{token}/internal-pkgs/noarch/repodata.json") == 200
        # revoked from the tokens table: refused at once
        await pilot.press("tab", "R")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog) and record.id in app.screen.message
        await pilot.press("y")
        await pilot.pause()
        assert screen.tokens_table.count == 0
        assert get(f"{base}/t/{token}/internal-pkgs/noarch/repodata.json") == 404
        log = "\n".join(str(line.text) for line in screen.query_one("#server-log").lines)
        await wait_for(pilot, lambda: screen.view.requests >= 3)
        assert token not in log  # the access log hides tokens


def run_server(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "casconsole.cli.server", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cas_server_detach_and_stop(served, console_dir):
    port = served
    started = run_server("--detach", cwd=console_dir)
    assert started.returncode == 0, started.stderr
    assert f"http://127.0.0.1:{port}/" in started.stdout and "cas-server --stop" in started.stdout
    record = daemon.running(console_dir / "mirror")
    assert record is not None and daemon.ask_health(record.url).ok
    again = run_server("--detach", cwd=console_dir)
    assert again.returncode == 2 and f"pid {record.pid}" in again.stderr
    assert get(f"http://127.0.0.1:{port}/internal-pkgs/noarch/repodata.json") == 200
    log = console_dir / "mirror/.cas/server-access.log"
    deadline = time.monotonic() + 10  # the server writes its log lines a fraction of a second later
    while "GET /internal-pkgs/noarch/repodata.json" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    stopped = run_server("--stop", cwd=console_dir)
    assert stopped.returncode == 0 and f"stopped pid {record.pid}" in stopped.stdout
    assert not record.alive and not (console_dir / "mirror/.cas/server.pid").exists()
    assert run_server("--stop", cwd=console_dir).returncode == 1


def test_a_detached_server_that_cannot_start_says_why(console_dir, internal_channel):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_server("--detach", "--port", str(port), cwd=console_dir)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert str(port) in result.stderr
    assert daemon.running(console_dir / "mirror") is None


def test_the_access_tail_counts_what_came_and_skips_the_consoles_own_checks(tmp_path):
    log = tmp_path / "access.log"
    line = '127.0.0.1 - - [02/Dec/2026:01:02:03 +0000] "GET /pkgs/x HTTP/1.1" '
    line += '{status} {n} "-" "{agent}" 0.0010\n'
    log.write_text(line.format(status=200, n=5, agent="old") * 3)
    tail = daemon.AccessTail(log)
    assert not tail.poll(now=100.0)  # lines before following began are shown, not counted as traffic
    assert len(tail.lines) == 3 and tail.requests == 0 and tail.rate() == (0.0, 0.0)
    with log.open("a") as fh:
        fh.write(line.format(status=200, n=1000, agent="curl/8"))
        fh.write(line.format(status=503, n=10, agent="pip/24"))
        fh.write(line.format(status=200, n=241, agent=daemon.HEALTH_AGENT))
        fh.write('127.0.0.1 - - [02/Dec/2026:01:02:04 +0000] "GET /half')  # still being written
    assert tail.poll(now=101.0)
    assert (tail.requests, tail.bytes, tail.errors) == (2, 1010, 1)
    assert tail.rate() == (2 / tail.window, 1010 / tail.window)
    assert [(line.status, line.sent) for line in tail.lines] == [(200, 5)] * 3 + [(200, 1000), (503, 10)]
    assert tail.lines[-1].time == "01:02:03"
    tail.poll(now=200.0)  # the window moved on
    assert tail.rate() == (0.0, 0.0) and tail.requests == 2


def test_detach_and_stop_refuse_a_mirror_in_a_bucket(console_dir):
    (console_dir / "user.yaml").write_text(
        "mirror_dir: s3://bkt/mirror\ns3_endpoint_url: http://127.0.0.1:9\n"
    )
    for flag in ("--detach", "--stop"):
        result = run_server(flag, cwd=console_dir)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert "a mirror in a bucket is served in the foreground" in result.stderr
