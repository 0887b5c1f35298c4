"""cas-server as a user runs it: settings, bad input, port clashes, --nginx-config with real nginx."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from test_server_support import PRIVATE, Server, cli, get, make_mirror, server_env

from casconsole.serve.nginx import nginx_config

NGINX = shutil.which("nginx") or (os.path.exists("/usr/sbin/nginx") and "/usr/sbin/nginx")


@pytest.fixture
def mirror(tmp_path):
    return make_mirror(tmp_path / "mirror")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_settings_give_the_root_host_port_and_private_channels(mirror, tmp_path):
    port = free_port()
    config = tmp_path / "cas.yaml"
    config.write_text(
        f"mirror_dir: {mirror}\nserver_host: 127.0.0.1\nserver_port: {port}\nprivate_channels: [{PRIVATE}]\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "casconsole.cli.server", "--config", str(config), "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=server_env(),
    )
    try:
        line = proc.stderr.readline()
        assert f"at http://127.0.0.1:{port}/" in line
        assert f"private channels: {PRIVATE}" in line
        assert httpx.get(f"http://127.0.0.1:{port}/pkgs/noarch/repodata.json").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/{PRIVATE}/noarch/").status_code == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "99999"], "server_port"),
        (["--port", "eighty"], "invalid int value"),
        (["--workers", "-1"], "--workers"),
        (["--grace", "-3"], "--grace"),
        (["--root", "/nonexistent/mirror"], "does not exist"),
        (["--host", "no.such.host.invalid"], "cannot resolve host"),
        (["--config", "/nonexistent/cas.yaml"], "cas.yaml"),
        (["--auth-backend", "127.0.0.1:1"], "--auth-backend goes with --nginx-config"),
        (["--nginx-config", "--auth-backend", "nocolon"], "HOST:PORT"),
        (["--bogus"], "unrecognized arguments"),
        (["--access-log", "/nonexistent/dir/access.log"], "cannot open access log"),
    ],
)
def test_bad_input_says_what_is_wrong_and_exits_2(mirror, args, message):
    if "--root" not in args:
        args = [*args, "--root", str(mirror)]
    result = cli(*args, "--port", "0") if "--port" not in args else cli(*args)
    assert result.returncode == 2, (args, result.stderr)
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_port_in_use_is_refused_with_a_message(mirror):
    with Server(mirror) as srv:
        result = cli("--root", str(mirror), "--port", str(srv.port), "--workers", "2")
        assert result.returncode == 1
        assert "cannot listen on" in result.stderr
        assert "Traceback" not in result.stderr
        # and the running one is untouched
        assert httpx.get(f"{srv.url}/pkgs/noarch/repodata.json").status_code == 200


def test_nginx_config_is_printed_from_the_settings(mirror):
    env = server_env(CAS_MIRROR_PRIVATE_CHANNELS=PRIVATE)
    result = cli("--root", str(mirror), "--port", "8080", "--nginx-config", env=env)
    assert result.returncode == 0, result.stderr
    conf = result.stdout
    assert "listen 127.0.0.1:8080;" in conf
    assert f'root "{mirror}";' in conf
    assert f"location ^~ /{PRIVATE}/" in conf
    assert "auth_request" in conf
    assert "proxy_pass http://127.0.0.1:8081/.cas/auth;" in conf
    public_only = cli("--root", str(mirror), "--nginx-config").stdout
    assert "auth_request" not in public_only
    if NGINX:
        path = mirror.parent / "nginx.conf"
        path.write_text(conf)
        check = subprocess.run(
            [NGINX, "-t", "-c", str(path), "-e", str(mirror.parent / "err.log")],
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0, check.stderr


@pytest.mark.skipif(not NGINX, reason="nginx is not installed")
@pytest.mark.slow
def test_nginx_with_the_printed_config_serves_like_cas_server(mirror, tmp_path):
    token = cli("token", "add", PRIVATE, "--root", str(mirror)).stdout.strip()
    with Server(mirror, workers=1) as auth:
        port = free_port()
        conf = nginx_config(
            mirror,
            "127.0.0.1",
            port,
            [PRIVATE],
            f"127.0.0.1:{auth.port}",
            access_log=str(tmp_path / "nginx-access.log"),
            error_log=str(tmp_path / "nginx-error.log"),
            pid=str(tmp_path / "nginx.pid"),
        )
        head = "daemon off;\n" + ("user root;\n" if os.geteuid() == 0 else "")
        (tmp_path / "nginx.conf").write_text(head + conf)
        nginx = subprocess.Popen(
            [NGINX, "-c", str(tmp_path / "nginx.conf"), "-e", str(tmp_path / "nginx-error.log")]
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, "nginx did not start"
                    time.sleep(0.05)
            base = f"http://127.0.0.1:{port}"
            public = (mirror / "pkgs/linux-64/repodata.json").read_bytes()
            private = (mirror / PRIVATE / "noarch/repodata.json").read_bytes()
            with httpx.Client(base_url=base) as c:
                assert c.get("/pkgs/linux-64/repodata.json").content == public
                assert c.get(f"/t/{token}/pkgs/linux-64/repodata.json").content == public
                assert c.get(f"/t/{token}/{PRIVATE}/noarch/repodata.json").content == private
                assert c.get(f"/t/{token}/{PRIVATE}/noarch/").status_code == 200
                for url in (
                    f"/{PRIVATE}/noarch/repodata.json",
                    f"/{PRIVATE}/",
                    f"/t/wrong/{PRIVATE}/noarch/repodata.json",
                    f"/t/{token}/.cas/tokens.json",
                    "/.cas/tokens.json",
                    "/pkgs/linux-64/.repodata.json.abc.part",
                    "/",
                    f"/t/{token}/",
                ):
                    assert c.get(url).status_code == 404, url
            for target in (
                f"/t/{token}/x/../{PRIVATE}/noarch/repodata.json".encode(),
                f"/t/wrong/x/../{PRIVATE}/noarch/repodata.json".encode(),
                f"/t/wrong//{PRIVATE}/noarch/repodata.json".encode(),
                f"/t/wrong/{PRIVATE.replace('-', '%2D')}/noarch/repodata.json".encode(),
                f"/pkgs/../{PRIVATE}/noarch/repodata.json".encode(),
                b"/%69nternal-pkgs/noarch/repodata.json",
            ):
                status, _, body = get(port, target)
                assert status in (400, 404), (target, status)
                assert private not in body or b"wrong" not in target
            # a revoked token stops working at once, with no nginx reload
            cli("token", "revoke", PRIVATE, "--all", "--root", str(mirror))
            assert httpx.get(f"{base}/t/{token}/{PRIVATE}/noarch/repodata.json").status_code == 404
        finally:
            nginx.send_signal(signal.SIGQUIT)
            nginx.wait(timeout=20)
    log = (tmp_path / "nginx-access.log").read_text()
    assert "/t/<token>/" in log
    assert token not in log
