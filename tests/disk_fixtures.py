"""Disks that fail as operators' disks do, for the tests (a pytest plugin:
`pytest_plugins = ["disk_fixtures"]`).

- `tmpfs(size)` mounts a tmpfs of `size` bytes (a full disk at will); `remount(path, "ro")` makes
  it read-only. Mounting needs root: without it the test is skipped, saying so.
- `other_user` is (the command prefix, the environment) that runs a command as a user who is
  not the owner of the test's files (`setpriv` to nobody when the tests run as root; nothing
  otherwise, where file modes already apply), and `shared_dir` a folder that user can reach.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from reach import reachable


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"{what} needs root (mount); the tests run as uid {os.geteuid()}")


@pytest.fixture
def tmpfs(tmp_path):
    """`tmpfs(size, name="disk")`: a tmpfs of `size` bytes mounted under tmp_path; unmounted after."""
    mounted: list[Path] = []

    def mount(size: int, name: str = "disk") -> Path:
        _need_root("a small filesystem")
        path = tmp_path / name
        path.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def remount():
    """`remount(path, "ro" | "rw")`: remount the tmpfs at `path` read-only or read-write."""

    def run(path: Path, mode: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True, capture_output=True)

    return run


def as_other_user() -> list[str]:
    """The prefix that runs a command without the rights of the tests' files' owner."""
    if os.geteuid() != 0:
        return []  # file modes apply to this user already
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot drop to another user for a permission test")
    # under a folder closed to others (a checkout in a mktemp folder), the checkout is made reachable
    return [*reachable(), "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


@pytest.fixture
def shared_dir():
    """A folder another user (see as_other_user) can reach; tmp_path's parents are private to root."""
    path = Path(tempfile.mkdtemp(prefix="cas-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def other_user(shared_dir):
    """(command prefix, environment) of a user who owns none of the test's files; its settings
    files are looked for in `shared_dir`."""
    env = {
        "CAS_MIRROR_USER_CONFIG": str(shared_dir / "user.yaml"),
        "CAS_MIRROR_SYSTEM_CONFIG": str(shared_dir / "system.yaml"),
    }
    return as_other_user(), env
