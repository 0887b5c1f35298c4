"""`cas-sync --dry-run` in two processes (sync/splitplan.py), as a user runs it: the report is the
one-process report byte for byte, an error on either side is reported as one process reports
it, and the child never outlives the command (Ctrl-C, a killed parent, a failed half)."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from processes import children, wait_for
from pypi_index import SimpleIndex, tiny_projects
from upstream_server import Fault, Upstream

from casconsole.cli import sync_pypi
from casconsole.cli.common import settings_from_args
from casconsole.cli.sync import build_parser, print_plan
from casconsole.procutil import pid_alive
from casconsole.selection.planjson import write_json
from casconsole.sync.dryrun import make_plan

# cas-sync as a program, with os.fork counted in a file: whether the plan was split
COUNTING = """
import os, sys
fork = os.fork
def counted():
    pid = fork()
    if pid:
        with open(os.environ["FORKS"], "a") as f:
            f.write("fork\\n")
    return pid
os.fork = counted
sys.argv = ["cas-sync", *sys.argv[1:]]
from casconsole.cli.sync import main
sys.exit(main())
"""


def cas_sync(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, int]:
    """Run cas-sync as a program: (the result, how many times it forked)."""
    forks = tmp_path / "forks"
    forks.unlink(missing_ok=True)
    result = subprocess.run(
        [sys.executable, "-c", COUNTING, *args], capture_output=True, env={**os.environ, "FORKS": str(forks)}
    )
    return result, len(forks.read_text().split()) if forks.exists() else 0


def one_process(config: Path) -> tuple[bytes, str]:
    """The JSON and the text the same settings give, planned in this process (the pypi
    section's plan after the channel's, when the settings have one)."""
    settings = settings_from_args(build_parser().parse_args(["--config", str(config)]))
    plan, pypi = make_plan(settings), sync_pypi.make_plan(settings, False)
    as_json, text = io.BytesIO(), io.StringIO()
    write_json(plan, as_json, {"pypi": pypi.to_json()} if pypi is not None else None)
    print_plan(plan, text)
    if pypi is not None:
        sync_pypi.print_plan(pypi, text, blank=True)
    return as_json.getvalue(), text.getvalue()


CASES = {
    # entries unmatched on both sides, matched on one side only (numpy: platforms; flask: noarch)
    "two platforms, every filter": """platforms: [linux-64, osx-arm64]
license_blacklist: GPL
blacklist: [numpy, flask, nosuchname]
whitelist: [readline, alsonothing]
""",
    "newest versions": "platforms: [linux-64]\nnewest_versions: 1\nlicense_blacklist: [GPL, LGPL]\n",
    "a platform upstream lacks": "platforms: [linux-64, linux-ppc64le]\nblacklist: [openssl]\n",
    "prune held back in both halves": "platforms: [win-64]\nblacklist: ['*']\nmax_prune: 0.1\n",
    "a whitelist closure (one process)": "platforms: [linux-64]\nwhitelist: [flask]\nwhitelist_closure: on\n",
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_split_report_is_the_one_process_report(demo_url, tmp_path, case):
    mirror = tmp_path / "mirror"
    for subdir in ("win-64", "noarch"):  # files on disk that leave the plan: prune warnings
        (mirror / "pkgs" / subdir).mkdir(parents=True)
        (mirror / "pkgs" / subdir / "gone-1.0-0.conda").write_bytes(b"x")
    config = tmp_path / "settings.yaml"
    config.write_text(f"remote_url: {demo_url}\nmirror_dir: {mirror}\n" + CASES[case])
    want_json, want_text = one_process(config)
    (got_json, forks), (got_text, _) = (
        cas_sync(tmp_path, "--dry-run", *a, "--config", str(config)) for a in (["--json"], [])
    )
    assert got_json.returncode == got_text.returncode == 0, got_json.stderr + got_text.stderr
    assert forks == (0 if "closure" in case else 1)
    assert got_json.stdout == want_json
    assert got_text.stdout.decode() == want_text
    if "prune" in case:
        assert want_text.count("more than max_prune") >= 2 and b"noarch: 1 of its 1 files" in want_json


def test_the_split_report_of_a_real_channel(realdata, tmp_path):
    channel = realdata / "conda-subchannel-demo"
    config = tmp_path / "settings.yaml"
    config.write_text(
        f"remote_url: {channel}\nmirror_dir: {tmp_path / 'm'}\nplatforms: [linux-64, osx-arm64, win-64]\n"
        "license_blacklist: GPL\n"
    )
    want_json, want_text = one_process(config)
    got, forks = cas_sync(tmp_path, "--dry-run", "--json", "--config", str(config))
    assert forks == 1 and got.returncode == 0 and got.stdout == want_json
    assert b'{"cause":"license_blacklist: GPL"' in got.stdout  # causes found across both halves
    got, _ = cas_sync(tmp_path, "--dry-run", "--config", str(config))
    assert got.stdout.decode() == want_text


def test_the_pypi_section_follows_the_split_channel_plan(demo_url, tmp_path):
    with SimpleIndex(tiny_projects(tmp_path / "dist")) as index:
        config = tmp_path / "settings.yaml"
        config.write_text(
            f"remote_url: {demo_url}\nmirror_dir: {tmp_path / 'm'}\nplatforms: [linux-64]\n"
            f"license_blacklist: GPL\npypi:\n  index_url: {index.url}\n  projects: [app]\n  closure: true\n"
        )
        want_json, want_text = one_process(config)
        (got_json, forks), (got_text, _) = (
            cas_sync(tmp_path, "--dry-run", *a, "--config", str(config)) for a in (["--json"], [])
        )
    assert forks == 1 and got_json.returncode == got_text.returncode == 0, got_json.stderr
    assert got_json.stdout == want_json and b'"pypi": {' in want_json
    assert got_text.stdout.decode() == want_text and "\npypi\n" in want_text


@pytest.fixture
def upstream(demo_channel, tmp_path):
    """The demo channel's repodata (plain JSON only) over HTTP with faults on request."""
    root = tmp_path / "upstream"
    for subdir in ("linux-64", "noarch"):
        (root / "ch" / subdir).mkdir(parents=True)
        shutil.copy(demo_channel / subdir / "repodata.json", root / "ch" / subdir / "repodata.json")
    with Upstream(root) as server:
        yield server, root / "ch"


