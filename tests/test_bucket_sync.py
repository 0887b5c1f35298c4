"""`cas-sync` into a bucket (mirror_dir: s3://...) of a real SeaweedFS, run as a user runs it:
the same promises as into a folder (tests/test_sync*.py), checked in the bucket.

- packages first, repodata last, naming only objects present and verified;
- SIGKILL at any moment, then a run that completes and resumes the file cut in the middle;
- one sync at a time: the lock object, taken over from a dead holder, never from a live one;
  a sync whose lock is taken from it stops;
- the prune guard; `--verify` finds and repairs a bad object; a refusing bucket stops the sync
  at once (exit 4), one line.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import signal
import socket
import subprocess
import sys
import time

import pytest
import zstandard
from upstream_server import Fault, Upstream, make_channel, spec

from casconsole.conda.repodata import write_repodata

SUBDIRS = ("linux-64", "noarch")


@pytest.fixture
def upstream(tmp_path):
    root = tmp_path / "upstream"
    written = make_channel(
        root,
        {
            "linux-64": [spec(f"lib{i}", "1.0", "linux-64", kb=300) for i in range(6)],
            "noarch": [spec(f"py{i}", "1.0") for i in range(4)],
        },
    )
    with Upstream(root) as server:
        server.repodata = written
        yield server


@pytest.fixture
def config(tmp_path, upstream, bucket):
    path = tmp_path / "cas.yaml"
    path.write_text(
        f"remote_url: {upstream.url}\n{bucket.settings_text()}platforms: [linux-64]\n"
        f"s3_work_dir: {tmp_path / 'work'}\nretries: 2\n"
    )
    return path


def cas_sync(config, *args, timeout=120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "casconsole.cli.sync", "--config", str(config), *map(str, args)],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def start(config, *args):
    return subprocess.Popen(
        [sys.executable, "-m", "casconsole.cli.sync", "--config", str(config), "--json", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bucket_problems(view, upstream_root) -> list[str]:
    """What breaks the sync's promises in the bucket: an object under a package's name that is
    not upstream's file; a repodata naming an object that is missing or differs."""
    problems = []
    for subdir in SUBDIRS:
        objects = view.objects(f"pkgs/{subdir}")
        for key, data in objects.items():
            name = key.rpartition("/")[2]
            if name.endswith(".conda"):
                source = upstream_root / subdir / name
                if not source.is_file() or sha(source.read_bytes()) != sha(data):
                    problems.append(f"{key}: differs from upstream")
        for name in ("repodata.json", "repodata.json.zst"):
            data = objects.get(f"pkgs/{subdir}/{name}")
            if data is None:
                continue
            if name.endswith(".zst"):
                data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
            for table in ("packages", "packages.conda"):
                for fn, record in json.loads(data).get(table, {}).items():
                    held = objects.get(f"pkgs/{subdir}/{fn}")
                    if held is None:
                        problems.append(f"{subdir}/{name} names {fn}, which is missing")
                    elif sha(held) != record["sha256"]:
                        problems.append(f"{subdir}/{name} names {fn}, which does not match")
    return problems


def names(view, subdir) -> list[str]:
    return sorted(k.rpartition("/")[2] for k in view.keys(f"pkgs/{subdir}") if k.endswith(".conda"))


def upstream_names(upstream, subdir) -> list[str]:
    return sorted(p.name for p in (upstream.root / subdir).iterdir() if p.name.endswith(".conda"))


