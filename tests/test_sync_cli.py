"""`cas-sync` as a user runs it: real processes against a loopback upstream; exit statuses, output,
--json, --status, --verify, --detach, Ctrl-C, progress bars on a terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys

import pytest
from processes import wait_for
from upstream_server import Fault, Upstream, make_channel, mirror_problems, spec

from casconsole.sync.engine import read_status
from casconsole.sync.lock import SyncLock

SUBDIRS = ("linux-64", "noarch")


@pytest.fixture
def upstream(tmp_path):
    root = tmp_path / "upstream"
    make_channel(
        root,
        {
            "linux-64": [spec("big", "1.0", "linux-64", kb=400), spec("small", "1.0", "linux-64")],
            "noarch": [spec("helper", "1.0")],
        },
    )
    with Upstream(root) as server:
        yield server


@pytest.fixture
def config(tmp_path, upstream):
    path = tmp_path / "cas.yaml"
    path.write_text(
        f"remote_url: {upstream.url}\nmirror_dir: {tmp_path / 'mirror'}\nplatforms: [linux-64]\nretries: 1\n"
    )
    return path


def cas_sync(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "casconsole.cli.sync", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )


def popen(*args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "casconsole.cli.sync", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_plain_output_and_exit_status_0(config, upstream, tmp_path):
    result = cas_sync("--config", config)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"cas-sync: {upstream.url} -> {tmp_path / 'mirror'}/pkgs (linux-64, noarch)" in out
    assert "linux-64: 2 kept of 2; 0 in place, 2 to download" in out
    assert "linux-64: done, 2 packages in repodata.json" in out
    assert "cas-sync: done in" in out and "3 downloaded" in out
    assert mirror_problems(tmp_path / "mirror" / "pkgs", upstream.root, SUBDIRS) == []


def test_a_failed_file_exits_1_naming_it(config, upstream, tmp_path):
    upstream.always("linux-64/small-1.0-0.conda", Fault.status(500))
    result = cas_sync("--config", config)
    assert result.returncode == 1
    assert "failed: linux-64/small-1.0-0.conda: HTTP 500 (after 2 attempts)" in result.stdout
    assert "cas-sync: failed: linux-64/small-1.0-0.conda: HTTP 500" in result.stderr
    assert (tmp_path / "mirror" / "pkgs" / "linux-64" / "big-1.0-0.conda").exists()


def test_an_unreachable_upstream_exits_1_with_the_reason(tmp_path):
    result = cas_sync(
        "--remote-url", "http://127.0.0.1:9", "--mirror-dir", tmp_path / "m", "--platform", "linux-64"
    )
    assert result.returncode == 1
    assert (
        "cas-sync: error: http://127.0.0.1:9/linux-64/repodata.json.zst:"
        " cannot connect to 127.0.0.1:9 (ConnectionRefusedError: [Errno 111] Connection refused)"
    ) in result.stderr
    assert read_status(tmp_path / "m").state == "error"
    status = cas_sync("--status", "--remote-url", "http://127.0.0.1:9", "--mirror-dir", tmp_path / "m")
    assert "  state     error" in status.stdout
    # the subdirs of a sync that ended early are not "in progress"
    assert "linux-64  0/0 files, 0 failed, 0 removed; not finished" in status.stdout


def test_json_prints_one_event_per_line(config):
    result = cas_sync("--config", config, "--json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished"
    assert kinds.count("planned") == 2 and kinds.count("file_done") == 3 and kinds.count("subdir_done") == 2
    assert events[-1]["state"] == "done" and events[-1]["stats"]["downloaded"] == 3


def test_a_second_sync_exits_2_naming_the_holder(config, tmp_path):
    with SyncLock(tmp_path / "mirror"):
        result = cas_sync("--config", config)
    assert result.returncode == 2
    assert f"another sync of this mirror is running (pid {os.getpid()};" in result.stderr


def test_status_reports_none_then_the_last_sync(config, tmp_path):
    result = cas_sync("--config", config, "--status")
    # monitoring reads the exit status: no sync yet is not a mirror in good order
    assert result.returncode == 1 and "no sync has run in" in result.stdout
    cas_sync("--config", config)
    result = cas_sync("--config", config, "--status")
    assert result.returncode == 0 and "  state     done" in result.stdout
    assert "  files     3 done, 0 left, 0 failed (of 3 to fetch or check)" in result.stdout
    data = json.loads(cas_sync("--config", config, "--status", "--json").stdout)
    assert (data["state"], data["files_done"], data["files_left"], data["bytes_left"]) == ("done", 3, 0, 0)
    assert data["started"] <= data["finished"]


def test_verify_reports_and_repairs(config, upstream, tmp_path):
    cas_sync("--config", config)
    bad = tmp_path / "mirror" / "pkgs" / "noarch" / "helper-1.0-0.conda"
    st = bad.stat()
    bad.write_bytes(b"x" * st.st_size)
    os.utime(bad, ns=(st.st_atime_ns, st.st_mtime_ns))
    result = cas_sync("--config", config, "--verify")
    assert result.returncode == 0, result.stderr
    assert "warning: noarch: helper-1.0-0.conda: bad on disk (sha256 mismatch" in result.stdout
    assert "cas-sync: hashed 3 files on disk: 1 bad" in result.stdout
    assert mirror_problems(tmp_path / "mirror" / "pkgs", upstream.root, SUBDIRS) == []


def test_ctrl_c_stops_cleanly(config, upstream, tmp_path):
    upstream.always("linux-64/big-1.0-0.conda", Fault.slow(50_000))
    process = popen("--config", config, "--json")
    for line in process.stdout:
        event = json.loads(line)
        if event["event"] == "file_progress" and event["fn"] == "big-1.0-0.conda":
            break
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "stopping" in err
    status = read_status(tmp_path / "mirror")
    assert status.state == "cancelled"
    assert mirror_problems(tmp_path / "mirror" / "pkgs", upstream.root, SUBDIRS) == []
    assert not (tmp_path / "mirror" / "pkgs" / "linux-64" / "big-1.0-0.conda").exists()
    upstream.always("linux-64/big-1.0-0.conda", None)
    assert cas_sync("--config", config).returncode == 0  # the lock was released


def test_detach_returns_at_once_and_the_sync_runs_in_its_own_session(config, upstream, tmp_path):
    upstream.always("linux-64/big-1.0-0.conda", Fault.slow(100_000))
    result = cas_sync("--config", config, "--detach")
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("cas-sync: syncing in the background, pid ")
    pid = int(first.rsplit(" ", 1)[1])
    assert f"status log  {tmp_path / 'mirror' / '.cas' / 'sync.jsonl'}" in result.stdout
    try:
        assert os.getsid(pid) == pid  # a session of its own: no SIGHUP when the terminal goes
    except ProcessLookupError:
        pytest.fail("the detached sync ended before it could be looked at")
    locked = cas_sync("--config", config)
    assert locked.returncode == 2 and f"(pid {pid};" in locked.stderr
    assert wait_for(lambda: read_status(tmp_path / "mirror").state != "running", 120)
    assert read_status(tmp_path / "mirror").state == "done"
    assert mirror_problems(tmp_path / "mirror" / "pkgs", upstream.root, SUBDIRS) == []
    assert not list((tmp_path / "mirror" / ".cas").glob("detached-settings*"))  # handed over, then removed


def test_progress_bars_on_a_terminal(config):
    main, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "casconsole.cli.sync", "--config", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
        env={**os.environ, "COLUMNS": "100", "TERM": "xterm"},
    )
    os.close(secondary)
    output = b""
    while True:
        ready, _, _ = select.select([main], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(main)
    assert process.wait(60) == 0
    text = output.decode("utf-8", "replace")
    assert "━" in text  # a bar
    for label in ("all", "linux-64", "noarch"):
        assert label in text
    assert "cas-sync: done in" in text
