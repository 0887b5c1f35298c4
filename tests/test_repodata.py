"""Reading repodata: every real-world variant, from http, file:// and plain paths."""

from __future__ import annotations

import json

import msgspec
import pytest
import zstandard

from casconsole.conda.repodata import decode_repodata, decompress
from casconsole.demo import DemoServer
from casconsole.errors import RepoDataError, RepoDataNotFound
from casconsole.upstream.policy import NetworkPolicy
from casconsole.upstream.repodata import Upstream
from casconsole.upstream.repodata import load_repodata as _load


def load_repodata(remote_url, subdir):
    return _load(remote_url, subdir, NetworkPolicy(retries=0))


def fetch_repodata_bytes(remote_url, subdir):
    with Upstream(remote_url, NetworkPolicy(retries=0)) as upstream:
        fetched = upstream.fetch(subdir)
    return fetched.url, fetched.data


def test_every_real_repodata_file_parses_with_its_record_count(realdata):
    manifest = json.loads((realdata / "MANIFEST.json").read_text())
    checked = 0
    for entry in manifest:
        if entry.get("kind") != "repodata" or "channeldata" in entry["file"]:
            continue
        path = realdata / entry["file"]
        rd = decode_repodata(decompress(path.name, path.read_bytes()), "x", str(path))
        assert len(rd.records) == (entry.get("n_records") or 0), path
        assert rd.warnings == [], path
        assert all(r.fn and r.name and isinstance(r.depends, list) for r in rd.records)
        checked += 1
    assert checked >= 40


def test_metadata_key_and_extra_fields(realdata):
    path = realdata / "conda-subchannel-demo" / "linux-64" / "repodata.json"
    rd = decode_repodata(path.read_bytes(), "linux-64", str(path))
    assert rd.info.get("subdir") == "linux-64"
    assert len(rd.records) > 1000


def test_repodata_version_2_base_url(realdata):
    path = realdata / "mamba/libmamba/tests/data/repodata/conda-forge-repodata-version-2.json"
    rd = decode_repodata(path.read_bytes(), "linux-64", "http://mirror/x/linux-64/repodata.json")
    assert rd.repodata_version == 2 and rd.base_url
    fn = rd.records[0].fn
    assert rd.package_url(fn) == rd.base_url.rstrip("/") + "/" + fn


def test_minimal_records_and_null_fields():
    data = {
        "packages": {"a-1-0.tar.bz2": {"name": "a", "version": "1", "depends": None, "constrains": None}},
        "packages.conda": {"b-2-0.conda": {"name": "b", "version": "2", "build": "0", "size": 5}},
    }
    rd = decode_repodata(json.dumps(data).encode(), "noarch")
    assert [(r.fn, r.depends, r.license, r.sha256) for r in rd.records] == [
        ("a-1-0.tar.bz2", [], None, None),
        ("b-2-0.conda", [], None, None),
    ]
    assert rd.info == {} and rd.package_url("b-2-0.conda") == "b-2-0.conda"


def test_odd_records_are_left_out_with_a_warning_not_the_whole_subdir():
    data = {"packages": {"ok-1-0.tar.bz2": {"name": "ok", "version": "1"}, "bad.tar.bz2": {"version": 3}}}
    rd = decode_repodata(json.dumps(data).encode(), "linux-64", "up/linux-64/repodata.json")
    assert [r.fn for r in rd.records] == ["ok-1-0.tar.bz2"]
    assert len(rd.warnings) == 1 and rd.warnings[0].startswith("bad.tar.bz2: record left out")


@pytest.mark.parametrize("payload", [b"{not json", b"[1, 2]", b'{"packages": 5}'])
def test_garbage_is_a_clear_error(payload):
    with pytest.raises(RepoDataError, match="up/linux-64/repodata.json"):
        decode_repodata(payload, "linux-64", "up/linux-64/repodata.json")


def _channel(tmp_path, name, data: bytes):
    (tmp_path / "linux-64").mkdir(parents=True, exist_ok=True)
    (tmp_path / "linux-64" / name).write_bytes(data)
    return tmp_path


def test_prefers_zst_and_falls_back_to_json_then_bz2(tmp_path):
    plain = msgspec.json.encode({"packages": {"a-1-0.tar.bz2": {"name": "a", "version": "1"}}})
    zst = msgspec.json.encode({"packages": {"z-1-0.tar.bz2": {"name": "z", "version": "1"}}})
    _channel(tmp_path, "repodata.json", plain)
    assert [r.name for r in load_repodata(str(tmp_path), "linux-64").records] == ["a"]
    _channel(tmp_path, "repodata.json.zst", zstandard.ZstdCompressor().compress(zst))
    rd = load_repodata(tmp_path.as_uri(), "linux-64")
    assert [r.name for r in rd.records] == ["z"] and rd.source.endswith("repodata.json.zst")


def test_missing_subdir_is_an_error_but_missing_noarch_is_empty(tmp_path):
    with pytest.raises(RepoDataNotFound, match="no repodata.json"):
        load_repodata(str(tmp_path), "linux-64")
    assert load_repodata(str(tmp_path), "noarch").records == []


def test_corrupt_zst_is_a_clear_error(tmp_path):
    _channel(tmp_path, "repodata.json.zst", b"definitely not zstd")
    with pytest.raises(RepoDataError, match="cannot decompress"):
        load_repodata(str(tmp_path), "linux-64")


def test_over_http_from_the_demo_upstream(demo_url, demo_channel):
    url, data = fetch_repodata_bytes(demo_url, "linux-64")
    assert url == f"{demo_url}/linux-64/repodata.json.zst"
    assert data == (demo_channel / "linux-64" / "repodata.json").read_bytes()
    rd = load_repodata(demo_url, "noarch")
    assert {"flask", "requests", "conda"} <= {r.name for r in rd.records}


def test_http_errors_name_the_url(tmp_path):
    with DemoServer(tmp_path) as server, pytest.raises(RepoDataNotFound, match=server.url):
        load_repodata(server.url, "linux-64")
    with pytest.raises(RepoDataError, match="cannot connect"):
        load_repodata(server.url, "linux-64")  # the server is gone now


def test_unsupported_scheme():
    with pytest.raises(RepoDataError, match="unsupported URL scheme 'ftp'"):
        load_repodata("ftp://example.invalid/ch", "linux-64")