def test_a_sync_into_a_bucket_then_a_resync_that_changes_nothing(config, upstream, bucket, tmp_path):
    done = cas_sync(config)
    assert done.returncode == 0, done.stderr
    view = bucket.view
    assert bucket_problems(view, upstream.root) == []
    for subdir in SUBDIRS:
        assert names(view, subdir) == upstream_names(upstream, subdir)
        repodata = json.loads(view.get(f"pkgs/{subdir}/repodata.json"))
        assert sorted(repodata["packages.conda"]) == upstream_names(upstream, subdir)
        assert "base_url" not in repodata.get("info", {})
    # the verified-file record and the status log are in the bucket, the lock given back
    record = view.get(".cas/verified/pkgs/linux-64.tsv").decode()
    assert len(record.splitlines()) == 6 and all(line.count("\t") == 4 for line in record.splitlines())
    log = [json.loads(line) for line in view.get(".cas/sync.jsonl").splitlines()]
    assert log[0]["event"] == "started" and log[-1]["event"] == "finished" and log[-1]["state"] == "done"
    assert not any(e["event"] in ("file_done", "file_progress") for e in log)  # thinned out
    assert json.loads(view.get(".cas/sync.lock"))["released"] is True
    # nothing is left in the local work folder but state
    assert [p for p in (tmp_path / "work" / "staging").rglob("*") if p.is_file()] == []

    before = {k: view.etag(k) for k in view.keys("")}
    upstream.requests.clear()
    again = cas_sync(config, "--json")
    assert again.returncode == 0, again.stderr
    events = [json.loads(line) for line in again.stdout.splitlines()]
    planned = [e for e in events if e["event"] == "planned"]
    assert all(e["files"] == 0 and e["check"] == 0 for e in planned)  # trusted by size and ETag
    assert not [r for r in upstream.requests if r.path.endswith(".conda")]
    after = {k: view.etag(k) for k in view.keys("")}
    changed = {k for k in after if after[k] != before.get(k)}
    assert changed <= {".cas/sync.jsonl", ".cas/sync.lock"}  # no package, repodata or record rewritten

    status = cas_sync(config, "--status")
    assert status.returncode == 0 and "state     done" in status.stdout


def test_a_package_that_left_upstream_leaves_the_bucket_after_the_new_repodata(config, upstream, bucket):
    assert cas_sync(config).returncode == 0
    repodata = copy.deepcopy(upstream.repodata["linux-64"])
    gone = sorted(repodata["packages.conda"])[0]
    del repodata["packages.conda"][gone]
    write_repodata(upstream.root / "linux-64", repodata)
    done = cas_sync(config, "--json", "--set", "max_prune=50%")
    assert done.returncode == 0, done.stderr
    view = bucket.view
    assert gone not in names(view, "linux-64")
    assert gone not in json.loads(view.get("pkgs/linux-64/repodata.json"))["packages.conda"]
    kinds = [json.loads(line)["event"] for line in done.stdout.splitlines()]
    assert kinds.index("file_removed") > kinds.index("planned")
    assert bucket_problems(view, upstream.root) == []


def test_the_prune_guard_holds_a_bucket_subdir_back(config, upstream, bucket):
    assert cas_sync(config).returncode == 0
    view = bucket.view
    before = view.get("pkgs/linux-64/repodata.json")
    empty = copy.deepcopy(upstream.repodata["linux-64"])
    empty["packages.conda"] = {}
    write_repodata(upstream.root / "linux-64", empty)
    held = cas_sync(config)
    assert held.returncode == 3, held.stderr
    assert "prune withheld" in held.stdout + held.stderr
    assert names(view, "linux-64") == upstream_names(upstream, "linux-64")
    assert view.get("pkgs/linux-64/repodata.json") == before


def test_verify_finds_and_repairs_a_bad_object(config, upstream, bucket):
    assert cas_sync(config).returncode == 0
    view = bucket.view
    victim = "pkgs/linux-64/" + names(view, "linux-64")[2]
    good = view.get(victim)
    view.put(victim, bytes(len(good)))  # same size, other bytes: only hashing tells
    plain = cas_sync(config, "--json")
    assert plain.returncode == 0  # a changed object is not trusted: its ETag moved
    assert view.get(victim) == good
    view.put(victim, bytes(len(good)))
    # the record still vouches for the old ETag, so only --verify reads every object
    verify = cas_sync(config, "--verify", "--json")
    assert verify.returncode == 0, verify.stderr
    done = [json.loads(line) for line in verify.stdout.splitlines()]
    assert any(e["event"] == "file_done" and e["action"] == "repaired" for e in done)
    assert view.get(victim) == good
    assert bucket_problems(view, upstream.root) == []


