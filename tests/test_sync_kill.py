"""A real `cas-sync` process killed with SIGKILL at many moments, then run again to completion.

After every kill: no file under a final name differs from upstream, every repodata names only
present and verified files, and the status log says the sync was interrupted. The run after a
kill in the middle of a file resumes it with a Range request.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import children, wait_for
from upstream_server import Fault, Upstream, make_channel, mirror_problems, spec

from casconsole.sync.engine import read_status

SUBDIRS = ("linux-64", "noarch")


@pytest.fixture
def slow_upstream(tmp_path):
    root = tmp_path / "upstream"
    make_channel(
        root,
        {
            "linux-64": [spec(f"lib{i}", "1.0", "linux-64", kb=400) for i in range(6)],
            "noarch": [spec(f"py{i}", "1.0", kb=60) for i in range(4)],
        },
    )
    with Upstream(root) as server:
        for subdir in SUBDIRS:
            for path in (root / subdir).iterdir():
                if path.name.endswith(".conda"):
                    server.always(f"{subdir}/{path.name}", Fault.slow(200_000))
        yield server


def start(config, *args):
    return subprocess.Popen(
        [sys.executable, "-m", "casconsole.cli.sync", "--config", str(config), "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def gone(pids: list[int], seconds: float = 60) -> bool:
    return wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), seconds)


def kill_after(process, stop) -> tuple[list[dict], list[int]]:
    """Read events until `stop(event)` says so (or the process ends), then SIGKILL it.

    Its download workers, left without a parent, stop by themselves.
    """
    events = []
    for line in process.stdout:
        events.append(json.loads(line))
        if stop(events[-1]):
            break
    workers = children(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    process.stdout.close()
    process.stderr.close()
    assert gone(workers), "download workers outlived their killed sync"
    return events, workers


def test_sigkill_at_any_moment_then_rerun_completes(slow_upstream, tmp_path):
    mirror = tmp_path / "mirror"
    config = tmp_path / "cas.yaml"
    config.write_text(f"remote_url: {slow_upstream.url}\nmirror_dir: {mirror}\nplatforms: [linux-64]\n")
    channel = mirror / "pkgs"

    def counter(kind, n):
        seen = []

        def stop(event):
            if event["event"] == kind:
                seen.append(event)
            return len(seen) >= n

        return stop

    # at moments chosen by no one
    rng = random.Random(3)
    for _ in range(4):
        process = start(config)
        time.sleep(rng.uniform(0.05, 0.8))
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
        assert mirror_problems(channel, slow_upstream.root, SUBDIRS) == []
    # and at the moments that matter
    moments = [
        ("right after it started", counter("started", 1)),
        ("while planning", counter("planned", 1)),
        ("after a few files", counter("file_done", 2)),
        ("after a subdir was settled", counter("subdir_done", 1)),
        ("in the middle of files", lambda e: e["event"] == "file_progress" and e["done"] > 50_000),
    ]
    orphans = []
    for label, stop in moments:
        events, workers = kill_after(start(config), stop)
        orphans += workers
        assert events, label
        assert mirror_problems(channel, slow_upstream.root, SUBDIRS) == [], label
        assert read_status(mirror).state in ("interrupted", "done", "failed"), label
    resumable = {
        f"{subdir}/{part.name[1:-5]}": part.stat().st_size
        for subdir in SUBDIRS
        for part in (channel / subdir).glob(".*.part")
        if part.stat().st_size
    }
    assert resumable, "no kill landed in the middle of a file"
    assert orphans, "no kill left download workers behind (to see them stop)"
    assert read_status(mirror).state == "interrupted"

    slow_upstream.requests.clear()
    for path in list(resumable):
        slow_upstream.always(path, None)
    done = subprocess.run(
        [sys.executable, "-m", "casconsole.cli.sync", "--config", str(config)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert read_status(mirror).state == "done"
    assert mirror_problems(channel, slow_upstream.root, SUBDIRS) == []
    for subdir in SUBDIRS:
        names = sorted(p.name for p in (slow_upstream.root / subdir).iterdir() if p.name.endswith(".conda"))
        assert sorted(p.name for p in (channel / subdir).iterdir() if p.name.endswith(".conda")) == names
        repodata = json.loads((channel / subdir / "repodata.json").read_bytes())
        assert sorted(repodata["packages.conda"]) == names
        assert list((channel / subdir).glob(".*.part")) == []
    # the partial files left by the last kill were resumed, not fetched again from the start
    ranges = {r.path: r.range for r in slow_upstream.requests if r.path in resumable}
    assert ranges == {path: f"bytes={size}-" for path, size in resumable.items()}
