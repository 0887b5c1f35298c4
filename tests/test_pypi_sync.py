"""The pypi section of a sync, run as a user runs cas-sync: a file with wrong bytes fails alone
and is never listed, an interrupted download resumes, a re-sync writes nothing, projects that
leave the settings are pruned (behind the prune guard), the status log and --status carry the
section, and one cas-sync runs the channel and the section together."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pypi_index import SimpleIndex, tiny_projects
from test_server_support import server_env

pytestmark = pytest.mark.slow


def cas_sync(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "casconsole.cli.sync", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=server_env(CAS_MIRROR_RETRIES="1"),
        timeout=300,
    )


def configure(
    tmp_path: Path, index: SimpleIndex, projects: list[str], top: str = "", **extra: object
) -> Path:
    config = tmp_path / "cas.yaml"
    lines = [f"mirror_dir: {tmp_path / 'mirror'}", top, "pypi:", f"  index_url: {index.url}"]
    lines += [f"  projects: {json.dumps(projects)}"] + [f"  {k}: {json.dumps(v)}" for k, v in extra.items()]
    config.write_text("\n".join(lines) + "\n")
    return config


def events(done: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.fixture
def index(tmp_path):
    with SimpleIndex(tiny_projects(tmp_path / "dist")) as served:
        yield served


def page_files(mirror: Path, project: str) -> list[str]:
    page = json.loads((mirror / "pypi/simple" / project / "index.json").read_text())
    return [f["filename"] for f in page["files"]]


def test_wrong_bytes_fail_one_file_which_no_page_names_then_a_resync_repairs(tmp_path, index):
    config = configure(tmp_path, index, ["lib"])
    index.corrupt.add("lib-1.1-py3-none-any.whl")
    done = cas_sync(config, "--pypi-only", "--json")
    assert done.returncode == 1
    failed = [e for e in events(done) if e["event"] == "file_failed"]
    assert [(e["subdir"], e["fn"]) for e in failed] == [("pypi", "lib-1.1-py3-none-any.whl")]
    assert "sha256 mismatch" in failed[0]["reason"]
    mirror = tmp_path / "mirror"
    assert page_files(mirror, "lib") == ["lib-1.0-py3-none-any.whl"]
    assert not (mirror / "pypi/files/lib/lib-1.1-py3-none-any.whl").exists()
    index.corrupt.clear()
    done = cas_sync(config, "--pypi-only", "--json")
    assert done.returncode == 0, done.stderr
    assert page_files(mirror, "lib") == ["lib-1.0-py3-none-any.whl", "lib-1.1-py3-none-any.whl"]


def test_an_interrupted_download_resumes_and_a_resync_writes_nothing(tmp_path, index):
    config = configure(tmp_path, index, ["lib >=1.1"])
    mirror = tmp_path / "mirror"
    whl = next(f.path for f in index.files if f.path.name == "lib-1.1-py3-none-any.whl")
    folder = mirror / "pypi/files/lib"
    folder.mkdir(parents=True)
    (folder / f".{whl.name}.part").write_bytes(whl.read_bytes()[:300])  # left by a killed sync
    done = cas_sync(config, "--pypi-only", "--json")
    assert done.returncode == 0, done.stderr
    finished = [e for e in events(done) if e["event"] == "file_done"]
    assert [(e["fn"], e["resumed"], e["fetched"]) for e in finished] == [
        (whl.name, True, whl.stat().st_size - 300)
    ]
    assert index.ranges == [f"/packages/{whl.name} bytes=300-"]
    assert (folder / whl.name).read_bytes() == whl.read_bytes()
    assert not list(folder.glob(".*.part"))

    pages = {p: p.stat().st_mtime_ns for p in (mirror / "pypi/simple").rglob("index.*")}
    done = cas_sync(config, "--pypi-only", "--json")
    assert done.returncode == 0
    planned = next(e for e in events(done) if e["event"] == "planned")
    assert (planned["present"], planned["files"], planned["check"]) == (1, 0, 0)
    subdir_done = next(e for e in events(done) if e["event"] == "subdir_done")
    assert subdir_done["repodata_written"] is False
    assert {p: p.stat().st_mtime_ns for p in pages} == pages


def test_projects_that_leave_the_settings_are_pruned_behind_the_guard(tmp_path, index):
    config = configure(tmp_path, index, ["lib", "helper", "app"], top="max_prune: 90%")
    assert cas_sync(config, "--pypi-only").returncode == 0
    mirror = tmp_path / "mirror"
    assert (mirror / "pypi/simple/helper/index.html").is_file()
    configure(tmp_path, index, ["lib"])  # max_prune back to 10%: 3 of 5 files would go
    done = cas_sync(config, "--pypi-only")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "prune withheld" in done.stdout
    assert (mirror / "pypi/files/helper/helper-0.5.tar.gz").exists()
    assert (mirror / "pypi/simple/helper/index.html").is_file()  # the pages stay as they were
    done = cas_sync(config, "--pypi-only", "--force-prune")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (mirror / "pypi/files/helper").exists() and not (mirror / "pypi/simple/helper").exists()
    assert not (mirror / "pypi/files/app").exists()
    assert sorted(p.name for p in (mirror / "pypi/files/lib").iterdir()) == [
        "lib-1.0-py3-none-any.whl",
        "lib-1.0-py3-none-any.whl.metadata",
        "lib-1.1-py3-none-any.whl",
        "lib-1.1-py3-none-any.whl.metadata",
    ]
    status = subprocess.run(
        [sys.executable, "-m", "casconsole.cli.sync", "--config", str(config), "--status"],
        capture_output=True,
        text=True,
        env=server_env(),
    )
    assert (
        status.returncode == 0 and "pypi" in status.stdout and "files, 0 failed, 3 removed" in status.stdout
    )


def test_pypi_only_needs_a_section(tmp_path):
    config = tmp_path / "cas.yaml"
    config.write_text(f"mirror_dir: {tmp_path}\n")
    for args in (["--pypi-only"], ["--dry-run", "--pypi-only"]):
        done = cas_sync(config, *args)
        assert done.returncode == 2
        assert "--pypi-only: the pypi section names no projects" in done.stderr


def test_an_unreachable_index_is_one_line_and_exit_1(tmp_path):
    config = tmp_path / "cas.yaml"
    config.write_text(
        f"mirror_dir: {tmp_path}\npypi:\n  index_url: http://127.0.0.1:9/simple/\n  projects: [x]\n"
    )
    done = cas_sync(config, "--pypi-only", "--no-progress")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        "cas-sync: error: http://127.0.0.1:9/simple/x/: cannot connect to 127.0.0.1:9 "
        "(ConnectionRefusedError: [Errno 111] Connection refused) (after 2 attempts)"
    )


def test_one_sync_carries_the_channel_and_the_pypi_section(tmp_path, index, demo_url):
    config = configure(tmp_path, index, ["app"], closure=True)
    text = config.read_text().replace("pypi:", f"remote_url: {demo_url}\nplatforms: [linux-64]\npypi:", 1)
    config.write_text(text)
    done = cas_sync(config, "--json")
    assert done.returncode == 0, done.stderr
    seen = events(done)
    assert seen[0]["event"] == "started" and seen[0]["subdirs"] == ["linux-64", "noarch", "pypi"]
    finished = [e["subdir"] for e in seen if e["event"] == "subdir_done"]
    assert finished == ["linux-64", "noarch", "pypi"] or sorted(finished) == ["linux-64", "noarch", "pypi"]
    log = (tmp_path / "mirror/.cas/sync.jsonl").read_text().splitlines()
    assert sum(1 for line in log if '"event":"started"' in line) == 1
    assert (tmp_path / "mirror/pkgs/linux-64/repodata.json").is_file()
    assert (tmp_path / "mirror/pypi/simple/lib/index.html").is_file()
