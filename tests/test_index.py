"""The channel indexer: real package files in tmp_path, outputs read back from disk."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import threading
from pathlib import Path

import pytest
import zstandard

from casconsole.conda.archive import PackageSpec, build_package
from casconsole.index.channel import (
    ChannelError,
    PackageRead,
    Problem,
    ProblemFound,
    SubdirIndexed,
    index_channel,
    index_status,
)

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "JanCaha-conda-channel"
COMPARED = (
    "name",
    "version",
    "build",
    "build_number",
    "depends",
    "constrains",
    "license",
    "subdir",
    "size",
    "md5",
    "sha256",
)


def spec(name: str, version: str, subdir: str = "linux-64", **kw) -> PackageSpec:
    kw.setdefault("build", "h0_0")
    kw.setdefault("files", {f"lib/{name}.txt": f"{name} {version}".encode() * 40})
    return PackageSpec(name, version, subdir=subdir, **kw)


def make_channel(root: Path) -> Path:
    """A small channel with both formats, three subdirs and noarch."""
    channel = root / "channel"
    for subdir in ("linux-64", "osx-arm64", "win-64"):
        build_package(
            channel / subdir,
            spec("alpha", "1.9", subdir, depends=["zlib >=1.2"], license="MIT", timestamp=1_700_000_000_000),
            ".conda",
        )
        build_package(
            channel / subdir,
            spec("alpha", "1.10", subdir, depends=["zlib >=1.3"], constrains=["beta <2"], license="MIT"),
            ".tar.bz2",
        )
        build_package(channel / subdir, spec("beta", "2.0", subdir, build_number=3, build="h1_3"), ".conda")
    build_package(
        channel / "noarch",
        spec("gamma", "0.1", "noarch", noarch="python", license="BSD-3-Clause", build="pyh0_0"),
        ".tar.bz2",
    )
    return channel


def repodata(channel: Path, subdir: str) -> dict:
    return json.loads((channel / subdir / "repodata.json").read_bytes())


def records(channel: Path, subdir: str) -> dict[str, dict]:
    data = repodata(channel, subdir)
    return {**data["packages"], **data["packages.conda"]}


def collect(events: list):
    return events.append


# -- real data ---------------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is absent")
def test_real_channel_is_reproduced_record_for_record(tmp_path: Path) -> None:
    channel = tmp_path / "JanCaha"
    for subdir_dir in REALDATA.iterdir():
        (channel / subdir_dir.name).mkdir(parents=True)
        for package in subdir_dir.glob("*.conda"):
            shutil.copyfile(package, channel / subdir_dir.name / package.name)

    stats = index_channel(channel)

    assert stats.problems == []
    assert stats.packages == 52
    for subdir_dir in REALDATA.iterdir():
        original = json.loads((subdir_dir / "repodata.json").read_bytes())
        ours = repodata(channel, subdir_dir.name)
        assert ours["info"] == {"subdir": subdir_dir.name}
        assert ours["repodata_version"] == 1
        for key in ("packages", "packages.conda"):
            assert ours[key].keys() == original[key].keys()
            for fn, record in original[key].items():
                for field in COMPARED:
                    assert ours[key][fn].get(field) == record.get(field), (fn, field)
    # the .zst carries the same bytes
    linux = channel / "linux-64"
    zst = zstandard.ZstdDecompressor().decompressobj().decompress((linux / "repodata.json.zst").read_bytes())
    assert zst == (linux / "repodata.json").read_bytes()


# -- agreement with rattler --------------------------------------------------------------------

_RATTLER = textwrap.dedent(
    """
    import asyncio, sys
    import rattler.index
    asyncio.run(rattler.index.index_fs(sys.argv[1], write_zst=False, write_shards=False))
    """
)


def test_records_agree_with_rattler_index(tmp_path: Path) -> None:
    ours = make_channel(tmp_path)
    theirs = tmp_path / "rattler"
    shutil.copytree(ours, theirs)
    # rattler can crash at interpreter exit after writing: judge it by its files, not its status
    subprocess.run([sys.executable, "-c", _RATTLER, str(theirs)], capture_output=True, timeout=120)

    index_channel(ours)

    for subdir in ("linux-64", "osx-arm64", "win-64", "noarch"):
        expected = records(theirs, subdir)
        got = records(ours, subdir)
        assert got.keys() == expected.keys() and got
        for fn, record in expected.items():
            for field in (*COMPARED, "timestamp", "noarch"):
                assert got[fn].get(field) == record.get(field), (subdir, fn, field)
    formats = {fn.endswith(".conda") for fn in records(ours, "linux-64")}
    assert formats == {True, False}
    assert set(repodata(ours, "linux-64")["packages"]) == {"alpha-1.10-h0_0.tar.bz2"}


# -- outputs -----------------------------------------------------------------------------------


def test_outputs_layout_noarch_created_and_removed_kept(tmp_path: Path) -> None:
    channel = tmp_path / "internal"
    build_package(channel / "linux-64", spec("alpha", "1.0"), ".conda")
    (channel / "linux-64" / "repodata.json").write_text(
        json.dumps({"packages": {}, "removed": ["old-1.0-0.tar.bz2"]})
    )

    index_channel(channel)

    linux = repodata(channel, "linux-64")
    assert linux["removed"] == ["old-1.0-0.tar.bz2"]
    assert list(linux["packages.conda"]) == ["alpha-1.0-h0_0.conda"]
    assert linux["packages"] == {}
    assert repodata(channel, "noarch") == {
        "info": {"subdir": "noarch"},
        "packages": {},
        "packages.conda": {},
        "removed": [],
        "repodata_version": 1,
    }
    assert (channel / "noarch" / "repodata.json.zst").is_file()
    record = linux["packages.conda"]["alpha-1.0-h0_0.conda"]
    assert "arch" not in record and "platform" not in record  # as conda-index writes records


def test_channeldata_names_newest_version_and_follows_deletions(tmp_path: Path) -> None:
    channel = make_channel(tmp_path)

    index_channel(channel)

    data = json.loads((channel / "channeldata.json").read_bytes())
    assert data["channeldata_version"] == 1
    assert data["subdirs"] == ["linux-64", "noarch", "osx-arm64", "win-64"]
    alpha = data["packages"]["alpha"]
    assert alpha["version"] == "1.10"  # conda's order, not string order
    assert alpha["subdirs"] == ["linux-64", "osx-arm64", "win-64"]
    assert alpha["license"] == "MIT"
    assert alpha["summary"] == "The alpha package"
    assert data["packages"]["gamma"]["subdirs"] == ["noarch"]

    (channel / "noarch" / "gamma-0.1-pyh0_0.tar.bz2").unlink()
    index_channel(channel)

    data = json.loads((channel / "channeldata.json").read_bytes())
    assert set(data["packages"]) == {"alpha", "beta"}


# -- incremental -------------------------------------------------------------------------------


def test_unchanged_files_are_not_read_again_and_outputs_not_rewritten(tmp_path: Path) -> None:
    channel = make_channel(tmp_path)
    first: list = []
    index_channel(channel, sink=collect(first))
    assert len([e for e in first if isinstance(e, PackageRead)]) == 10
    finished = json.loads(json.dumps(first[-1].to_json()))  # events feed JSON-lines logs
    assert (finished["event"], finished["read"], finished["packages"]) == ("index_finished", 10, 10)
    outputs = [channel / "linux-64" / "repodata.json", channel / "channeldata.json"]
    before = [p.stat().st_mtime_ns for p in outputs]

    again: list = []
    stats = index_channel(channel, sink=collect(again))

    assert [e for e in again if isinstance(e, PackageRead)] == []
    assert (stats.read, stats.cached, stats.packages) == (0, 10, 10)
    assert not stats.written
    assert [p.stat().st_mtime_ns for p in outputs] == before
    assert all(isinstance(e, SubdirIndexed) and not e.written for e in again if isinstance(e, SubdirIndexed))


def test_changed_file_is_read_again_and_deleted_file_leaves(tmp_path: Path) -> None:
    channel = make_channel(tmp_path)
    index_channel(channel)
    linux = channel / "linux-64"
    # same name, new content: a rebuilt package
    build_package(linux, spec("beta", "2.0", build="h1_3", build_number=3, depends=["new-dep"]), ".conda")
    (linux / "alpha-1.9-h0_0.conda").unlink()
    # same bytes, new mtime: also read again (the key is name, size and mtime)
    osx = channel / "osx-arm64" / "beta-2.0-h1_3.conda"
    os.utime(osx, ns=(osx.stat().st_atime_ns, osx.stat().st_mtime_ns + 10**9))

    events: list = []
    stats = index_channel(channel, sink=collect(events))

    read = sorted((e.subdir, e.fn) for e in events if isinstance(e, PackageRead))
    assert read == [("linux-64", "beta-2.0-h1_3.conda"), ("osx-arm64", "beta-2.0-h1_3.conda")]
    by_subdir = {s.subdir: s for s in stats.subdirs}
    assert by_subdir["linux-64"].gone == 1 and by_subdir["linux-64"].written
    assert not by_subdir["win-64"].written
    now = records(channel, "linux-64")
    assert "alpha-1.9-h0_0.conda" not in now
    assert now["beta-2.0-h1_3.conda"]["depends"] == ["new-dep"]
    assert now["beta-2.0-h1_3.conda"]["size"] == (linux / "beta-2.0-h1_3.conda").stat().st_size


def test_pool_and_single_process_give_identical_outputs(tmp_path: Path) -> None:
    pooled = tmp_path / "pooled"
    for i in range(40):
        build_package(pooled / "linux-64", spec(f"pkg{i}", "1.0"), (".conda", ".tar.bz2")[i % 2])
    single = tmp_path / "single"
    shutil.copytree(pooled, single)

    a = index_channel(pooled, workers=2)
    b = index_channel(single, workers=1)

    assert a.read == b.read == 40
    for name in ("linux-64/repodata.json", "noarch/repodata.json", "channeldata.json"):
        assert (pooled / name).read_bytes() == (single / name).read_bytes()


def test_indexing_from_a_thread_uses_fresh_worker_processes(tmp_path: Path) -> None:
    # the console indexes from a worker thread: the pool must not fork a threaded process
    from_main = tmp_path / "main"
    for i in range(24):
        build_package(from_main / "noarch", spec(f"pkg{i}", "1.0", "noarch"), (".conda", ".tar.bz2")[i % 2])
    from_thread = tmp_path / "thread"
    shutil.copytree(from_main, from_thread)
    result: list = []
    thread = threading.Thread(target=lambda: result.append(index_channel(from_thread, workers=2)))

    thread.start()
    thread.join()
    index_channel(from_main, workers=2)

    assert result[0].read == 24 and result[0].problems == []
    for name in ("noarch/repodata.json", "channeldata.json"):
        assert (from_thread / name).read_bytes() == (from_main / name).read_bytes()


# -- bad packages ------------------------------------------------------------------------------


def _tar_bz2(path: Path, members: dict[str, bytes]) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:bz2") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())


def make_bad_channel(root: Path) -> Path:
    channel = make_channel(root)
    linux = channel / "linux-64"
    good = (linux / "beta-2.0-h1_3.conda").read_bytes()
    (linux / "truncated-1.0-0.conda").write_bytes(good[: len(good) // 2])
    (linux / "garbage-1.0-0.tar.bz2").write_bytes(b"not a package at all" * 50)
    _tar_bz2(linux / "noindex-1.0-0.tar.bz2", {"info/about.json": b"{}", "lib/x": b"x"})
    # built for osx-arm64, dropped into linux-64
    build_package(linux, spec("wrongsub", "1.0", "osx-arm64"), ".conda")
    (linux / "notes.txt").write_text("not a package")
    (linux / "somefolder").mkdir()
    return channel


EXPECTED_BAD = {
    "truncated-1.0-0.conda": "not a readable conda package",
    "garbage-1.0-0.tar.bz2": "not a readable conda package",
    "noindex-1.0-0.tar.bz2": "no info/index.json",
    "wrongsub-1.0-h0_0.conda": "built for subdir 'osx-arm64', but it is in linux-64/",
    "notes.txt": "not a conda package",
    "somefolder": "a folder that is not a conda package",
}


def test_bad_packages_are_each_reported_once_and_left_out(tmp_path: Path) -> None:
    channel = make_bad_channel(tmp_path)
    events: list = []

    stats = index_channel(channel, sink=collect(events))

    found = [e for e in events if isinstance(e, ProblemFound)]
    assert sorted(e.fn for e in found) == sorted(EXPECTED_BAD)
    for problem in stats.problems:
        assert problem.subdir == "linux-64"
        assert EXPECTED_BAD[problem.fn] in problem.reason
    assert set(records(channel, "linux-64")) == {
        "alpha-1.9-h0_0.conda",
        "alpha-1.10-h0_0.tar.bz2",
        "beta-2.0-h1_3.conda",
    }
    # a warm run remembers them without opening anything
    events.clear()
    again = index_channel(channel, sink=collect(events))
    assert again.read == 0
    assert sorted(again.problems) == sorted(stats.problems)


def test_a_fixed_bad_package_is_read_again_and_indexed(tmp_path: Path) -> None:
    channel = make_bad_channel(tmp_path)
    index_channel(channel)
    fixed = channel / "linux-64" / "truncated-1.0-0.conda"
    fixed.unlink()
    build_package(channel / "linux-64", spec("truncated", "1.0", build="0"), ".conda")

    stats = index_channel(channel)

    assert "truncated-1.0-0.conda" in records(channel, "linux-64")
    assert "truncated-1.0-0.conda" not in {p.fn for p in stats.problems}


def test_strict_replaces_no_output_when_there_are_problems(tmp_path: Path) -> None:
    channel = make_channel(tmp_path)
    index_channel(channel)
    before = (channel / "linux-64" / "repodata.json").read_bytes()
    build_package(channel / "linux-64", spec("delta", "1.0"), ".conda")
    (channel / "linux-64" / "junk.conda").write_bytes(b"junk")

    stats = index_channel(channel, strict=True)

    assert stats.withheld and not stats.written
    assert [p.fn for p in stats.problems] == ["junk.conda"]
    assert (channel / "linux-64" / "repodata.json").read_bytes() == before
    assert not index_status(channel).fresh
    # without --strict the same run publishes the good package, from the cache
    relaxed = index_channel(channel)
    assert relaxed.read == 0 and relaxed.written
    assert "delta-1.0-h0_0.conda" in records(channel, "linux-64")


# -- status ------------------------------------------------------------------------------------


def test_status_counts_new_changed_missing_without_writing(tmp_path: Path) -> None:
    channel = make_channel(tmp_path)

    never = index_status(channel)
    assert not never.fresh
    linux = next(s for s in never.subdirs if s.subdir == "linux-64")
    assert (linux.new, linux.indexed_at, linux.fresh) == (3, None, False)
    assert not (channel / "linux-64" / "repodata.json").exists()
    assert not (channel / ".cache").exists()

    index_channel(channel)
    indexed = index_status(channel)
    assert indexed.fresh and indexed.channeldata_fresh
    assert {s.subdir: s.packages for s in indexed.subdirs} == {
        "linux-64": 3,
        "noarch": 1,
        "osx-arm64": 3,
        "win-64": 3,
    }
    assert all(s.indexed_at is not None for s in indexed.subdirs)

    build_package(channel / "linux-64", spec("delta", "1.0"), ".conda")
    touched = channel / "linux-64" / "beta-2.0-h1_3.conda"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    (channel / "win-64" / "beta-2.0-h1_3.conda").unlink()
    stale = {s.subdir: s for s in index_status(channel).subdirs}
    assert (stale["linux-64"].new, stale["linux-64"].changed, stale["linux-64"].missing) == (1, 1, 0)
    assert (stale["win-64"].new, stale["win-64"].changed, stale["win-64"].missing) == (0, 0, 1)
    assert stale["osx-arm64"].fresh and not stale["linux-64"].fresh and not stale["win-64"].fresh

    # another tool replacing repodata.json makes the subdir stale too
    index_channel(channel)
    (channel / "osx-arm64" / "repodata.json").write_text("{}")
    replaced = {s.subdir: s for s in index_status(channel).subdirs}["osx-arm64"]
    assert replaced.outputs_changed and not replaced.fresh
    repaired = {s.subdir: s for s in index_channel(channel).subdirs}
    assert repaired["osx-arm64"].written and not repaired["linux-64"].written
    assert index_status(channel).fresh

    (channel / "channeldata.json").unlink()
    assert not index_status(channel).channeldata_fresh
    assert index_channel(channel).channeldata_written
    assert index_status(channel).fresh


def test_status_to_json_is_plain_json(tmp_path: Path) -> None:
    channel = make_channel(tmp_path)
    index_channel(channel)
    data = json.loads(json.dumps(index_status(channel).to_json()))
    assert data["fresh"] is True
    assert data["subdirs"][0]["indexed_at"].endswith("Z")


# -- bad input ---------------------------------------------------------------------------------


def test_folders_that_are_not_channels_are_refused(tmp_path: Path) -> None:
    channel = make_channel(tmp_path)
    (tmp_path / "file").write_text("x")
    cases = {
        tmp_path / "missing": "no such folder",
        tmp_path / "file": "not a folder",
        channel / "linux-64": "this is a subdir",
        tmp_path: "this folder holds channels (channel)",
    }
    for path, message in cases.items():
        with pytest.raises(ChannelError, match=message.replace("(", r"\(").replace(")", r"\)")):
            index_channel(path)
        with pytest.raises(ChannelError):
            index_status(path)


def test_a_second_run_on_the_same_channel_is_refused(tmp_path: Path) -> None:
    fcntl = pytest.importorskip("fcntl")
    channel = make_channel(tmp_path)
    index_channel(channel)
    with open(channel / ".cache" / "index.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ChannelError, match="another index run"):
            index_channel(channel)


def test_problem_reads_as_path_and_reason() -> None:
    assert str(Problem("linux-64", "x.conda", "no info/index.json")) == "linux-64/x.conda: no info/index.json"


# -- readers during a re-index ----------------------------------------------------------------


def test_concurrent_readers_never_see_a_partial_repodata(tmp_path: Path) -> None:
    channel = tmp_path / "busy"
    for i in range(150):
        build_package(channel / "linux-64", spec(f"pkg{i:03d}", "1.0"), ".conda")
    index_channel(channel, workers=1)
    target = channel / "linux-64" / "repodata.json"
    zst = channel / "linux-64" / "repodata.json.zst"
    stop = threading.Event()
    seen: list[int] = []
    failures: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.append(len(json.loads(target.read_bytes())["packages.conda"]))
                json.loads(zstandard.ZstdDecompressor().decompressobj().decompress(zst.read_bytes()))
            except Exception as exc:  # any failure here is what the test looks for
                failures.append(repr(exc))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for round_ in range(12):
            # each round changes the record set, so every re-index rewrites both outputs
            build_package(channel / "linux-64", spec(f"extra{round_:02d}", "1.0"), ".conda")
            (channel / "linux-64" / f"pkg{round_:03d}-1.0-h0_0.conda").unlink()
            assert index_channel(channel, workers=1).subdirs[0].written
    finally:
        stop.set()
        thread.join()
    assert failures == []
    assert len(seen) > 12 and set(seen) == {150}


# -- the core stays UI-free --------------------------------------------------------------------


def test_the_index_core_imports_no_ui() -> None:
    code = (
        "import sys, casconsole.index.channel, casconsole.index.read, casconsole.index.channeldata\n"
        "ui = [m for m in ('textual', 'rich') if m in sys.modules]\n"
        "assert not ui, ui"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_package_too_big_to_hold_in_memory_is_streamed(tmp_path: Path) -> None:
    channel = tmp_path / "big"
    payload = os.urandom(17 << 20)  # above the in-memory limit, incompressible
    path = build_package(channel / "linux-64", spec("huge", "1.0", files={"lib/blob": payload}), ".conda")

    index_channel(channel, workers=1)

    record = records(channel, "linux-64")["huge-1.0-h0_0.conda"]
    data = path.read_bytes()
    assert record["size"] == len(data)
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["md5"] == hashlib.md5(data).hexdigest()