def test_sigkill_at_any_moment_then_a_run_that_completes_and_resumes(config, upstream, bucket, tmp_path):
    for subdir in SUBDIRS:
        for path in (upstream.root / subdir).iterdir():
            if path.name.endswith(".conda"):
                upstream.always(f"{subdir}/{path.name}", Fault.slow(150_000))
    view = bucket.view

    def kill_after(stop) -> list[dict]:
        process = start(config)
        events = []
        for line in process.stdout:
            events.append(json.loads(line))
            if stop(events[-1]):
                break
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        process.stdout.close()
        process.stderr.close()
        return events

    moments = [
        lambda e: e["event"] == "started",
        lambda e: e["event"] == "planned",
        lambda e: e["event"] == "file_done",
        lambda e: e["event"] == "subdir_done",
        lambda e: e["event"] == "file_progress" and e["done"] > 60_000,
    ]
    for stop in moments:
        assert kill_after(stop)
        assert bucket_problems(view, upstream.root) == []
    parts = {p.name[1:-5]: p.stat().st_size for p in (tmp_path / "work" / "staging").rglob(".*.part")}
    status = cas_sync(config, "--status")
    assert "interrupted" in status.stdout  # its pid is gone; the lock says so too

    for subdir in SUBDIRS:
        for path in (upstream.root / subdir).iterdir():
            upstream.always(f"{subdir}/{path.name}", None)
    upstream.requests.clear()
    done = cas_sync(config)
    assert done.returncode == 0, done.stderr
    assert "took over the lock left by pid" in done.stdout + done.stderr
    assert bucket_problems(view, upstream.root) == []
    for subdir in SUBDIRS:
        assert names(view, subdir) == upstream_names(upstream, subdir)
    # a file cut in the middle is resumed with a Range; one complete but not uploaded is not fetched
    sizes = {p.name: p.stat().st_size for sd in SUBDIRS for p in (upstream.root / sd).iterdir()}
    ranges = {r.path.rpartition("/")[2]: r.range for r in upstream.requests if r.path.endswith(".conda")}
    cut = {fn: size for fn, size in parts.items() if 0 < size < sizes[fn]}
    assert cut, "no kill landed in the middle of a file"
    assert {fn: ranges.get(fn) for fn in cut} == {fn: f"bytes={size}-" for fn, size in cut.items()}
    assert not [fn for fn, size in parts.items() if size == sizes[fn] and fn in ranges]
    assert list((tmp_path / "work" / "staging").rglob(".*.part")) == []


def test_one_sync_at_a_time_and_a_dead_holders_lock_is_taken_over(config, upstream, bucket):
    view = bucket.view
    upstream.always("linux-64/" + upstream_names(upstream, "linux-64")[0], Fault.slow(100_000))
    first = start(config)
    for line in first.stdout:
        if json.loads(line)["event"] == "planned":
            break
    second = cas_sync(config)
    assert second.returncode == 2
    assert "another sync of this mirror is running" in second.stderr
    assert f"pid {first.pid} on {socket.gethostname()}" in second.stderr
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=30)
    upstream.always("linux-64/" + upstream_names(upstream, "linux-64")[0], None)

    # a lock of another machine with a fresh heartbeat is respected; an expired one is taken
    alive = {"host": "other-host", "pid": 4242, "token": "x", "lease": 60, "heartbeat": time.time()}
    view.put(".cas/sync.lock", json.dumps({**alive, "released": False}).encode())
    refused = cas_sync(config)
    assert refused.returncode == 2 and "pid 4242 on other-host" in refused.stderr
    # its heartbeat stopped a while ago; the object's own Last-Modified must age too, so the
    # lease is set short in the object, as a holder configured so would write it
    view.put(".cas/sync.lock", json.dumps({**alive, "lease": 1, "heartbeat": time.time() - 5}).encode())
    time.sleep(1.5)
    done = cas_sync(config)
    assert done.returncode == 0, done.stderr
    assert "took over the lock left by pid 4242 on other-host" in done.stdout + done.stderr
    assert bucket_problems(view, upstream.root) == []


