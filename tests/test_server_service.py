"""cas-server as a site runs it: HTTPS with its own certificate (and the nginx TLS block),
the health URL with the last sync's outcome, the root URL as the mirrored channel for a real
conda client, --version."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time

import httpx
import pytest
from conda_client import installed_as_archived, solve_and_install
from test_server_support import PRIVATE, Server, cli, make_mirror, server_env

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


def test_https_with_a_certificate_the_client_verifies(tmp_path, certificate):
    mirror = make_mirror(tmp_path / "mirror")
    cert, key = certificate
    big = (mirror / "pkgs/linux-64/big-1.0-0.conda").read_bytes()
    with Server(mirror, "--tls-cert", str(cert), "--tls-key", str(key)) as srv:
        assert srv.url.startswith("https://127.0.0.1:")
        with httpx.Client(base_url=srv.url, verify=ssl.create_default_context(cafile=str(cert))) as c:
            for _ in range(3):  # keep-alive over TLS
                r = c.get("/pkgs/linux-64/big-1.0-0.conda")
                assert r.status_code == 200 and r.content == big
            r = c.get("/pkgs/linux-64/repodata.json", headers={"Accept-Encoding": "identity"})
            assert r.content == (mirror / "pkgs/linux-64/repodata.json").read_bytes()
            assert (
                c.get("/pkgs/linux-64/big-1.0-0.conda", headers={"Range": "bytes=5-9"}).content == big[5:10]
            )
            assert c.head("/pkgs/noarch/repodata.json").status_code == 200
            assert c.get("/linux-64/small-1.0-0.tar.bz2").status_code == 200  # the root URL form
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(srv.url + "/pkgs/noarch/repodata.json")  # a client that does not trust it
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:  # plain HTTP
            s.sendall(b"GET /pkgs/noarch/repodata.json HTTP/1.1\r\nHost: t\r\n\r\n")
            try:
                assert b"packages" not in s.recv(4096)  # the connection is dropped
            except ConnectionResetError:
                pass
        ctx = ssl.create_default_context(cafile=str(cert))
        assert httpx.get(srv.url + "/pkgs/noarch/repodata.json", verify=ctx).status_code == 200
    assert not any("Traceback" in line for line in srv.stderr)


def test_tls_flags_say_what_is_wrong(tmp_path, certificate):
    mirror = make_mirror(tmp_path / "mirror")
    cert, key = certificate
    for args, message in (
        (("--tls-cert", str(cert)), "go together"),
        (("--tls-cert", str(cert), "--tls-key", str(tmp_path / "nope.pem")), "nope.pem"),
        (("--tls-cert", str(key), "--tls-key", str(key)), "cannot use certificate"),
    ):
        result = cli("--root", str(mirror), "--port", "0", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.skipif(NGINX is None, reason="nginx is not installed")
def test_nginx_config_with_a_certificate_serves_https(tmp_path, certificate):
    mirror = make_mirror(tmp_path / "mirror")
    cert, key = certificate
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = cli("--root", str(mirror), "--port", str(port), "--nginx-config", "--tls-cert", str(cert),
                 "--tls-key", str(key), env=server_env(CAS_MIRROR_PRIVATE_CHANNELS=PRIVATE))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"listen 127.0.0.1:{port} ssl;" in result.stdout
    assert f'ssl_certificate "{cert}";' in result.stdout
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        "daemon off;\nuser root;\n"
        + result.stdout.replace("/var/log/nginx/access.log", str(tmp_path / "access.log"))
        + f"pid {tmp_path / 'nginx.pid'};\n"
    )
    nginx = subprocess.Popen([NGINX, "-c", str(conf), "-e", str(tmp_path / "error.log")])
    try:
        ctx = ssl.create_default_context(cafile=str(cert))
        for _ in range(100):
            try:
                r = httpx.get(f"https://127.0.0.1:{port}/pkgs/noarch/repodata.json", verify=ctx)
                break
            except httpx.ConnectError:
                time.sleep(0.05)
        assert r.status_code == 200
        assert r.content == (mirror / "pkgs/noarch/repodata.json").read_bytes()
    finally:
        nginx.terminate()
        nginx.wait(timeout=20)


def test_health_url_and_the_root_url_as_a_channel_for_conda(tmp_path, demo_url):
    """The FAQ's .condarc names the mirror's root (`http://<mirror>:8080`): a conda client
    solves and installs from it; the health URL tells the last sync's outcome."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with Server(mirror, private="") as srv:
        health = httpx.get(f"{srv.url}/.well-known/cas/health")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        assert health.json()["sync"] == {"state": "none"}
        assert httpx.get(f"{srv.url}/.well-known/cas/other").status_code == 404
        assert httpx.get(f"{srv.url}/t/x/.well-known/cas/health").status_code == 404

        config = tmp_path / "cas.yaml"
        config.write_text(f"remote_url: {demo_url}\nmirror_dir: {mirror}\nplatforms: [linux-64]\n")
        synced = subprocess.run(
            [sys.executable, "-m", "casconsole.cli.sync", "--config", str(config)],
            capture_output=True, text=True, env=server_env(), timeout=600,
        )  # fmt: skip
        assert synced.returncode == 0, synced.stderr
        doc = httpx.get(f"{srv.url}/.well-known/cas/health").json()["sync"]  # read while serving
        packages = sum(
            len(json.loads((mirror / "pkgs" / sd / "repodata.json").read_bytes())["packages.conda"])
            + len(json.loads((mirror / "pkgs" / sd / "repodata.json").read_bytes())["packages"])
            for sd in ("linux-64", "noarch")
        )
        assert doc["state"] == "done"
        assert doc["packages"] == packages and doc["failed"] == 0 and doc["error"] is None
        assert doc["finished"].endswith("Z") and doc["channel"] == "pkgs"

        prefix = tmp_path / "env"
        records = solve_and_install(srv.url, ["curl"], prefix, tmp_path / "cache")  # the root URL
        assert {"curl", "openssl", "zlib"} <= {r.name.normalized for r in records}
        for r in records:
            served = mirror / "pkgs" / r.subdir / r.file_name
            assert hashlib.sha256(served.read_bytes()).hexdigest() == r.sha256.hex()
            assert str(r.url).startswith(f"{srv.url}/{r.subdir}/")
            installed_as_archived(prefix, served)
        # /<channel>/<subdir>/ keeps working beside it
        assert httpx.get(f"{srv.url}/pkgs/noarch/repodata.json").status_code == 200


def test_version():
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip().startswith("casconsole ")
    assert result.stdout.split()[1][0].isdigit()
