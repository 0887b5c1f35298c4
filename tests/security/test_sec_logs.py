"""Issue 13, point 2: no token in any log line. Every hostile request of the suite is sent
with a real token in every position a client can put one, to cas-server and to nginx running
the printed configuration; then every line either wrote (access logs, cas-server's stderr,
nginx's error log) is searched for the token."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from nginx_support import NGINX, Nginx
from test_sec_parser import DESYNC
from test_server_support import PRIVATE, Server, cli, make_mirror

TRAVERSAL = [
    b"/../outside/secret.txt", b"/%2e%2e/outside/secret.txt", b"/pkgs%2f..%2f..%2foutside",
    b"/pkgs\\..\\outside", b"/pkgs/linux-64/repodata.json%00.txt", b"/.cas/tokens.json",
    b"/%2ecas/tokens.json", b"/pkgs/linux-64/.repodata.json.abc.part",
]  # fmt: skip


def hostile_requests(token: str) -> list[bytes]:
    t = token.encode()
    targets = [
        b"/t/" + t + b"/" + PRIVATE.encode() + b"/noarch/repodata.json",
        b"/t/" + t + b"/" + PRIVATE.encode() + b"/noarch/",
        b"/t/" + t + b"/" + PRIVATE.encode(),  # a redirect
        b"/t/" + t + b"/pkgs/noarch/repodata.json",
        b"/t/" + t + b"/noarch/repodata.json",  # the root URL form
        b"/t/" + t + b"/",
        b"/t/" + t,
        b"/T/" + t + b"/pkgs/",
        b"/%74/" + t + b"/pkgs/",
        b"//t//" + t + b"//pkgs/",
        b"/t%2f" + t + b"/pkgs/",
        b"/t/" + t + b"%2f..%2fpkgs/",
        b"/t/" + t + b"/%00",
        b"/pkgs/" + t,
        b"/pkgs/x" + t + b"y.conda",
        b"/pkgs/noarch/repodata.json?token=" + t,
        b"/pkgs/noarch/repodata.json#" + t,
        b"http://mirror/t/" + t + b"/pkgs/",
        *[b"/t/" + t + target for target in TRAVERSAL],
    ]
    requests = [b"GET " + target + b" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" for target in targets]
    plain = b"GET /pkgs/ HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
    requests += [
        plain + b"Referer: http://mirror:8080/t/" + t + b"/" + PRIVATE.encode() + b"/noarch/\r\n\r\n",
        plain + b"Referer: " + t + b"\r\n\r\n",
        plain + b"User-Agent: conda/23.1 " + t + b"\r\n\r\n",
        plain + b"Authorization: token " + t + b"\r\nCookie: t=" + t + b"\r\n\r\n",
        plain + t + b": x\r\n\r\n",
        b"GET /pkgs/ HTTP/1.1\r\nHost: " + t + b"\r\nConnection: close\r\n\r\n",
        b"GET /t/" + t + b"/pkgs/ HTTP/1.9\r\nHost: a\r\n\r\n",
        b"GET /t/" + t + b"/pkgs/ HTTP/2.0\r\nHost: a\r\n\r\n",
        b"GET /t/" + t + b"/pkgs/\r\n\r\n",
        b"GET /t/" + t + b"/pkgs/ " + t + b"\r\n\r\n",
        t + b" /pkgs/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /t/" + t + b"/pkgs/ HTTP/1.1\nHost: a\n\n",
        b"GET /t/" + t + b"/\x00 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /t/" + t + b"/" + b"a" * 20000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /t/" + t + b"/pkgs/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
        b"GET /.cas/auth HTTP/1.1\r\nHost: a\r\nX-Original-URI: /t/" + t + b"/" + PRIVATE.encode()
        + b"/\r\nConnection: close\r\n\r\n",
    ]  # fmt: skip
    for name, request in DESYNC.items():
        head, _, rest = request.partition(b" / ")
        requests.append(head + b" /t/" + t + b"/pkgs/ " + rest)
        assert name
    return requests


def send(port: int, request: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        try:
            s.sendall(request)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
        except (ConnectionResetError, BrokenPipeError):
            pass


@pytest.fixture
def mirror(tmp_path):
    return make_mirror(tmp_path / "mirror")


def test_no_token_in_any_line_cas_server_writes(mirror, tmp_path):
    token = cli("token", "add", PRIVATE, "--root", str(mirror)).stdout.strip()
    log = tmp_path / "access.log"
    with Server(mirror, "--client-timeout", "2", log=log) as srv:
        assert httpx.get(f"{srv.url}/t/{token}/{PRIVATE}/noarch/repodata.json").status_code == 200
        requests = hostile_requests(token)
        for request in requests:
            send(srv.port, request)
        # a head that never ends: answered 408 after the timeout, and logged
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(b"GET /t/" + token.encode() + b"/pkgs/ HTTP/1.1\r\nReferer: /t/" + token.encode())
            assert b" 408 " in s.recv(4096)
        lines = srv.log_lines(len(requests) + 2)
        time.sleep(0.5)
        assert srv.stop() == 0
    written = log.read_text() + "".join(srv.stderr)
    assert len(lines) >= len(requests) + 1  # every request was logged...
    assert "<token>" in written
    assert '"GET /t/<token>/pkgs/ HTTP/1.9" 400' in written  # a refused line, as sent but redacted
    assert token not in written  # ...and the token is in none of the lines
    assert token[4:-4] not in written


@pytest.mark.skipif(not NGINX, reason="nginx is not installed")
def test_no_token_in_any_line_nginx_writes(mirror, tmp_path):
    token = cli("token", "add", PRIVATE, "--root", str(mirror)).stdout.strip()
    with (
        Server(mirror, workers=1, log=tmp_path / "auth.log") as auth,
        Nginx(mirror, tmp_path, [PRIVATE], auth.port) as ngx,
    ):
        assert httpx.get(f"{ngx.url}/t/{token}/{PRIVATE}/noarch/repodata.json").status_code == 200
        for request in hostile_requests(token):
            send(ngx.port, request)
        ngx.stop()
        time.sleep(0.3)
        auth_lines = (tmp_path / "auth.log").read_text() + "".join(auth.stderr)
    written = ngx.access_log.read_text() + ngx.error_log.read_text()
    assert "<token>" in written
    assert token not in written, [line for line in written.splitlines() if token in line][:5]
    assert token not in auth_lines
