"""What running as a service asks of the commands, run as cron or systemd runs them: the installed
console scripts, `--version` on each, `--quiet` (nothing on success, the errors on failure), and
`cas-sync --status` whose exit status a monitor reads."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from upstream_server import Fault, Upstream, make_channel, mirror_problems, spec

from casconsole.conda.archive import PackageSpec, build_package

BIN = Path(sys.executable).parent  # the console scripts installed beside this interpreter
COMMANDS = ("casconsole", "cas-sync", "cas-index", "cas-server", "cas-installer")


def run(command: str, *args, **kw) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(BIN / command), *map(str, args)], capture_output=True, text=True, timeout=120, **kw
    )
    assert "Traceback" not in result.stdout + result.stderr
    return result


@pytest.mark.parametrize("command", COMMANDS)
def test_version_on_every_command(command):
    result = run(command, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"casconsole {importlib.metadata.version('casconsole')}\n"
    assert result.stderr == ""


# ---------------------------------------------------------------- cas-sync --quiet


@pytest.fixture
def upstream(tmp_path):
    root = tmp_path / "upstream"
    make_channel(root, {"linux-64": [spec("tool", "1.0", "linux-64")], "noarch": [spec("helper", "1.0")]})
    with Upstream(root) as server:
        yield server


@pytest.fixture
def config(tmp_path, upstream):
    path = tmp_path / "cas.yaml"
    path.write_text(
        f"remote_url: {upstream.url}\nmirror_dir: {tmp_path / 'mirror'}\nplatforms: [linux-64]\nretries: 0\n"
    )
    return path


def test_quiet_sync_says_nothing_when_all_went_well(config, upstream, tmp_path):
    result = run("cas-sync", "--config", config, "--quiet")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert mirror_problems(tmp_path / "mirror" / "pkgs", upstream.root, ("linux-64", "noarch")) == []
    status = run("cas-sync", "--config", config, "--status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["state"] == "done"


def test_quiet_sync_reports_a_failure_on_stderr_only(config, upstream, tmp_path):
    upstream.always("noarch/helper-1.0-0.conda", Fault.status(500))
    result = run("cas-sync", "--config", config, "--quiet")
    assert result.returncode == 1 and result.stdout == ""
    assert "cas-sync: failed: noarch/helper-1.0-0.conda: HTTP 500" in result.stderr
    assert "cas-sync: finished with failures" in result.stderr
    assert "linux-64: done" not in result.stderr  # progress is not an error
    # the monitor's view of it
    status = run("cas-sync", "--config", config, "--status", "--json")
    assert status.returncode == 1 and json.loads(status.stdout)["state"] == "failed"
    upstream.always("noarch/helper-1.0-0.conda", None)
    assert run("cas-sync", "--config", config, "--quiet").returncode == 0
    assert run("cas-sync", "--config", config, "--status").returncode == 0


def test_quiet_sync_that_cannot_run_says_why(tmp_path):
    result = run("cas-sync", "--quiet", "--remote-url", "http://127.0.0.1:9", "--mirror-dir", tmp_path / "m",
                 "--platform", "linux-64")  # fmt: skip
    assert result.returncode == 1 and result.stdout == ""
    assert "cannot connect to 127.0.0.1:9" in result.stderr
    status = run("cas-sync", "--mirror-dir", tmp_path / "m", "--status")
    assert status.returncode == 1 and "  state     error" in status.stdout


def test_quiet_goes_with_a_sync_only(config):
    for extra in ("--show", "--dry-run", "--status", "--json"):
        result = run("cas-sync", "--config", config, "--quiet", extra)
        assert result.returncode == 2, extra
        assert "--quiet goes with a sync" in result.stderr


def test_quiet_detached_sync_prints_nothing_and_its_log_only_errors(config, upstream, tmp_path):
    result = run("cas-sync", "--config", config, "--quiet", "--detach")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = run("cas-sync", "--config", config, "--status", "--json")
        if json.loads(status.stdout)["state"] != "running":
            break
        time.sleep(0.2)
    assert json.loads(status.stdout)["state"] == "done" and status.returncode == 0
    assert (tmp_path / "mirror" / ".cas" / "sync-detached.out").read_text() == ""


# ---------------------------------------------------------------- cas-index --quiet


def test_quiet_index_says_nothing_but_what_fails_a_strict_run(tmp_path):
    channel = tmp_path / "internal-pkgs"
    build_package(channel / "noarch", PackageSpec("tool", "1.0"), ".conda")
    result = run("cas-index", "--quiet", channel)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert "tool-1.0-0.conda" in (channel / "noarch" / "repodata.json").read_text()

    (channel / "noarch" / "broken-1.0-0.conda").write_bytes(b"\0" * 100)
    relaxed = run("cas-index", "--quiet", channel)  # a skipped package is a warning: not shown
    assert (relaxed.returncode, relaxed.stdout, relaxed.stderr) == (0, "", "")
    strict = run("cas-index", "--quiet", "--strict", channel)
    assert strict.returncode == 1 and strict.stdout == ""
    assert "warning: noarch/broken-1.0-0.conda: not a readable conda package" in strict.stderr
    assert "1 problem under --strict; no output was replaced" in strict.stderr

    missing = run("cas-index", "--quiet", tmp_path / "nope")
    assert missing.returncode == 2 and "no such folder" in missing.stderr
    assert run("cas-index", "--quiet", "--status", channel).returncode == 2
