"""A real `cas-sync --import` killed with SIGKILL at chosen moments (and at moments chosen by no
one), then run again until it completes.

After every kill: every repodata names only files that are present with the record's bytes (a
file rebuilt under the same name may be its new bytes until the new repodata is in); no file
under a final name is anything but the old or the new version. The run that completes leaves
the offline mirror equal to the connected one, with no journal and no staging left.

The moments are picked from the import's own progress (`--json`, one event a line). So that
the import cannot run far past the event the test waits for, its stdout is a pipe of one page:
once the test stops reading, the import blocks on its next few lines until it is killed.
"""

from __future__ import annotations

import fcntl
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bundle_support import cas_ok, index, served_problems, sha256_of, tree
from test_server_support import server_env
from upstream_server import spec

from casconsole.bundle.importer import STAGING, journal_path
from casconsole.conda.archive import build_package
from casconsole.layout import state_dir

F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, named in the module from Python 3.10 on Linux only
CHANNEL = "team"


# v2 drops this many: their deletions' events must outgrow the one-page pipe after the test's
# stop, or a fast import finishes before the kill lands
DROPPED = {f"pkg{i:03d}" for i in range(30, 90)}


def build(mirror: Path, version: int) -> None:
    """A channel of 90 small packages (v1); v2 adds 80, rebuilds 5 under the same names, drops 60."""
    names = [f"pkg{i:03d}" for i in range(90)]
    if version == 2:
        names = [n for n in names if n not in DROPPED]
        names += [f"new{i:03d}" for i in range(80)]
    for name in names:
        subdir = "noarch" if name.endswith(("0", "5")) else "linux-64"
        extra = {"share/rebuilt": b"v2\n"} if version == 2 and name in REBUILT else {}
        build_package(mirror / CHANNEL / subdir, spec(name, "1.0", subdir, kb=16, files=extra), ".conda")
    index(mirror / CHANNEL)


REBUILT = {f"pkg{i:03d}" for i in range(1, 6)}


@pytest.fixture(scope="module")
def update(tmp_path_factory):
    """(the offline mirror before, the connected one after, the bundle between them)."""
    root = tmp_path_factory.mktemp("kill")
    offline, connected = root / "offline", root / "connected"
    build(offline, 1)
    cas_ok("--mirror-dir", str(offline), "--manifest", str(root / "offline.json"))
    shutil.copytree(offline, connected, symlinks=True)
    for gone in sorted((connected / CHANNEL).glob("*/pkg*")):
        if gone.name.split("-")[0] in DROPPED:
            gone.unlink()
    build(connected, 2)
    stick = root / "stick"
    cas_ok("--mirror-dir", str(connected), "--export", str(stick), "--since", str(root / "offline.json"),
           "--volume-size", "1M")  # fmt: skip
    assert len(list(stick.glob("bundle.*"))) >= 2
    versions: dict[str, set[str]] = {}
    for mirror in (offline, connected):
        for path, (_, sha) in tree(mirror).items():
            versions.setdefault(path, set()).add(sha)
    return offline, connected, stick, versions


def start(mirror: Path, stick: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "casconsole.cli.sync",
            "--mirror-dir",
            str(mirror),
            "--import",
            str(stick),
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=server_env(),
    )
    fcntl.fcntl(process.stdout.fileno(), F_SETPIPE_SZ, 4096)
    return process


def kill_when(process: subprocess.Popen, stop) -> list[dict]:
    """Read events until `stop(events)` says so, then SIGKILL the import (blocked on its pipe by now)."""
    events = []
    for line in process.stdout:
        events.append(json.loads(line))
        if stop(events):
            break
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    process.stdout.close()
    process.stderr.close()
    return events


def files_done(stage: str, n: int):
    return lambda events: sum(1 for e in events if e["event"] == "file" and e["stage"] == stage) >= n


def stage_begun(stage: str):
    return lambda events: events[-1]["event"] == "stage" and events[-1]["stage"] == stage


def check_after_kill(mirror: Path, versions: dict[str, set[str]]) -> None:
    changing = frozenset(f"{CHANNEL}/linux-64/{n}-1.0-0.conda" for n in REBUILT)
    changing |= frozenset(f"{CHANNEL}/noarch/{n}-1.0-0.conda" for n in REBUILT)
    assert served_problems(mirror, changing) == []
    for path in tree(mirror):
        assert sha256_of(mirror / path) in versions[path], f"{path}: neither the old nor the new bytes"


def complete(mirror: Path, stick: Path, connected: Path) -> None:
    done = cas_ok("--mirror-dir", str(mirror), "--import", str(stick))
    assert "matches its source file for file" in done.stdout, done.stdout
    assert tree(mirror) == tree(connected)
    assert not journal_path(mirror).exists()
    assert not (state_dir(mirror) / STAGING).exists()


MOMENTS = [
    ("while checking the bundle", files_done("checking", 20), "before"),
    ("after a few files were placed", files_done("placing", 3), "placing"),
    ("after most files were placed", files_done("placing", 40), "placing"),
    ("when the repodata is written", files_done("index", 1), "applied"),
    ("while deleting", files_done("deleting", 2), "applied"),
]


@pytest.mark.parametrize("moment, stop, phase", MOMENTS, ids=[m[0] for m in MOMENTS])
def test_killed_import_completes_when_run_again(update, tmp_path, moment, stop, phase):
    offline, connected, stick, versions = update
    mirror = shutil.copytree(offline, tmp_path / "mirror", symlinks=True)
    new = [p for p in tree(connected) if p not in tree(offline)]

    events = kill_when(start(mirror, stick), stop)
    assert stop(events), f"the import ended before {moment}"
    check_after_kill(mirror, versions)
    present = sum(1 for p in new if (mirror / p).exists())
    if phase == "before":  # nothing changed yet: the bundle is checked whole first
        assert tree(mirror) == tree(offline) and not journal_path(mirror).exists()
    elif phase == "placing":  # cut off in the middle: some new files in place, not all
        assert journal_path(mirror).exists() and 0 < present < len(new)
    else:
        assert journal_path(mirror).exists() and present == len(new)

    # killed again, at a moment chosen by no one, then run to the end
    process = start(mirror, stick)
    time.sleep(random.Random(moment).uniform(0.05, 0.6))
    kill_when(process, lambda events: True)
    check_after_kill(mirror, versions)
    complete(mirror, stick, connected)


def test_killed_import_is_never_mixed_with_another_bundle(update, tmp_path):
    """A journal names the bundle being applied: another bundle is refused until it completes."""
    offline, connected, stick, _ = update
    mirror = shutil.copytree(offline, tmp_path / "mirror", symlinks=True)
    kill_when(start(mirror, stick), files_done("placing", 3))
    other = tmp_path / "other"
    cas_ok("--mirror-dir", str(offline), "--export", str(other))  # a whole-mirror bundle of v1
    done = subprocess.run(
        [sys.executable, "-m", "casconsole.cli.sync", "--mirror-dir", str(mirror), "--import", str(other)],
        capture_output=True, text=True, env=server_env(), timeout=120,
    )  # fmt: skip
    assert done.returncode == 1 and "an import of another bundle" in done.stderr and str(stick) in done.stderr
    complete(mirror, stick, connected)