def config_for(url: str, tmp_path: Path) -> Path:
    config = tmp_path / "settings.yaml"
    config.write_text(f"remote_url: {url}/ch\nmirror_dir: {tmp_path / 'm'}\nplatforms: [linux-64]\n")
    return config


@pytest.mark.parametrize("broken", ["noarch", "linux-64"])
def test_an_error_in_either_half_is_reported_as_one_process_reports_it(upstream, tmp_path, broken):
    server, channel = upstream
    (channel / broken / "repodata.json").write_text('{"packages": {"a-1-0.tar.bz2": ')
    config = config_for(server.url, tmp_path)
    got, forks = cas_sync(tmp_path, "--dry-run", "--json", "--config", str(config))
    assert forks == 1 and got.returncode == 1 and got.stdout == b""
    where = f"{server.url}/ch/{broken}/repodata.json"
    assert got.stderr.decode() == f"cas-sync: error: {where}: not valid JSON (Input data was truncated)\n"


def start_stalled(upstream, tmp_path, seconds: float = 30) -> tuple[subprocess.Popen, int]:
    """A dry run whose platforms' half waits on a download stalled for `seconds` (then dropped,
    and asked again) while the noarch half has planned and waits for it: (the process, its child)."""
    server, _ = upstream
    server.inject("ch/linux-64/repodata.json", Fault.stall(seconds))
    config = config_for(server.url, tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "casconsole.cli.sync", "--dry-run", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    started = wait_for(
        lambda: proc.poll() is not None or (server.seen("ch/noarch/repodata.json") and children(proc.pid)), 20
    )
    assert started and proc.poll() is None, proc.communicate()
    return proc, started[0]


def gone_within(pid: int, seconds: float) -> bool:
    return wait_for(lambda: not pid_alive(pid), seconds, interval=0.02)


def test_ctrl_c_ends_both_halves(upstream, tmp_path):
    proc, child = start_stalled(upstream, tmp_path)
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal sends to the foreground group
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130 and err.decode() == "cas-sync: interrupted\n" and out == b""
    assert gone_within(child, 5)


def test_the_child_ends_when_its_parent_is_killed(upstream, tmp_path):
    proc, child = start_stalled(upstream, tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=20)
    assert gone_within(child, 10), "the noarch half outlived its parent"


def test_a_child_that_dies_is_reported_not_waited_for(upstream, tmp_path):
    proc, child = start_stalled(upstream, tmp_path, seconds=1)
    os.kill(child, signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and out == b""
    assert err.decode() == "cas-sync: error: the dry run's noarch process ended before it answered\n"