def test_a_sync_whose_lock_is_taken_from_it_stops(config, upstream, bucket):
    from casconsole.storage.lease import BEAT

    view = bucket.view
    for fn in upstream_names(upstream, "linux-64"):  # slower than a heartbeat or two
        upstream.always(f"linux-64/{fn}", Fault.slow(15_000))
    process = start(config)
    for line in process.stdout:
        if json.loads(line)["event"] == "file_started":
            break
    # another writer took the lock over (as after this one was cut off longer than the lease)
    taken = {"host": "h2", "pid": 1, "heartbeat": time.time(), "lease": 60, "released": False}
    view.put(".cas/sync.lock", json.dumps(taken).encode())
    began = time.monotonic()
    _, err = process.communicate(timeout=60)
    assert time.monotonic() - began < BEAT + 5  # noticed at its next heartbeat
    assert process.returncode == 2, err
    assert "lock was taken over by another writer" in err
    assert view.get("pkgs/linux-64/repodata.json") is None  # it wrote no repodata after losing it
    assert json.loads(view.get(".cas/sync.lock"))["host"] == "h2"  # and left the new holder's lock


def test_a_bucket_that_refuses_stops_the_sync_in_one_line(config, upstream, bucket, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    done = cas_sync(config, "--set", "retries=0")
    assert done.returncode == 4, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("cas-sync: error:")]
    assert len(lines) == 1 and bucket.url in lines[0], done.stderr
    assert "access denied" in lines[0] or "credentials were refused" in lines[0]
    assert "wrong-secret" not in done.stderr


def test_the_dry_run_compares_with_the_bucket(config, upstream, bucket):
    assert cas_sync(config).returncode == 0
    gone = upstream_names(upstream, "noarch")[0]
    bucket.view.delete(f"pkgs/noarch/{gone}")
    plan = cas_sync(config, "--dry-run", "--json")
    assert plan.returncode == 0, plan.stderr
    shown = json.loads(plan.stdout)
    assert shown["mirror_dir"] == bucket.url
    assert shown["subdirs"]["noarch"]["download"] == [gone]
    assert shown["subdirs"]["linux-64"]["download"] == []


def test_a_stalled_sync_into_a_bucket_stops_within_2_seconds_and_gives_the_lock_back(
    config, upstream, bucket
):
    stalling = [f"linux-64/{fn}" for fn in upstream_names(upstream, "linux-64")]
    for path in stalling:  # half of each file is sent, then nothing for two minutes
        upstream.always(path, Fault.stall(120))
    process = start(config)
    deadline = time.monotonic() + 30
    while not all(upstream.seen(path) for path in stalling[:2]) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    took = time.monotonic() - sent
    assert process.returncode == 130, err
    assert took < 2.0, f"stopped {took:.2f} s after SIGINT"
    assert "Traceback" not in err
    view = bucket.view
    assert json.loads(view.get(".cas/sync.lock"))["released"] is True
    assert json.loads(view.get(".cas/sync.jsonl").splitlines()[-1])["state"] == "cancelled"
    assert bucket_problems(view, upstream.root) == []
    upstream.clear()
    assert cas_sync(config).returncode == 0
    assert bucket_problems(view, upstream.root) == []
    assert names(view, "linux-64") == upstream_names(upstream, "linux-64")


@pytest.mark.parametrize(
    "fault", [Fault.status(503), Fault.reset(), Fault.truncate(1000), Fault.wrong_bytes()], ids=str
)
def test_each_upstream_fault_once_then_the_file_is_in_the_bucket(config, upstream, bucket, fault):
    victim = upstream_names(upstream, "linux-64")[1]
    upstream.inject(f"linux-64/{victim}", fault)
    done = cas_sync(config, "--json")
    assert done.returncode == 0, done.stderr
    retried = [json.loads(line) for line in done.stdout.splitlines() if '"file_retry"' in line]
    assert [e["fn"] for e in retried] == [victim]
    assert bucket_problems(bucket.view, upstream.root) == []
    assert victim in names(bucket.view, "linux-64")
