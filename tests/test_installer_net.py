"""cas-installer over HTTP: from a real cas-server (the mirror's root URL meaning the mirrored
channel, a private channel through /t/<token>/), and from an upstream that fails on the way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import rattler
from test_installer_support import (
    PH,
    Pkg,
    cas_installer,
    demo_packages,
    rattler_would_do,
    run_installer,
    run_program,
    write_channel,
)
from test_server_support import Server, cli
from upstream_server import Fault, Upstream

from casconsole.conda.archive import PackageSpec

SECRET = Pkg(
    PackageSpec(
        "secret-tool", "0.1", "0", subdir="linux-64", depends=["demo-tool >=2"],
        files={"bin/secret-tool": f"#!/bin/sh\necho 'the secret of {PH}'\n".encode()},
    ),
    placeholders={"bin/secret-tool": (PH, "text")},
)  # fmt: skip


def test_from_a_cas_server_root_and_a_private_channel_through_its_token(tmp_path):
    mirror = tmp_path / "mirror"
    write_channel(mirror / "pkgs", demo_packages())
    write_channel(mirror / "internal-pkgs", [SECRET])
    added = cli("token", "add", "internal-pkgs", "--root", str(mirror))
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    with Server(mirror) as server:
        private = f"{server.url}/t/{token}/internal-pkgs"
        (tmp_path / "my-installer.yaml").write_text(
            "name: my-installer\nversion: 1.0\n"
            f"channels: [ {server.url}, {private} ]\n"  # the root: the mirrored channel (pkgs)
            "specs: [python, conda, secret-tool]\n"
        )
        result = cas_installer("my-installer.yaml", "--output", "out", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        # cas-server answers the mirrored channel at its root URL: the FAQ's form is read there
        assert f"{server.url}/linux-64: 5 records" in result.stderr
        assert token not in result.stderr + result.stdout  # the token is never shown
        installer = tmp_path / "out/my-installer-1.0-linux-64.sh"
        assert token.encode() not in installer.read_bytes()  # nor written into the installer

        prefix = tmp_path / "prefix"
        installed = run_installer(installer, "-b", "-p", str(prefix))
        assert installed.returncode == 0, installed.stderr
        assert run_program(prefix / "bin/secret-tool").stdout == f"the secret of {prefix}\n"
        record = rattler.PrefixRecord.from_path(prefix / "conda-meta/secret-tool-0.1-0.json")
        assert "/t/%3CTOKEN%3E/internal-pkgs/linux-64/secret-tool-0.1-0.conda" in str(record.url)
        meta = json.loads((prefix / "conda-meta/secret-tool-0.1-0.json").read_text())
        assert meta["channel"] == f"{server.url}/t/<TOKEN>/internal-pkgs"
        assert meta["url"] == f"{server.url}/t/<TOKEN>/internal-pkgs/linux-64/secret-tool-0.1-0.conda"
        assert meta["requested_spec"] == "secret-tool"
        python = json.loads((prefix / "conda-meta/python-3.12.1-h0_cpython.json").read_text())
        assert python["url"] == f"{server.url}/linux-64/python-3.12.1-h0_cpython.conda"
        assert token not in "".join(p.read_text() for p in (prefix / "conda-meta").iterdir())

        # rattler, asked over HTTP (the token in hand) for the same specs: nothing to do
        channels = [server.url, private]
        specs = ["python", "conda", "secret-tool"]
        assert rattler_would_do(channels, specs, prefix, tmp_path / "cache") == []

        # without the token the private channel is not there, and the build says so
        (tmp_path / "b.yaml").write_text(
            f"name: b\nversion: 1\nchannels: [{server.url}/t/wrong/internal-pkgs]\nspecs: [secret-tool]\n"
        )
        refused = cas_installer("b.yaml", "--output", "out", cwd=tmp_path)
        assert refused.returncode == 2
        assert "channel " + f"{server.url}/t/<TOKEN>/internal-pkgs: no repodata there" in refused.stderr
        assert "wrong" not in refused.stderr
        assert sorted(os.listdir(tmp_path / "out")) == [installer.name]


def test_downloads_that_fail_on_the_way_are_tried_again(tmp_path):
    channel = write_channel(tmp_path / "upstream", demo_packages())
    (tmp_path / "a.yaml").write_text(
        "name: a\nversion: 1\nchannels: [URL]\nspecs: [python, conda, my_package]\n"
    )
    with Upstream(channel) as upstream:
        (tmp_path / "a.yaml").write_text((tmp_path / "a.yaml").read_text().replace("URL", upstream.url))
        upstream.inject("linux-64/libdemo-1.0-h1.conda", Fault.status(503), Fault.truncate(100))
        upstream.inject("noarch/conda-24.1.0-py_0.conda", Fault.wrong_bytes(), Fault.reset())
        result = cas_installer("a.yaml", "--output", "out", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert len(upstream.seen("linux-64/libdemo-1.0-h1.conda")) == 3
        assert len(upstream.seen("noarch/conda-24.1.0-py_0.conda")) == 3
        prefix = tmp_path / "prefix"
        assert run_installer(tmp_path / "out/a-1-linux-64.sh", "-b", "-p", str(prefix)).returncode == 0
        assert (prefix / "lib/libdemo.so.1.0").is_file() and (prefix / "bin/conda").is_file()

        # a file that is always wrong: the build fails, names it, and leaves nothing
        upstream.clear()
        upstream.always("linux-64/libdemo-1.0-h1.conda", Fault.wrong_bytes())
        failed = cas_installer("a.yaml", "--output", "out2", cwd=tmp_path, env={"CAS_MIRROR_RETRIES": "1"})
        assert failed.returncode == 1
        assert f"{upstream.url}/linux-64/libdemo-1.0-h1.conda: sha256 " in failed.stderr
        assert "(after 2 attempts)" in failed.stderr
        assert not (tmp_path / "out2").exists()


def test_the_payload_holds_gzip_tarballs_only_and_is_reproducible(tmp_path):
    """No .conda, zstd or bzip2 reaches the target: the shell needs tar and gzip only. And the
    same channel gives the same installer, byte for byte, whenever it is built."""
    channel = write_channel(tmp_path / "chan", demo_packages())
    (tmp_path / "a.yaml").write_text(
        f"name: a\nversion: 1\nchannels: [{channel}]\nspecs: [my_package, conda]\n"
    )
    assert cas_installer("a.yaml", "--output", "out", cwd=tmp_path).returncode == 0
    data = (tmp_path / "out/a-1-linux-64.sh").read_bytes()
    time.sleep(1.1)  # into another second: no clock in the installer
    assert cas_installer("a.yaml", "--output", "again", cwd=tmp_path).returncode == 0
    assert (tmp_path / "again/a-1-linux-64.sh").read_bytes() == data
    skip = int(data.split(b"cas_skip=", 1)[1].split()[0])
    payload = tmp_path / "payload.tar"
    payload.write_bytes(data[skip:])
    with tarfile.open(payload) as tar:
        names = tar.getnames()
        assert {n.split("/")[0] for n in names} <= {"manifest", "specs", "pkgs", "meta", "edits", "lit"}
        for name in names:
            if name.startswith("pkgs/"):
                assert name.endswith(".tar.gz")
                with tarfile.open(fileobj=tar.extractfile(name), mode="r:gz") as inner:
                    assert all(not m.name.startswith("info/") for m in inner.getmembers())
        manifest = tar.extractfile("manifest").read().decode().splitlines()
    assert [line.split()[2] for line in manifest][-1] in ("my_package", "conda")


def test_interrupted_during_a_download_leaves_nothing(tmp_path):
    big = Pkg(PackageSpec("big", "1", "0", subdir="linux-64", files={"share/big.bin": os.urandom(3 << 20)}))
    channel = write_channel(tmp_path / "upstream", [big])
    with Upstream(channel) as upstream:
        upstream.always("linux-64/big-1-0.conda", Fault.slow(200_000))  # 15 s for the file
        (tmp_path / "a.yaml").write_text(f"name: a\nversion: 1\nchannels: [{upstream.url}]\nspecs: [big]\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_MIRROR_")}
        env.update(CAS_MIRROR_SYSTEM_CONFIG="/nonexistent/s", CAS_MIRROR_USER_CONFIG="/nonexistent/u")
        command = [str(Path(sys.executable).with_name("cas-installer")), "a.yaml", "--output", "out"]
        proc = subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not upstream.seen("linux-64/big-1-0.conda") and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # well into the download
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 130, stderr
    assert "cas-installer: interrupted" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "out").exists()
