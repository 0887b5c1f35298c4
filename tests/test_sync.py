"""The sync engine against a real loopback upstream serving real archives, faults injected there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zstandard
from upstream_server import Fault, Upstream, make_channel, mirror_problems, sha256_of, spec

from casconsole.conda.repodata import write_repodata
from casconsole.settings import load_settings
from casconsole.sync.engine import StatusReader, Sync, SyncLocked, read_status, run_sync
from casconsole.sync.events import FileDone, FileRemoved, FileRetry, SyncWarning
from casconsole.sync.lock import SyncLock

SUBDIRS = ("linux-64", "noarch")


def settings_for(url: str, mirror: Path, **keys):
    values = {"remote_url": url, "mirror_dir": str(mirror), "platforms": ["linux-64"], "retries": 3, **keys}
    return load_settings(cli={key: (value, "test") for key, value in values.items()})


def build(root: Path) -> dict[str, dict]:
    """A small channel: packages in both formats, one big enough to stream, one patched record."""
    repodata = make_channel(
        root,
        {
            "linux-64": [
                spec("libfoo", "1.0", "linux-64", kb=300),
                (spec("libfoo", "0.9", "linux-64", kb=8), ".tar.bz2"),
                spec("tool", "2.0", "linux-64", depends=["libfoo >=1", "helper"]),
                spec("extra", "1.0", "linux-64"),
            ],
            "noarch": [spec("helper", "1.0"), (spec("helper", "0.5"), ".tar.bz2"), spec("docs", "3.0")],
        },
    )
    # a repodata patch, as channels apply them: the record no longer says what index.json says
    record = repodata["linux-64"]["packages.conda"]["tool-2.0-0.conda"]
    record["depends"] = ["libfoo >=1,<2", "helper"]
    write_repodata(root / "linux-64", repodata["linux-64"])
    return repodata


@pytest.fixture
def upstream(tmp_path):
    root = tmp_path / "upstream"
    build(root)
    with Upstream(root) as server:
        yield server


def mirrored(mirror: Path, subdir: str) -> dict:
    return json.loads((mirror / "pkgs" / subdir / "repodata.json").read_bytes())


def upstream_repodata(upstream: Upstream, subdir: str) -> dict:
    return json.loads((upstream.root / subdir / "repodata.json").read_bytes())


def package_requests(upstream: Upstream) -> list:
    return [r for r in upstream.requests if r.path.endswith((".conda", ".tar.bz2"))]


class Recorder:
    def __init__(self):
        self.events = []
        self.lock = threading.Lock()

    def __call__(self, event):
        with self.lock:
            self.events.append(event)

    def of(self, cls):
        return [e for e in self.events if isinstance(e, cls)]


# ---------------------------------------------------------------- a sync, and a re-sync


def test_sync_mirrors_verified_files_and_upstream_records(upstream, tmp_path):
    mirror = tmp_path / "mirror"
    stats = Sync(settings_for(upstream.url, mirror)).run()
    assert (stats.state, stats.failed, stats.downloaded) == ("done", 0, 7)
    assert mirror_problems(mirror / "pkgs", upstream.root, SUBDIRS) == []
    for subdir in SUBDIRS:
        ours, theirs = mirrored(mirror, subdir), upstream_repodata(upstream, subdir)
        # every upstream record, as upstream wrote it (the patched depends included)
        assert ours["packages"] == theirs["packages"]
        assert ours["packages.conda"] == theirs["packages.conda"]
        assert ours["info"] == theirs["info"]
        for table in ("packages", "packages.conda"):
            for fn, record in ours[table].items():
                assert sha256_of(mirror / "pkgs" / subdir / fn) == record["sha256"]
        zst = (mirror / "pkgs" / subdir / "repodata.json.zst").read_bytes()
        assert (
            zstandard.ZstdDecompressor().stream_reader(zst).read()
            == (mirror / "pkgs" / subdir / "repodata.json").read_bytes()
        )
    assert mirrored(mirror, "linux-64")["packages.conda"]["tool-2.0-0.conda"]["depends"] == [
        "libfoo >=1,<2",
        "helper",
    ]


def test_noarch_is_written_even_when_upstream_has_none(tmp_path):
    root = tmp_path / "upstream"
    make_channel(root, {"linux-64": [spec("solo", "1.0", "linux-64")]}, subdirs=())
    with Upstream(root) as server:
        stats = Sync(settings_for(server.url, tmp_path / "mirror")).run()
    assert stats.state == "done"
    noarch = mirrored(tmp_path / "mirror", "noarch")
    assert noarch["packages"] == {} and noarch["packages.conda"] == {}


def test_resync_with_nothing_new_downloads_nothing_and_hashes_nothing(upstream, tmp_path):
    mirror = tmp_path / "mirror"
    Sync(settings_for(upstream.url, mirror)).run()
    before = {p: p.stat().st_mtime_ns for p in (mirror / "pkgs").rglob("repodata.json*")}
    upstream.requests.clear()
    stats = Sync(settings_for(upstream.url, mirror)).run()
    assert (stats.state, stats.downloaded, stats.checked, stats.present) == ("done", 0, 0, 7)
    assert package_requests(upstream) == []
    # the repodata was asked for conditionally, and left as it was
    assert all(r.path.endswith("repodata.json.zst") for r in upstream.requests)
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_a_file_changed_on_disk_is_hashed_again_and_only_that_one(upstream, tmp_path):
    mirror = tmp_path / "mirror"
    Sync(settings_for(upstream.url, mirror)).run()
    touched = mirror / "pkgs" / "noarch" / "docs-3.0-0.conda"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    upstream.requests.clear()
    recorder = Recorder()
    stats = Sync(settings_for(upstream.url, mirror), recorder).run()
    assert (stats.checked, stats.corrupt, stats.downloaded) == (1, 0, 0)
    assert [(e.fn, e.action) for e in recorder.of(FileDone)] == [("docs-3.0-0.conda", "checked")]
    assert package_requests(upstream) == []


def test_verify_rehashes_everything_and_repairs(upstream, tmp_path):
    mirror = tmp_path / "mirror"
    Sync(settings_for(upstream.url, mirror)).run()
    bad = mirror / "pkgs" / "linux-64" / "libfoo-1.0-0.conda"
    st = bad.stat()
    data = bytearray(bad.read_bytes())
    data[1000] ^= 0xFF
    bad.write_bytes(bytes(data))
    os.utime(bad, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: only hashing tells

    stats = Sync(settings_for(upstream.url, mirror)).run()
    assert (stats.checked, stats.downloaded) == (0, 0)  # trusted by size and mtime

    recorder = Recorder()
    stats = Sync(settings_for(upstream.url, mirror), recorder, verify=True).run()
    assert (stats.state, stats.checked, stats.corrupt, stats.downloaded) == ("done", 7, 1, 1)
    assert [e.fn for e in recorder.of(FileDone) if e.action == "repaired"] == ["libfoo-1.0-0.conda"]
    assert any("libfoo-1.0-0.conda" in w.message and "sha256" in w.message for w in recorder.of(SyncWarning))
    assert mirror_problems(mirror / "pkgs", upstream.root, SUBDIRS) == []
    assert sha256_of(bad) == sha256_of(upstream.root / "linux-64" / bad.name)


# ---------------------------------------------------------------- faults


def test_faults_are_retried_until_the_files_verify(upstream, tmp_path):
    faults = {
        "linux-64/libfoo-1.0-0.conda": [Fault.truncate(5000), Fault.wrong_bytes(), Fault.reset()],
        "linux-64/tool-2.0-0.conda": [Fault.status(503), Fault.status(500)],
        "noarch/helper-1.0-0.conda": [Fault.stall(5)],
        "noarch/helper-0.5-0.tar.bz2": [Fault.reset(), Fault.truncate(10)],
    }
    for path, queue in faults.items():
        upstream.inject(path, *queue)
    recorder = Recorder()
    stats = Sync(settings_for(upstream.url, tmp_path / "mirror", timeout=1, retries=3), recorder).run()
    assert (stats.state, stats.failed, stats.downloaded) == ("done", 0, 7)
    assert mirror_problems(tmp_path / "mirror" / "pkgs", upstream.root, SUBDIRS) == []
    retried = {}
    for event in recorder.of(FileRetry):
        retried.setdefault(event.fn, []).append(event.reason)
    assert len(retried["libfoo-1.0-0.conda"]) == 3
    assert "truncated" in retried["libfoo-1.0-0.conda"][0]
    assert "sha256 mismatch" in retried["libfoo-1.0-0.conda"][1]
    assert retried["tool-2.0-0.conda"] == ["HTTP 503", "HTTP 500"]
    assert "timed out" in retried["helper-1.0-0.conda"][0]
    assert len(retried["helper-0.5-0.tar.bz2"]) == 2


def test_a_file_that_keeps_failing_is_reported_and_the_others_go_on(upstream, tmp_path):
    upstream.always("linux-64/extra-1.0-0.conda", Fault.status(502))
    mirror = tmp_path / "mirror"
    stats = Sync(settings_for(upstream.url, mirror, retries=2)).run()
    assert (stats.state, stats.failed, stats.downloaded) == ("failed", 1, 6)
    assert stats.failures == [("linux-64", "extra-1.0-0.conda", "HTTP 502")]
    assert stats.exit_status == 1
    assert len(upstream.seen("linux-64/extra-1.0-0.conda")) == 3  # the first attempt and 2 retries
    assert "extra-1.0-0.conda" not in mirrored(mirror, "linux-64")["packages.conda"]
    assert not (mirror / "pkgs" / "linux-64" / "extra-1.0-0.conda").exists()
    assert mirror_problems(mirror / "pkgs", upstream.root, SUBDIRS) == []
    status = read_status(mirror)
    assert status.state == "failed"
    assert status.failures == [{"subdir": "linux-64", "fn": "extra-1.0-0.conda", "reason": "HTTP 502"}]


def test_not_found_is_not_retried(upstream, tmp_path):
    (upstream.root / "noarch" / "docs-3.0-0.conda").unlink()
    stats = Sync(settings_for(upstream.url, tmp_path / "mirror")).run()
    assert stats.failures == [("noarch", "docs-3.0-0.conda", "HTTP 404")]
    assert len(upstream.seen("noarch/docs-3.0-0.conda")) == 1


def test_a_stall_past_the_timeout_fails_the_file_when_retries_are_spent(upstream, tmp_path):
    upstream.always("linux-64/libfoo-1.0-0.conda", Fault.stall(5))
    stats = Sync(settings_for(upstream.url, tmp_path / "mirror", timeout=1, retries=0)).run()
    assert [(fn, reason) for _, fn, reason in stats.failures] == [
        ("libfoo-1.0-0.conda", "timed out (no data for 1 s)")
    ]
    assert stats.downloaded == 6


# ---------------------------------------------------------------- resuming


def test_an_interrupted_download_resumes_with_a_range_request(upstream, tmp_path):
    mirror = tmp_path / "mirror"
    fn = "libfoo-1.0-0.conda"
    whole = (upstream.root / "linux-64" / fn).read_bytes()
    part = mirror / "pkgs" / "linux-64" / f".{fn}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(whole[:100_000])
    recorder = Recorder()
    stats = Sync(settings_for(upstream.url, mirror), recorder).run()
    assert stats.state == "done"
    assert [r.range for r in upstream.seen(f"linux-64/{fn}")] == ["bytes=100000-"]
    done = next(e for e in recorder.of(FileDone) if e.fn == fn)
    assert (done.resumed, done.fetched) == (True, len(whole) - 100_000)
    assert (mirror / "pkgs" / "linux-64" / fn).read_bytes() == whole
    assert not part.exists()


def test_a_truncated_body_is_resumed_within_the_same_sync(upstream, tmp_path):
    fn = "libfoo-1.0-0.conda"
    upstream.inject(f"linux-64/{fn}", Fault.truncate(70_000))
    stats = Sync(settings_for(upstream.url, tmp_path / "mirror")).run()
    assert stats.state == "done" and stats.resumed == 1
    assert [r.range for r in upstream.seen(f"linux-64/{fn}")] == [None, "bytes=70000-"]


def test_without_range_support_the_file_is_fetched_whole(upstream, tmp_path):
    mirror = tmp_path / "mirror"
    fn = "libfoo-1.0-0.conda"
    part = mirror / "pkgs" / "linux-64" / f".{fn}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes((upstream.root / "linux-64" / fn).read_bytes()[:50_000])
    upstream.ranges = False
    stats = Sync(settings_for(upstream.url, mirror)).run()
    assert stats.state == "done"
    assert sha256_of(mirror / "pkgs" / "linux-64" / fn) == sha256_of(upstream.root / "linux-64" / fn)


def test_a_stale_partial_file_that_does_not_verify_is_fetched_again_from_the_start(upstream, tmp_path):
    mirror = tmp_path / "mirror"
    fn = "libfoo-1.0-0.conda"
    part = mirror / "pkgs" / "linux-64" / f".{fn}.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\0" * 60_000)  # not the start of this file (an older upload, say)
    stats = Sync(settings_for(upstream.url, mirror)).run()
    assert stats.state == "done"
    assert [r.range for r in upstream.seen(f"linux-64/{fn}")] == ["bytes=60000-", None]
    assert mirror_problems(mirror / "pkgs", upstream.root, SUBDIRS) == []


# ---------------------------------------------------------------- pruning


def test_files_that_left_the_plan_are_removed_after_the_new_repodata(upstream, tmp_path):
    mirror = tmp_path / "mirror"
    Sync(settings_for(upstream.url, mirror)).run()
    # gone upstream: the record disappears from upstream's repodata
    repodata = upstream_repodata(upstream, "noarch")
    del repodata["packages.conda"]["docs-3.0-0.conda"]
    write_repodata(upstream.root / "noarch", repodata)

    seen_at_removal = {}

    def sink(event):
        if isinstance(event, FileRemoved):  # the new repodata is in place when a file goes
            names = {
                **mirrored(mirror, event.subdir)["packages"],
                **mirrored(mirror, event.subdir)["packages.conda"],
            }
            seen_at_removal[event.fn] = (event.reason, event.fn in names)

    # newly blacklisted; a third of each subdir goes, so the prune guard is opened to allow it
    stats = Sync(settings_for(upstream.url, mirror, blacklist=["extra"], max_prune="50%"), sink).run()
    assert stats.removed == 2
    assert seen_at_removal == {
        "docs-3.0-0.conda": ("left the plan", False),
        "extra-1.0-0.conda": ("left the plan", False),
    }
    assert not (mirror / "pkgs" / "noarch" / "docs-3.0-0.conda").exists()
    assert not (mirror / "pkgs" / "linux-64" / "extra-1.0-0.conda").exists()
    assert mirror_problems(mirror / "pkgs", upstream.root, SUBDIRS) == []


def test_no_prune_keeps_files_that_left_the_plan_but_does_not_list_them(upstream, tmp_path):
    mirror = tmp_path / "mirror"
    Sync(settings_for(upstream.url, mirror)).run()
    stats = Sync(settings_for(upstream.url, mirror, blacklist=["extra"], prune=False)).run()
    assert stats.removed == 0
    assert (mirror / "pkgs" / "linux-64" / "extra-1.0-0.conda").exists()
    assert "extra-1.0-0.conda" not in mirrored(mirror, "linux-64")["packages.conda"]


# ---------------------------------------------------------------- hostile upstream


HOSTILE = [
    "../escape-1.0-0.conda",
    "/tmp/absolute-1.0-0.conda",
    "sub/dir-1.0-0.conda",
    "back\\slash-1.0-0.conda",
    "dots..-1.0-0.conda",
    "script-1.0-0.sh",
    ".hidden-1.0-0.conda",
]


def test_a_hostile_upstream_is_refused_and_nothing_is_written_outside_the_mirror(tmp_path):
    root = tmp_path / "srv" / "upstream"
    repodata = make_channel(root, {"linux-64": [spec("good", "1.0", "linux-64")]})
    good = repodata["linux-64"]["packages.conda"]["good-1.0-0.conda"]
    # targets a naive client would fetch and write: real files where the names point
    for target in (tmp_path / "srv" / "escape-1.0-0.conda", root / "linux-64" / "script-1.0-0.sh"):
        target.write_bytes((root / "linux-64" / "good-1.0-0.conda").read_bytes())
    for fn in HOSTILE:
        repodata["linux-64"]["packages.conda"][fn] = dict(good)
    repodata["linux-64"]["packages.conda"]["other-1.0-0.conda"] = {**good, "subdir": "osx-64"}
    write_repodata(root / "linux-64", repodata["linux-64"])
    mirror = tmp_path / "area" / "mirror"
    mirror.mkdir(parents=True)
    outside_before = sorted(p for p in tmp_path.rglob("*") if mirror not in p.parents and p != mirror)

    recorder = Recorder()
    with Upstream(root) as server:
        stats = Sync(settings_for(server.url, mirror), recorder).run()
    assert (stats.state, stats.downloaded) == ("done", 1)
    warnings = " ".join(w.message for w in recorder.of(SyncWarning))
    for fn in [*HOSTILE, "other-1.0-0.conda"]:
        assert repr(fn) in warnings
    assert "its subdir is 'osx-64'" in warnings
    outside_after = sorted(p for p in tmp_path.rglob("*") if mirror not in p.parents and p != mirror)
    assert outside_after == outside_before
    assert sorted(p.name for p in (mirror / "pkgs" / "linux-64").iterdir() if not p.name.startswith(".")) == [
        "good-1.0-0.conda",
        "repodata.json",
        "repodata.json.zst",
    ]
    assert list(mirrored(mirror, "linux-64")["packages.conda"]) == ["good-1.0-0.conda"]


# ---------------------------------------------------------------- one sync per mirror


def test_a_second_sync_of_the_same_mirror_is_refused_naming_the_holder(upstream, tmp_path):
    mirror = tmp_path / "mirror"
    with SyncLock(mirror), pytest.raises(SyncLocked) as err:
        Sync(settings_for(upstream.url, mirror)).run()
    assert err.value.pid == os.getpid()
    assert f"pid {os.getpid()}" in str(err.value)
    assert not (mirror / "pkgs").exists()


def test_a_lock_left_by_a_dead_process_is_taken_over(upstream, tmp_path):
    mirror = tmp_path / "mirror"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    lock = mirror / ".cas" / "sync.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(dead.stdout)
    recorder = Recorder()
    stats = Sync(settings_for(upstream.url, mirror), recorder).run()
    assert stats.state == "done"
    assert any(f"pid {dead.stdout.strip()}" in w.message for w in recorder.of(SyncWarning))


# ---------------------------------------------------------------- cancelling, status


def test_cancel_stops_cleanly_and_the_next_sync_resumes(upstream, tmp_path):
    mirror = tmp_path / "mirror"
    fn = "libfoo-1.0-0.conda"
    upstream.always(f"linux-64/{fn}", Fault.slow(40_000))  # about 8 s for the whole file
    started = threading.Event()

    def sink(event):
        if getattr(event, "fn", None) == fn and getattr(event, "done", 0) > 20_000:
            started.set()

    cancel = threading.Event()
    result = {}
    worker = threading.Thread(
        target=lambda: result.update(stats=run_sync(settings_for(upstream.url, mirror), sink, cancel=cancel))
    )
    worker.start()
    assert started.wait(30)
    assert read_status(mirror).state == "running"
    cancel.set()
    worker.join(30)
    assert not worker.is_alive()
    assert result["stats"].state == "cancelled"
    assert read_status(mirror).state == "cancelled"
    part = mirror / "pkgs" / "linux-64" / f".{fn}.part"
    assert part.stat().st_size > 20_000
    assert not (mirror / "pkgs" / "linux-64" / fn).exists()
    assert mirror_problems(mirror / "pkgs", upstream.root, SUBDIRS) == []

    upstream.always(f"linux-64/{fn}", None)
    kept = part.stat().st_size
    stats = Sync(settings_for(upstream.url, mirror)).run()
    assert stats.state == "done" and stats.resumed == 1
    assert upstream.seen(f"linux-64/{fn}")[-1].range == f"bytes={kept}-"
    assert mirror_problems(mirror / "pkgs", upstream.root, SUBDIRS) == []


def test_status_reports_the_last_sync(upstream, tmp_path):
    mirror = tmp_path / "mirror"
    assert read_status(mirror).state == "none"
    upstream.always("noarch/docs-3.0-0.conda", Fault.status(500))
    Sync(settings_for(upstream.url, mirror, retries=0)).run()
    status = read_status(mirror)
    assert status.state == "failed"
    assert (status.files_total, status.files_done, status.files_failed, status.files_left) == (7, 6, 1, 0)
    assert status.subdirs["linux-64"].packages == 4
    assert status.started <= status.finished
    data = status.to_json()
    assert data["failures"] == [{"subdir": "noarch", "fn": "docs-3.0-0.conda", "reason": "HTTP 500"}]
    # a second sync starts a new status; the log keeps both
    upstream.always("noarch/docs-3.0-0.conda", None)
    Sync(settings_for(upstream.url, mirror)).run()
    status = read_status(mirror)
    assert (status.state, status.files_total, status.files_done, status.failures) == ("done", 1, 1, [])
    lines = (mirror / ".cas" / "sync.jsonl").read_text().splitlines()
    assert [json.loads(line)["event"] for line in lines].count("started") == 2


def test_a_channel_on_a_local_path_is_mirrored_too(tmp_path):
    root = tmp_path / "usb" / "channel"
    build(root)
    mirror = tmp_path / "mirror"
    for remote in (str(root), root.as_uri()):
        stats = Sync(settings_for(remote, mirror)).run()
        assert stats.state == "done"
        assert mirror_problems(mirror / "pkgs", root, SUBDIRS) == []
    assert len(list((mirror / "pkgs").rglob("*.conda"))) == 5


def test_temporaries_nobody_will_finish_are_swept_and_a_failed_files_partial_is_kept(upstream, tmp_path):
    mirror = tmp_path / "mirror"
    folder = mirror / "pkgs" / "linux-64"
    folder.mkdir(parents=True)
    left = [folder / ".repodata.json.zst.k1ll3d.part", folder / ".gone-1.0-0.conda.part"]
    for path in left:
        path.write_bytes(b"left by a killed sync")
        os.utime(path, (1, 1))
    fn = "extra-1.0-0.conda"
    whole = (upstream.root / "linux-64" / fn).read_bytes()
    (folder / f".{fn}.part").write_bytes(whole[:1000])
    upstream.always(f"linux-64/{fn}", Fault.status(503))
    stats = Sync(settings_for(upstream.url, mirror, retries=0)).run()
    assert stats.failures == [("linux-64", fn, "HTTP 503")]
    assert [p.exists() for p in left] == [False, False]
    assert (folder / f".{fn}.part").read_bytes() == whole[:1000]  # resumed next time
    assert sorted(p.name for p in folder.glob(".*")) == [f".{fn}.part"]


def test_a_status_reader_follows_a_sync_as_it_goes(upstream, tmp_path):
    mirror = tmp_path / "mirror"
    fn = "libfoo-1.0-0.conda"
    upstream.always(f"linux-64/{fn}", Fault.slow(60_000))  # about 5 s for the whole file
    reader = StatusReader(mirror)
    assert reader.poll().state == "none"
    worker = threading.Thread(target=lambda: Sync(settings_for(upstream.url, mirror)).run())
    worker.start()
    deadline = time.monotonic() + 60
    status = reader.poll()
    while not (status.state == "running" and status.files_done >= 6 and status.active) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
        status = reader.poll()
    assert (status.state, status.files_total, status.files_done, status.pid) == ("running", 7, 6, os.getpid())
    assert list(status.active) == [f"linux-64/{fn}"]
    assert status.bytes_left > 0
    worker.join(60)
    status = reader.poll()
    assert (status.state, status.files_done, status.files_left, status.bytes_left) == ("done", 7, 0, 0)
    assert status.active == {}
    # a line being written is read once it is whole
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    log = mirror / ".cas" / "sync.jsonl"
    with open(log, "ab") as fh:
        fh.write(b'{"event":"started","time":1.0,"pid":' + dead.stdout.strip().encode())
    assert reader.poll().state == "done"
    with open(log, "ab") as fh:
        fh.write(b',"subdirs":["noarch"]}\n')
    status = reader.poll()
    assert (status.state, list(status.subdirs), status.files_total) == ("interrupted", ["noarch"], 0)


def test_a_loongarch64_subdir_is_synced_and_indexed(tmp_path):
    """The known subdirs are defined once (layout.py): the sync and the index agree on them."""
    from casconsole.index.channel import index_channel, index_status

    root = tmp_path / "upstream"
    make_channel(root, {"linux-loongarch64": [spec("tool", "1.0", "linux-loongarch64")], "noarch": []})
    mirror = tmp_path / "mirror"
    with Upstream(root) as server:
        stats = Sync(settings_for(server.url, mirror, platforms=["linux-loongarch64"])).run()
    assert stats.state == "done" and stats.downloaded == 1
    assert list(mirrored(mirror, "linux-loongarch64")["packages.conda"]) == ["tool-1.0-0.conda"]
    assert mirror_problems(mirror / "pkgs", root, ["linux-loongarch64", "noarch"]) == []

    internal = tmp_path / "internal"
    (internal / "linux-loongarch64").mkdir(parents=True)
    fn = "tool-1.0-0.conda"
    package = (mirror / "pkgs" / "linux-loongarch64" / fn).read_bytes()
    (internal / "linux-loongarch64" / fn).write_bytes(package)
    indexed = index_channel(internal, workers=1)
    assert "linux-loongarch64" in [sub.subdir for sub in indexed.subdirs]
    repodata = json.loads((internal / "linux-loongarch64" / "repodata.json").read_bytes())
    assert list(repodata["packages.conda"]) == ["tool-1.0-0.conda"]
    assert "linux-loongarch64" in [sub.subdir for sub in index_status(internal).subdirs]


def test_a_dry_run_then_a_sync_fetch_the_repodata_once(upstream, tmp_path):
    """One fetcher and one cache: the sync asks with the dry run's validators and gets a 304."""
    from casconsole.sync.dryrun import make_plan
    from casconsole.sync.events import RepodataFetched

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    settings = settings_for(upstream.url, mirror)
    plan = make_plan(settings)
    assert plan.total.download == 7
    # the two downloads run at once: in either order
    fetched_by_dry_run = sorted(r.path for r in upstream.requests if "repodata" in r.path)
    assert fetched_by_dry_run == ["linux-64/repodata.json.zst", "noarch/repodata.json.zst"]

    recorder = Recorder()
    assert Sync(settings, recorder).run().state == "done"
    fetches = [e for e in recorder.events if isinstance(e, RepodataFetched)]
    assert [(e.subdir, e.not_modified) for e in fetches] == [("linux-64", True), ("noarch", True)]
    repodata_requests = sorted(r.path for r in upstream.requests if "repodata" in r.path)
    assert repodata_requests == sorted(fetched_by_dry_run * 2)  # asked again, answered 304: no body sent
