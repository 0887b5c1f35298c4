"""`cas-index` of a channel kept in a bucket of a real SeaweedFS: the index it writes, a re-run
that reads and writes nothing, and two writers of one channel's index that never lose a
record (the writes are conditional on the versions each read; the one overtaken starts again)."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import threading

import zstandard
from upstream_server import spec

from casconsole.conda.archive import build_package
from casconsole.index.channel import IndexRaced, IndexStarted, index_channel
from casconsole.layout import BucketURL
from casconsole.settings import load_settings

CHANNEL = "internal-pkgs"


def upload(view, tmp_path, subdir: str, name: str, version: str = "1.0", fmt: str = ".conda") -> str:
    """Build a real package and put it into the channel's subdir in the bucket; its file name."""
    path = build_package(tmp_path / "built" / subdir, spec(name, version, subdir), fmt)
    view.put(f"{CHANNEL}/{subdir}/{path.name}", path.read_bytes())
    return path.name


def cas_index(bucket, *args) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "casconsole.cli.index", *args], capture_output=True, text=True, timeout=120,
        env=_env(bucket),
    )  # fmt: skip
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def _env(bucket) -> dict[str, str]:
    import os

    return {**os.environ, "CAS_MIRROR_S3_ENDPOINT_URL": bucket.endpoint}


def repodata(view, subdir: str) -> dict:
    return json.loads(view.get(f"{CHANNEL}/{subdir}/repodata.json"))


def records(view, subdir: str) -> list[str]:
    data = repodata(view, subdir)
    return sorted([*data["packages"], *data["packages.conda"]])


def test_index_a_channel_in_a_bucket_then_again_with_nothing_new(bucket, tmp_path):
    view = bucket.view
    linux = [upload(view, tmp_path, "linux-64", f"lib{i}") for i in range(3)]
    linux.append(upload(view, tmp_path, "linux-64", "old", fmt=".tar.bz2"))
    noarch = [upload(view, tmp_path, "noarch", "tool")]
    view.put(f"{CHANNEL}/linux-64/README.txt", b"not a package")
    url = f"{bucket.url}/{CHANNEL}"

    done = cas_index(bucket, url)
    assert done.returncode == 0, done.stderr
    assert "README.txt: a file that is not a conda package" in done.stderr
    assert records(view, "linux-64") == sorted(linux)
    assert records(view, "noarch") == noarch
    for fn, record in repodata(view, "linux-64")["packages.conda"].items():
        assert record["sha256"] == hashlib.sha256(view.get(f"{CHANNEL}/linux-64/{fn}")).hexdigest()
        assert record["subdir"] == "linux-64"
    zst = view.get(f"{CHANNEL}/linux-64/repodata.json.zst")
    plain = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(zst)).read()
    assert plain == view.get(f"{CHANNEL}/linux-64/repodata.json")
    channeldata = json.loads(view.get(f"{CHANNEL}/channeldata.json"))
    assert sorted(channeldata["packages"]) == ["lib0", "lib1", "lib2", "old", "tool"]

    before = {k: view.etag(k) for k in view.keys(CHANNEL)}
    again = cas_index(bucket, url)
    assert again.returncode == 0, again.stderr
    assert "0 read, 5 cached" in again.stdout
    assert {k: view.etag(k) for k in view.keys(CHANNEL)} == before  # nothing rewritten

    status = cas_index(bucket, "--status", "--json", url)
    assert status.returncode == 0
    assert json.loads(status.stdout)[0]["fresh"] is True
    new = upload(view, tmp_path, "linux-64", "lib9")
    status = json.loads(cas_index(bucket, "--status", "--json", url).stdout)[0]
    assert not status["fresh"]
    assert [s["new"] for s in status["subdirs"] if s["subdir"] == "linux-64"] == [1]
    third = cas_index(bucket, f"{url}/linux-64")  # one subdir, as the FAQ runs conda index
    assert third.returncode == 0, third.stderr
    assert "1 read" in third.stdout
    assert new in records(view, "linux-64")


