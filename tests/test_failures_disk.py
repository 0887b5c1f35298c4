"""The commonest operator failures, run as a user would, end in one line naming the path and the
cause and a documented exit status (docs/operations.md), never a traceback: a mirror the user
cannot write or read (EACCES), a read-only filesystem, a full disk (refused before downloading
with both figures; or filled during the sync), and the mirror stays consistent for the next run."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys

import pytest
from upstream_server import Fault, Upstream, make_channel, mirror_problems, spec

from casconsole.sync.engine import read_status

pytest_plugins = ["disk_fixtures"]

SUBDIRS = ("linux-64", "noarch")


@pytest.fixture
def upstream(tmp_path):
    root = tmp_path / "upstream"
    make_channel(
        root,
        {
            "linux-64": [spec(f"lib{i}", "1.0", "linux-64", kb=400) for i in range(6)],
            "noarch": [spec("helper", "1.0", kb=40)],
        },
    )
    with Upstream(root) as server:
        yield server


def run(*args, prefix=(), cwd=None, env=None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*prefix, sys.executable, "-m", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


def cas_sync(upstream, mirror, *args, **kw) -> subprocess.CompletedProcess[str]:
    flags = ("--remote-url", upstream.url, "--mirror-dir", mirror, "--platform", "linux-64", "--retries", "1")
    return run("casconsole.cli.sync", *flags, *args, **kw)


# ---------------------------------------------------------------- permission denied


def test_a_mirror_the_user_cannot_write(upstream, shared_dir, other_user):
    prefix, env = other_user
    mirror = shared_dir / "mirror"
    mirror.mkdir(mode=0o755)
    if not prefix:
        mirror.chmod(0o555)
    result = cas_sync(upstream, mirror, prefix=prefix, env=env, cwd=shared_dir)
    assert (result.returncode, result.stderr) == (
        4,
        f"cas-sync: error: {mirror}/.cas: Permission denied (taking the mirror's lock)\n",
    )
    assert list(mirror.iterdir()) == []


def test_a_mirror_the_user_cannot_read(upstream, shared_dir, other_user, tmp_path):
    prefix, env = other_user
    mirror = shared_dir / "mirror"
    assert cas_sync(upstream, mirror).returncode == 0  # synced by its owner
    mirror.chmod(0o700 if prefix else 0o000)
    try:
        for args in (("--dry-run",), ("--status",), ()):
            result = cas_sync(upstream, mirror, *args, prefix=prefix, env=env, cwd=shared_dir)
            assert result.returncode == 4, (args, result.stderr)
            assert result.stderr.count("\n") == 1 and "Permission denied" in result.stderr, args
            assert result.stderr.startswith(f"cas-sync: error: {mirror}"), args
    finally:
        mirror.chmod(0o755)


def test_a_settings_file_the_user_cannot_read(shared_dir, other_user):
    prefix, env = other_user
    config = shared_dir / "system.yaml"
    config.write_text("platforms: [linux-64]\n")
    config.chmod(0o600 if prefix else 0o000)
    result = run("casconsole.cli.sync", "--show", prefix=prefix, env=env, cwd=shared_dir)
    assert (result.returncode, result.stderr) == (
        2,
        f"cas-sync: error: {config}: cannot read: Permission denied\n",
    )


# ---------------------------------------------------------------- read-only filesystem


def test_a_read_only_filesystem(upstream, tmpfs, remount):
    disk = tmpfs(64 << 20)
    mirror = disk / "mirror"
    assert cas_sync(upstream, mirror).returncode == 0
    upstream.root.joinpath("linux-64", "lib0-1.0-0.conda").touch()  # something to do next time
    remount(disk, "ro")
    try:
        result = cas_sync(upstream, mirror)
        assert (result.returncode, result.stderr) == (
            4,
            f"cas-sync: error: {mirror}/.cas/sync.lock: Read-only file system (taking the mirror's lock)\n",
        )
        # reading works as before: the plan, the status of the last sync
        assert cas_sync(upstream, mirror, "--dry-run").returncode == 0
        status = cas_sync(upstream, mirror, "--status")
        assert status.returncode == 0 and "  state     done" in status.stdout
    finally:
        remount(disk, "rw")
    assert mirror_problems(mirror / "pkgs", upstream.root, SUBDIRS) == []


# ---------------------------------------------------------------- full disk


def test_a_disk_too_small_for_the_plan_is_refused_before_downloading(upstream, tmpfs):
    disk = tmpfs(8 << 20)
    mirror = disk / "mirror"
    result = cas_sync(upstream, mirror)
    assert result.returncode == 4
    [line] = result.stderr.splitlines()
    assert re.fullmatch(
        rf"cas-sync: error: {mirror}/pkgs: not enough free space: [\d.]+ MB needed \(2.5 MB to download, "
        r"[\d.]+ MB for repodata and a margin\), [\d.]+ MB free",
        line,
    ), line
    assert not list((mirror / "pkgs").glob("*/*.conda"))
    assert read_status(mirror).state == "error"


def test_a_disk_filled_during_the_sync(upstream, tmpfs):
    disk = tmpfs(32 << 20)
    mirror = disk / "mirror"
    for i in range(6):
        upstream.always(f"linux-64/lib{i}-1.0-0.conda", Fault.slow(100_000))
    process = subprocess.Popen(
        [sys.executable, "-m", "casconsole.cli.sync", "--remote-url", upstream.url,
         "--mirror-dir", str(mirror), "--platform", "linux-64", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    for line in process.stdout:
        if json.loads(line)["event"] == "file_progress":
            break
    filler = disk / "filler"
    with open(filler, "wb") as fh:  # another program takes every byte left
        try:
            while True:
                fh.write(b"\0" * (1 << 20))
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    _, err = process.communicate(timeout=120)
    assert "Traceback" not in err
    assert process.returncode == 4, err
    [line] = [line for line in err.splitlines() if "error" in line]
    assert re.fullmatch(
        rf"cas-sync: error: {mirror}/pkgs/linux-64: No space left on device \(writing lib\d-1.0-0.conda\)",
        line,
    )
    assert mirror_problems(mirror / "pkgs", upstream.root, SUBDIRS) == []

    filler.unlink()  # the space is back: the next run completes the mirror
    for i in range(6):
        upstream.always(f"linux-64/lib{i}-1.0-0.conda", None)
    result = cas_sync(upstream, mirror)
    assert result.returncode == 0, result.stderr
    assert mirror_problems(mirror / "pkgs", upstream.root, SUBDIRS) == []
    assert len(list((mirror / "pkgs" / "linux-64").glob("*.conda"))) == 6


def test_an_index_the_disk_refuses(tmpfs, remount):
    from casconsole.conda.archive import PackageSpec, build_package

    disk = tmpfs(16 << 20)
    channel = disk / "internal-pkgs"
    build_package(channel / "linux-64", PackageSpec("tool", "1.0", subdir="linux-64"), ".conda")
    assert run("casconsole.cli.index", channel).returncode == 0
    build_package(channel / "linux-64", PackageSpec("tool", "1.1", subdir="linux-64"), ".conda")
    remount(disk, "ro")
    try:
        result = run("casconsole.cli.index", channel)
    finally:
        remount(disk, "rw")
    assert result.returncode in (2, 4)
    assert result.stderr.count("\n") == 1 and "Read-only file system" in result.stderr
    assert result.stderr.startswith(f"cas-index: {channel}")
