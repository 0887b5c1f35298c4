"""End to end across an air gap, every step a command as a site runs it.

A mirror synced from an upstream on 127.0.0.1, with an internal channel indexed by cas-index;
the offline side made from it as a site's first copy (a whole-mirror bundle imported into an
empty folder). Then upstream changes (new, changed and removed packages; a new internal
package), the connected side syncs, the offline side writes its manifest, the connected side
exports a signed bundle since it, the offline side imports it with the trusted key set: the two
mirrors are equal file for file and in repodata, and py-rattler installs the new packages from
the offline side through a real cas-server.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from bundle_support import (
    INTERNAL,
    cas_ok,
    make_sites,
    read_json,
    served_problems,
    snapshot,
    tree,
    upstream_specs,
)
from conda_client import installed_as_archived, solve_and_install
from test_server_support import Server, server_env
from upstream_server import Upstream, make_channel


@pytest.fixture
def sites(tmp_path):
    root = tmp_path / "upstream"
    make_channel(root, upstream_specs(1))
    with Upstream(root) as upstream:
        yield make_sites(tmp_path, upstream)


def test_first_copy_is_the_whole_mirror(sites):
    """The fixture's first copy: every channel, file for file, and a mirror clients can use."""
    assert tree(sites.offline) == tree(sites.connected)
    assert {p.split("/")[0] for p in tree(sites.offline)} == {"pkgs", INTERNAL}
    assert served_problems(sites.offline) == []


def test_update_crosses_the_gap_and_installs_through_cas_server(sites, tmp_path):
    offline, connected = sites.offline, sites.connected
    manifest = tmp_path / "offline-state.json"
    cas_ok("--mirror-dir", str(offline), "--manifest", str(manifest))
    sites.change_upstream()
    key = tmp_path / "keys" / "cas-mirror"
    cas_ok("--gen-key", str(key))

    stick = tmp_path / "stick"
    exported = cas_ok(
        "--mirror-dir", str(connected), "--export", str(stick), "--since", str(manifest),
        "--volume-size", "1M", "--sign-key", str(key), "--no-progress",
    )  # fmt: skip
    # the size is stated before anything is written: new newtool, py9, teamapp; lib1 rebuilt; lib2 gone
    lines = exported.stdout.splitlines()
    stated = next(n for n, line in enumerate(lines) if "bundle of" in line)
    writing = next(n for n, line in enumerate(lines) if line.startswith("writing:"))
    assert stated < writing and "3 new, 1 changed, 1 deleted, 1.3 MB" in lines[stated], exported.stdout
    assert "2 volume(s)" in lines[stated]
    volumes = sorted(stick.glob("bundle.*"))  # newtool (1.2 MB) spans the two
    assert [v.name for v in volumes] == ["bundle.001", "bundle.002"]
    assert volumes[0].stat().st_size == 1 << 20
    assert (stick / "manifest.json.sig").is_file()

    env = server_env(CAS_MIRROR_BUNDLE_TRUSTED_KEY=f"{key}.pub")
    imported = cas_ok("--mirror-dir", str(offline), "--import", str(stick), "--no-progress", env=env)
    assert "matches its source file for file" in imported.stdout, imported.stdout
    assert "signed, checked with" in imported.stdout

    # file for file, repodata included, and the repodata parses to the same records
    assert tree(offline) == tree(connected)
    for repodata in connected.glob("*/*/repodata.json*"):
        if repodata.suffix in (".json", ".zst"):
            assert read_json(offline / repodata.relative_to(connected)) == read_json(repodata)
    assert not (offline / "pkgs/linux-64/lib2-1.0-0.conda").exists()
    assert served_problems(offline) == []

    # a second import of the same bundle changes nothing
    before = snapshot(offline)
    again = cas_ok("--mirror-dir", str(offline), "--import", str(stick), env=env)
    assert "already imported" in again.stdout
    assert snapshot(offline) == before

    # the offline side serves the update: py-rattler installs the new packages over HTTP
    with Server(offline, private="no-private-channel") as srv:
        prefix = tmp_path / "env"
        records = solve_and_install(f"{srv.url}/pkgs", ["newtool"], prefix, tmp_path / "cache")
        got = {r.name.normalized: str(r.version) for r in records}
        assert got == {"newtool": "2.0", "lib0": "1.0", "py0": "1.0"}
        assert installed_as_archived(prefix, offline / "pkgs/linux-64/newtool-2.0-0.conda") > 0
        prefix2 = tmp_path / "env2"
        records = solve_and_install(f"{srv.url}/{INTERNAL}", ["teamapp"], prefix2, tmp_path / "cache2")
        assert {r.name.normalized for r in records} == {"teamapp", "teamlib"}
        assert (prefix2 / "share/teamapp/README").read_bytes() == b"teamapp 1.1\n"
    shutil.rmtree(prefix, ignore_errors=True)


def test_manifest_reads_the_store_and_rehash_reads_the_disk(sites, tmp_path):
    """--manifest trusts the verified-file store (no package read); --rehash reads every file
    and finds one changed behind the store's back (same size, same mtime)."""
    offline = sites.offline
    first = cas_ok("--mirror-dir", str(offline), "--manifest", str(tmp_path / "a.json"), "--json")
    hashed = next(e for e in map(_json, first.stdout.splitlines()) if e["event"] == "stage")
    packages = sum(1 for p in tree(offline) if p.endswith((".conda", ".tar.bz2")))
    index_files = len(tree(offline)) - packages
    assert hashed["files"] == index_files  # only repodata and channeldata: every package is on record

    victim = offline / "pkgs/linux-64/lib3-1.0-0.conda"
    st = victim.stat()
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    cas_ok("--mirror-dir", str(offline), "--manifest", str(tmp_path / "b.json"))
    rehashed = cas_ok("--mirror-dir", str(offline), "--manifest", str(tmp_path / "c.json"), "--rehash")
    assert f"{packages + index_files} hashed" in rehashed.stdout.replace(",", "")
    state = {e["path"]: e["sha256"] for e in read_json(tmp_path / "b.json")["files"]}
    state_rehashed = {e["path"]: e["sha256"] for e in read_json(tmp_path / "c.json")["files"]}
    differs = {p for p in state if state[p] != state_rehashed[p]}
    assert differs == {"pkgs/linux-64/lib3-1.0-0.conda"}


def _json(line: str) -> dict:
    return json.loads(line)
