"""End to end: conda clients (rattler) solve and install from cas-server over HTTP.

Private half: an internal channel built with real packages, indexed by `cas-index`, served
only under /t/<token>/. Public half: the demo upstream mirrored by `cas-sync`, then served.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conda_client import installed_as_archived, solve_and_install
from test_server_support import Server, cli, server_env

from casconsole.conda.archive import PackageSpec, build_package

PRIVATE = "internal-pkgs"
TIMESTAMP = 1_700_000_000_000


def _internal_specs() -> list[PackageSpec]:
    return [
        PackageSpec(
            "corelib", "1.0", subdir="noarch", timestamp=TIMESTAMP,
            files={"share/corelib/data.txt": b"corelib 1.0\n"},
        ),
        PackageSpec(
            "corelib", "2.1", subdir="noarch", timestamp=TIMESTAMP + 1,
            files={"share/corelib/data.txt": b"corelib 2.1\n", "share/corelib/extra.bin": bytes(range(256))},
        ),
        PackageSpec(
            "helper", "0.3", subdir="noarch", depends=["corelib >=2"], timestamp=TIMESTAMP,
            files={"share/helper/README": b"helper\n"},
        ),
        PackageSpec(
            "teamapp", "1.2", subdir="linux-64", depends=["helper", "corelib >=2,<3"],
            timestamp=TIMESTAMP, files={"bin/teamapp": b"#!/bin/sh\necho teamapp\n"},
        ),
    ]  # fmt: skip


def _payload_matches(prefix: Path, spec: PackageSpec) -> None:
    for rel, content in spec.files.items():
        assert (prefix / rel).read_bytes() == content, rel


def test_private_channel_built_with_cas_index_installs_through_a_token(tmp_path):
    mirror = tmp_path / "mirror"
    channel = mirror / PRIVATE
    specs = _internal_specs()
    for spec in specs:
        build_package(channel / spec.subdir, spec, ".conda" if spec.name != "helper" else ".tar.bz2")
    (channel / "linux-64").mkdir(exist_ok=True)
    indexed = subprocess.run(
        [sys.executable, "-m", "casconsole.cli.index", str(channel)],
        capture_output=True, text=True, env=server_env(), timeout=120,
    )  # fmt: skip
    assert indexed.returncode == 0, indexed.stderr
    assert (channel / "noarch" / "repodata.json").exists()
    token = cli("token", "add", PRIVATE, "--root", str(mirror)).stdout.strip()

    with Server(mirror, private=PRIVATE) as srv:
        prefix = tmp_path / "env"
        records = solve_and_install(f"{srv.url}/t/{token}/{PRIVATE}", ["teamapp"], prefix, tmp_path / "cache")
        got = {r.name.normalized: str(r.version) for r in records}
        assert got == {"teamapp": "1.2", "helper": "0.3", "corelib": "2.1"}
        by_name = {(s.name, s.version): s for s in specs}
        for r in records:
            _payload_matches(prefix, by_name[(r.name.normalized, str(r.version))])
            assert installed_as_archived(prefix, channel / r.subdir / r.file_name) > 0
            meta = prefix / "conda-meta" / f"{r.name.normalized}-{r.version}-{r.build}.json"
            assert meta.exists()
        # the downloaded archives are the served files, byte for byte
        for r in records:
            served = channel / r.subdir / r.file_name
            assert hashlib.sha256(served.read_bytes()).hexdigest() == r.sha256.hex()

        # without the token, or with a wrong one, the channel does not exist for clients
        for url in (f"{srv.url}/{PRIVATE}", f"{srv.url}/t/not-a-token/{PRIVATE}"):
            with pytest.raises(Exception) as err:
                solve_and_install(url, ["teamapp"], tmp_path / "env2", tmp_path / "cache2")
            assert "404" in str(err.value) or "not found" in str(err.value).lower()
            assert not (tmp_path / "env2" / "bin" / "teamapp").exists()


def test_demo_upstream_synced_then_served_installs(tmp_path, demo_url):
    mirror = tmp_path / "mirror"
    config = tmp_path / "cas.yaml"
    config.write_text(f"remote_url: {demo_url}\nmirror_dir: {mirror}\nplatforms: [linux-64]\n")
    synced = subprocess.run(
        [sys.executable, "-m", "casconsole.cli.sync", "--config", str(config)],
        capture_output=True, text=True, env=server_env(), timeout=600,
    )  # fmt: skip
    assert synced.returncode == 0, synced.stderr
    with Server(mirror) as srv:
        prefix = tmp_path / "env"
        records = solve_and_install(f"{srv.url}/pkgs", ["curl"], prefix, tmp_path / "cache")
        assert {"curl", "openssl", "zlib"} <= {r.name.normalized for r in records}  # dependencies
        for r in records:
            served = mirror / "pkgs" / r.subdir / r.file_name
            assert hashlib.sha256(served.read_bytes()).hexdigest() == r.sha256.hex()
            installed_as_archived(prefix, served)
            meta = prefix / "conda-meta" / f"{r.name.normalized}-{r.version}-{r.build}.json"
            assert meta.exists()
    shutil.rmtree(prefix, ignore_errors=True)