def test_an_index_overtaken_by_another_writer_starts_again_and_loses_nothing(bucket, tmp_path):
    """Writer A has listed the channel and is about to write; meanwhile B uploads a package and
    indexes. A's write, conditional on what it read, is refused; it starts again, and the index
    it writes holds B's package too (written unconditionally, it would have dropped it)."""
    view = bucket.view
    first = upload(view, tmp_path, "noarch", "alpha")
    settings = load_settings(cli={"s3_endpoint_url": (bucket.endpoint, "test")})
    channel = BucketURL.parse(f"{bucket.url}/{CHANNEL}")
    scanned, resume = threading.Event(), threading.Event()
    events = []

    def sink(event) -> None:
        events.append(event)
        if isinstance(event, IndexStarted) and not scanned.is_set():
            scanned.set()
            assert resume.wait(60)  # A has read the state; B writes before A does

    result = {}
    writer_a = threading.Thread(
        target=lambda: result.update(stats=index_channel(channel, sink=sink, workers=1, settings=settings))
    )
    writer_a.start()
    assert scanned.wait(60)
    second = upload(view, tmp_path, "noarch", "beta")
    b = cas_index(bucket, f"{bucket.url}/{CHANNEL}")
    assert b.returncode == 0, b.stderr
    assert records(view, "noarch") == sorted([first, second])
    resume.set()
    writer_a.join(60)
    assert "stats" in result
    raced = [e for e in events if isinstance(e, IndexRaced)]
    assert raced and "changed by another writer" in raced[0].reason
    assert records(view, "noarch") == sorted([first, second])  # B's record survived A's write
    names = sorted(json.loads(view.get(f"{CHANNEL}/channeldata.json"))["packages"])
    assert names == ["alpha", "beta"]


def test_concurrent_index_writers_never_lose_a_record(bucket, tmp_path):
    """Rounds of two `cas-index` processes started together, each after uploading its own
    package: after every round the index names every package uploaded so far."""
    view = bucket.view
    url = f"{bucket.url}/{CHANNEL}"
    uploaded = [upload(view, tmp_path, "noarch", "seed")]
    raced = 0
    for round_ in range(5):
        processes = []
        for writer in ("a", "b"):
            uploaded.append(upload(view, tmp_path, "noarch", f"pkg-{writer}{round_}"))
            command = [sys.executable, "-m", "casconsole.cli.index", "--workers", "1", url]
            pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
            processes.append(subprocess.Popen(command, text=True, env=_env(bucket), **pipes))
        for process in processes:
            _, err = process.communicate(timeout=120)
            assert process.returncode == 0, err
            assert "Traceback" not in err
            raced += err.count("another writer's index came first")
        assert records(view, "noarch") == sorted(uploaded), f"round {round_}"
        for fn, record in repodata(view, "noarch")["packages.conda"].items():
            assert record["sha256"] == hashlib.sha256(view.get(f"{CHANNEL}/noarch/{fn}")).hexdigest()
    print(f"{raced} of 10 runs were overtaken and started again")  # seen: 4 of 10


def test_a_bucket_channel_that_is_not_there_or_a_subdir(bucket):
    nothing = cas_index(bucket, f"{bucket.url}/no-such-channel")
    assert nothing.returncode == 2
    assert "nothing there" in nothing.stderr and nothing.stderr.count("\n") == 1
    bad = cas_index(bucket, "s3://Bad_Bucket/x")
    assert bad.returncode == 2 and "not a bucket name" in bad.stderr


def test_many_packages_are_read_by_worker_processes(bucket, tmp_path):
    """Past a handful of files the packages are read by a pool of processes, which in a process
    running the bucket client's threads start as fresh interpreters (no fork)."""
    view = bucket.view
    made = sorted(upload(view, tmp_path, "noarch", f"many{i}") for i in range(12))
    done = cas_index(bucket, "--workers", "2", f"{bucket.url}/{CHANNEL}")
    assert done.returncode == 0, done.stderr
    assert "12 read" in done.stdout
    assert records(view, "noarch") == made
