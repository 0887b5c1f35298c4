"""Files of a MiB and more: written around the page cache (O_DIRECT) in aligned blocks, the
unaligned tail through it; an interrupted one resumes from what is on disk."""

from __future__ import annotations

import os

import pytest
from upstream_server import Fault, Upstream, make_channel, mirror_problems, sha256_of, spec

from casconsole.settings import load_settings
from casconsole.sync.engine import Sync
from casconsole.sync.fetch import CHUNK, DIRECT_MIN
from casconsole.sync.partfile import BLOCK, Writer

SUBDIRS = ("linux-64", "noarch")
BIG = "big-1.0-0.conda"


def settings_for(url, mirror, **keys):
    values = {"remote_url": url, "mirror_dir": str(mirror), "platforms": ["linux-64"], "retries": 0, **keys}
    return load_settings(cli={key: (value, "test") for key, value in values.items()})


@pytest.fixture
def upstream(tmp_path):
    root = tmp_path / "upstream"
    big, small = spec("big", "1.0", "linux-64", kb=2500), spec("small", "1.0", "linux-64")
    make_channel(root, {"linux-64": [big, small]})
    with Upstream(root) as server:
        yield server


def direct_supported(folder) -> bool:
    try:
        os.close(os.open(folder / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644))
    except OSError:
        return False
    return True


def test_a_big_file_with_an_unaligned_size_arrives_whole(upstream, tmp_path):
    size = (upstream.root / "linux-64" / BIG).stat().st_size
    assert size >= DIRECT_MIN and size % BLOCK, "the test needs a big file with a tail"
    stats = Sync(settings_for(upstream.url, tmp_path / "mirror")).run()
    assert (stats.state, stats.downloaded) == ("done", 2)
    assert mirror_problems(tmp_path / "mirror" / "pkgs", upstream.root, SUBDIRS) == []
    mirrored = tmp_path / "mirror" / "pkgs" / "linux-64" / BIG
    assert sha256_of(mirrored) == sha256_of(upstream.root / "linux-64" / BIG)
    assert mirrored.stat().st_mode & 0o777 == 0o644


def test_a_big_file_cut_short_resumes_where_it_stopped(upstream, tmp_path):
    mirror = tmp_path / "mirror"
    cut = 1_500_000 + 123
    upstream.inject(f"linux-64/{BIG}", Fault.truncate(cut))
    stats = Sync(settings_for(upstream.url, mirror)).run()
    assert stats.state == "failed" and [f[1] for f in stats.failures] == [BIG]
    part = mirror / "pkgs" / "linux-64" / f".{BIG}.part"
    kept = part.stat().st_size
    assert kept == cut  # the stream ended early but cleanly: all it brought is on disk
    assert not (mirror / "pkgs" / "linux-64" / BIG).exists()

    stats = Sync(settings_for(upstream.url, mirror)).run()
    assert (stats.state, stats.resumed) == ("done", 1)
    assert upstream.seen(f"linux-64/{BIG}")[-1].range == f"bytes={kept}-"
    assert mirror_problems(mirror / "pkgs", upstream.root, SUBDIRS) == []


def test_a_big_file_reset_midway_resumes_from_its_last_whole_block(upstream, tmp_path):
    mirror = tmp_path / "mirror"
    upstream.inject(f"linux-64/{BIG}", Fault.reset_after(1_500_123))
    stats = Sync(settings_for(upstream.url, mirror)).run()
    assert stats.state == "failed" and [f[1] for f in stats.failures] == [BIG]
    kept = (mirror / "pkgs" / "linux-64" / f".{BIG}.part").stat().st_size
    # on disk: what came before the read the reset broke (a read's window is at most CHUNK),
    # and with O_DIRECT whole blocks only; the rest comes again
    assert 1_500_123 - CHUNK - BLOCK < kept <= 1_500_123
    assert kept % BLOCK == 0 or not direct_supported(tmp_path)

    stats = Sync(settings_for(upstream.url, mirror)).run()
    assert (stats.state, stats.resumed) == ("done", 1)
    assert upstream.seen(f"linux-64/{BIG}")[-1].range == f"bytes={kept}-"
    assert mirror_problems(mirror / "pkgs", upstream.root, SUBDIRS) == []


