"""Issue 13, point 3: upstream repodata is hostile input.

File names are percent-encoded in URLs (`?`, `#`, `%`, a space fetch the right file); names
with non-ASCII letters, C0/C1 or bidi controls are refused with a warning and the rest of the
sync goes on; `info.base_url` is followed only over http(s) and to upstream's own origin
unless `base_url_origins` allows another; an unexpected error fetching one file fails that
file only, never the sync or its repodata write."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from upstream_server import Upstream, make_channel, mirror_problems, record_of, spec

from casconsole.conda.repodata import write_repodata
from casconsole.settings import load_settings
from casconsole.sync.engine import Sync
from casconsole.sync.fetch import Fetcher, FileJob
from casconsole.upstream.policy import NetworkPolicy

ODD_BUT_FINE = ["we?ird-1.0-0.conda", "has#hash-1.0-0.conda", "pct%41-1.0-0.conda", "with space-1.0-0.conda"]
HOSTILE = {
    "p\u0430ndas-1.0-0.conda": "non-ASCII",  # a Cyrillic a
    "invoice-1.0-0\u202egpj.conda": "bidi control",
    "c1-1.0-0\x85.conda": "control characters",
    "caf\u00e9-1.0-0.conda": "non-ASCII",
}


def settings_for(url: str, mirror: Path, **keys):
    values = {"remote_url": url, "mirror_dir": str(mirror), "platforms": ["linux-64"], "retries": 0, **keys}
    return load_settings(cli={key: (value, "test") for key, value in values.items()})


def add_copies(root: Path, repodata: dict, subdir: str, source: Path, names) -> None:
    """Files under `names` with the bytes and record of `source`, listed in the repodata."""
    record = next(r for r in repodata["packages.conda"].values())
    for name in names:
        shutil.copyfile(source, root / subdir / name)
        repodata["packages.conda"][name] = dict(record)


@pytest.fixture
def upstream(tmp_path):
    root = tmp_path / "upstream"
    written = make_channel(root, {"linux-64": [spec("good", "1.0", "linux-64")], "noarch": [spec("helper")]})
    source = root / "linux-64" / "good-1.0-0.conda"
    add_copies(root, written["linux-64"], "linux-64", source, ODD_BUT_FINE + list(HOSTILE))
    write_repodata(root / "linux-64", written["linux-64"])
    with Upstream(root) as server:
        yield server, root, written


def test_odd_names_are_fetched_and_hostile_ones_refused_while_the_sync_goes_on(upstream, tmp_path):
    server, root, _ = upstream
    mirror = tmp_path / "mirror"
    events = []
    stats = Sync(settings_for(server.url, mirror), events.append).run()
    assert stats.state == "done", (stats.error, stats.failures)
    folder = mirror / "pkgs" / "linux-64"
    for name in ["good-1.0-0.conda", *ODD_BUT_FINE]:
        assert (folder / name).read_bytes() == (root / "linux-64" / name).read_bytes(), name
    for name in HOSTILE:
        assert not (folder / name).exists()
    served = json.loads((folder / "repodata.json").read_bytes())["packages.conda"]
    assert set(served) == {"good-1.0-0.conda", *ODD_BUT_FINE}
    warnings = [e.message for e in events if e.kind == "warning"]
    for name, why in HOSTILE.items():
        assert any(repr(name) in w and why in w for w in warnings), (name, warnings)
    assert not mirror_problems(mirror / "pkgs", root, ["linux-64", "noarch"])
    # the server got each whole name (sent encoded): not a path cut at `?` or `#`
    asked = {s.path for s in server.requests}
    assert {f"linux-64/{name}" for name in ODD_BUT_FINE} <= asked


def test_base_url_to_a_local_file_is_refused(upstream, tmp_path):
    """The attack: base_url points at file:// where a file with the record's size and hash
    waits; the sync must not copy it into a public channel."""
    server, root, written = upstream
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = build_secret(outside, root)
    repodata = written["noarch"]
    repodata["info"]["base_url"] = outside.as_uri() + "/"
    repodata["packages.conda"][secret.name] = record_of(spec("secret"), secret)
    write_repodata(root / "noarch", repodata)
    events = []
    stats = Sync(settings_for(server.url, tmp_path / "mirror"), events.append).run()
    assert not (tmp_path / "mirror" / "pkgs" / "noarch" / secret.name).exists()
    assert any("base_url" in e.message and "refused" in e.message for e in events if e.kind == "warning")
    assert [f[1] for f in stats.failures] == [secret.name]  # looked for beside the repodata: 404
    assert (tmp_path / "mirror" / "pkgs" / "noarch" / "helper-1.0-0.conda").exists()


def build_secret(outside: Path, root: Path) -> Path:
    from casconsole.conda.archive import build_package

    return build_package(outside, spec("secret"), ".conda")


def test_base_url_to_another_origin_needs_the_setting(upstream, tmp_path):
    server, root, written = upstream
    cdn_root = tmp_path / "cdn"
    shutil.copytree(root / "noarch", cdn_root / "noarch")  # a CDN with upstream's files
    from casconsole.conda.archive import build_package

    moved = build_package(cdn_root / "noarch", spec("moved"), ".conda")
    repodata = written["noarch"]
    repodata["packages.conda"][moved.name] = record_of(spec("moved"), moved)
    with Upstream(cdn_root) as cdn:
        repodata["info"]["base_url"] = cdn.url + "/noarch/"
        write_repodata(root / "noarch", repodata)
        refused = Sync(settings_for(server.url, tmp_path / "m1")).run()
        assert [f[1] for f in refused.failures] == [moved.name]
        assert not cdn.requests  # nothing was asked of the other origin
        allowed = Sync(settings_for(server.url, tmp_path / "m2", base_url_origins=[cdn.url])).run()
        assert allowed.state == "done", allowed.failures
        got = tmp_path / "m2" / "pkgs" / "noarch" / moved.name
        assert got.read_bytes() == moved.read_bytes()
        # a base_url on upstream's own origin is followed without any setting
        shutil.copytree(cdn_root / "noarch", root / "moved-here", ignore=shutil.ignore_patterns("repo*"))
        repodata["info"]["base_url"] = server.url + "/moved-here/"
        write_repodata(root / "noarch", repodata)
        same = Sync(settings_for(server.url, tmp_path / "m3")).run()
        assert same.state == "done", same.failures
        assert any(s.path == f"moved-here/{moved.name}" for s in server.requests)


def test_an_unexpected_error_fails_that_file_only(upstream, tmp_path):
    server, root, _ = upstream
    policy = NetworkPolicy.of(settings_for(server.url, tmp_path / "mirror"))
    folder = tmp_path / "dest"
    folder.mkdir()
    data = (root / "linux-64" / "good-1.0-0.conda").read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    fetcher = Fetcher(policy, lambda event: None, threading.Event())
    try:
        # a URL http.client cannot send (a record that slipped past the screening would make
        # one): the file fails with the reason, nothing is raised, the next file is fetched
        bad = FileJob(
            "linux-64", "x.conda", server.url + "/linux-64/p\u0430ndas.conda", str(folder), 1, sha, None
        )
        outcome = fetcher.run(bad)
        assert not outcome.ok
        assert "unexpected error" in outcome.reason
        good = FileJob("linux-64", "good-1.0-0.conda", server.url + "/linux-64/good-1.0-0.conda",
                       str(folder), len(data), sha, None)  # fmt: skip
        assert fetcher.run(good).ok
    finally:
        fetcher.close_thread()
        fetcher.close()
    assert (folder / "good-1.0-0.conda").read_bytes() == data


def test_cas_sync_says_what_it_refused_and_exits_0(upstream, tmp_path):
    server, _, _ = upstream
    config = tmp_path / "cas.yaml"
    config.write_text(f"remote_url: {server.url}\nmirror_dir: {tmp_path / 'mirror'}\nplatforms: [linux-64]\n")
    result = subprocess.run(
        [sys.executable, "-m", "casconsole.cli.sync", "--config", str(config)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    text = result.stdout + result.stderr
    assert "refused" in text and "U+0430" in text
