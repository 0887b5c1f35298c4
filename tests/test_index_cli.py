"""cas-index as a user runs it: a subprocess, its exit status and what it prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from casconsole.conda.archive import PackageSpec, build_package


def cas_index(*args: str | Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "casconsole.cli.index", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in result.stderr + result.stdout
    return result


def make_channel(root: Path, name: str = "internal-pkgs") -> Path:
    channel = root / name
    for subdir in ("linux-64", "noarch"):
        build_package(channel / subdir, PackageSpec("tool", "1.0", subdir=subdir), ".conda")
        build_package(channel / subdir, PackageSpec("tool", "1.1", subdir=subdir), ".tar.bz2")
    return channel


def test_index_then_up_to_date(tmp_path: Path) -> None:
    channel = make_channel(tmp_path)

    first = cas_index(channel)

    assert first.returncode == 0, first.stderr
    assert "reading 4 files" in first.stdout
    assert "linux-64: 2 packages (2 read), written" in first.stdout
    assert json.loads((channel / "linux-64" / "repodata.json").read_text())["packages"]
    assert (channel / "channeldata.json").is_file()

    second = cas_index(channel)
    assert second.returncode == 0
    assert "up to date, 4 packages (0 read, 4 cached)" in second.stdout


def test_several_channels_in_one_run(tmp_path: Path) -> None:
    a, b = make_channel(tmp_path, "a"), make_channel(tmp_path, "b")
    result = cas_index(a, b)
    assert result.returncode == 0
    assert (a / "noarch" / "repodata.json").is_file() and (b / "noarch" / "repodata.json").is_file()


def test_bad_package_is_a_warning_and_strict_makes_it_exit_1(tmp_path: Path) -> None:
    channel = make_channel(tmp_path)
    (channel / "linux-64" / "broken-1.0-0.conda").write_bytes(b"\0" * 100)

    relaxed = cas_index(channel)
    assert relaxed.returncode == 0
    assert "warning: linux-64/broken-1.0-0.conda: not a readable conda package" in relaxed.stderr
    assert "broken" not in (channel / "linux-64" / "repodata.json").read_text()

    strict = cas_index("--strict", channel)
    assert strict.returncode == 1
    assert "1 problem under --strict; no output was replaced" in strict.stderr


def test_bad_input_exits_2_with_a_message(tmp_path: Path) -> None:
    channel = make_channel(tmp_path)
    (tmp_path / "file.txt").write_text("x")
    for path, message in (
        (tmp_path / "nope", "no such folder"),
        (tmp_path / "file.txt", "not a folder"),
    ):
        for args in ((path,), ("--status", path)):
            result = cas_index(*args)
            assert result.returncode == 2, args
            assert f"cas-index: {path}: {message}" in result.stderr
    assert cas_index().returncode == 2  # no DIR: argparse usage
    assert cas_index("--json", channel).returncode == 2


def test_status_text_and_json(tmp_path: Path) -> None:
    channel = make_channel(tmp_path)

    before = cas_index("--status", channel)
    assert before.returncode == 0
    assert f"{channel}: stale" in before.stdout
    assert "2 new; never indexed" in before.stdout
    assert not (channel / "linux-64" / "repodata.json").exists()

    cas_index(channel)
    build_package(channel / "linux-64", PackageSpec("tool", "1.2", subdir="linux-64"), ".conda")
    after = cas_index("--status", "--json", channel)
    assert after.returncode == 0
    [status] = json.loads(after.stdout)
    linux = {s["subdir"]: s for s in status["subdirs"]}["linux-64"]
    assert (status["fresh"], linux["fresh"], linux["new"], linux["packages"]) == (False, False, 1, 2)
    assert linux["indexed_at"].endswith("Z")


def test_a_reader_that_goes_away_is_no_traceback(tmp_path: Path) -> None:
    channel = make_channel(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "casconsole.cli.index", "--status", "--json", str(channel)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # like `| head` exiting before cas-index writes
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in stderr