def test_the_writer_goes_around_the_page_cache_until_the_tail(tmp_path):
    data = os.urandom(3 * BLOCK + 5000)
    fd = os.open(tmp_path / "file", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        writer = Writer(fd, direct=True)
        direct = direct_supported(tmp_path)
        assert writer.direct is direct
        assert bool(_flags(fd) & os.O_DIRECT) is direct
        # a non-final piece: with O_DIRECT only its whole blocks go; the caller keeps the rest
        buffer = _aligned(data)
        written = writer.write(buffer[: BLOCK + 100], final=False)
        assert written == (BLOCK if direct else BLOCK + 100)
        rest = bytes(buffer[written : BLOCK + 100]) + data[BLOCK + 100 :]
        buffer = _aligned(rest)
        assert writer.write(buffer[: len(rest)], final=True) == len(rest)
        assert not _flags(fd) & os.O_DIRECT  # the tail went through the page cache
    finally:
        os.close(fd)
    assert (tmp_path / "file").read_bytes() == data


def _flags(fd: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_GETFL)


def _aligned(data: bytes) -> memoryview:
    """`data` in a page-aligned buffer, as the fetcher's own (an anonymous mapping)."""
    import mmap

    buffer = mmap.mmap(-1, len(data) + BLOCK)
    buffer[: len(data)] = data
    return memoryview(buffer)


def test_without_unnamed_files_downloads_go_through_named_parts(upstream, tmp_path):
    """Where O_TMPFILE or /proc is missing, the probe says so and files get their `.part` name
    from the start: same outcome, and a cut file still resumes."""
    import threading

    from casconsole.sync.fetch import Fetcher, FileJob
    from casconsole.upstream.policy import NetworkPolicy

    folder = tmp_path / "mirror"
    folder.mkdir()
    fetcher = Fetcher(NetworkPolicy(10, 0, True, None), lambda event: None, threading.Event())
    fetcher._folders[folder] = None  # what the probe answers on such a filesystem
    repodata = upstream_records(upstream)
    url = f"{upstream.url}/linux-64"
    jobs = [FileJob("linux-64", fn, f"{url}/{fn}", str(folder), r["size"], r["sha256"], r["md5"])
            for fn, r in repodata.items()]  # fmt: skip
    upstream.inject(f"linux-64/{BIG}", Fault.truncate(1_000_000))
    outcomes = [fetcher.run(job) for job in jobs]
    fetcher.close()
    assert [(o.job.fn, o.ok) for o in outcomes] == [(BIG, False), ("small-1.0-0.conda", True)]
    assert (folder / f".{BIG}.part").stat().st_size == 1_000_000
    assert fetcher.run(jobs[0]).resumed
    assert sorted(p.name for p in folder.iterdir()) == [BIG, "small-1.0-0.conda"]
    for fn in (BIG, "small-1.0-0.conda"):
        assert sha256_of(folder / fn) == sha256_of(upstream.root / "linux-64" / fn)


def test_fast_downloads_leave_no_names_behind_but_their_own(upstream, tmp_path):
    stats = Sync(settings_for(upstream.url, tmp_path / "mirror")).run()
    assert stats.state == "done"
    folder = tmp_path / "mirror" / "pkgs" / "linux-64"
    assert sorted(p.name for p in folder.iterdir()) == [
        BIG, "repodata.json", "repodata.json.zst", "small-1.0-0.conda"
    ]  # fmt: skip


def upstream_records(upstream) -> dict:
    import json

    repodata = json.loads((upstream.root / "linux-64" / "repodata.json").read_bytes())
    return dict(sorted({**repodata["packages"], **repodata["packages.conda"]}.items()))


def test_the_probe_finds_unnamed_files_here_and_leaves_nothing(tmp_path):
    from casconsole.sync.partfile import probe_unnamed

    dirfd = probe_unnamed(tmp_path)
    assert isinstance(dirfd, int)  # Linux with /proc: the sync's usual path
    os.close(dirfd)
    assert list(tmp_path.iterdir()) == []
