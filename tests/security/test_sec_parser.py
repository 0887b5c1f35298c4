"""Issue 13, point 1: request heads and bodies are parsed strictly (llhttp). Every request a
lenient proxy in front could frame differently gets 400 and a lingering close: the client
reads the whole answer, then the end of the connection, and nothing after it is answered."""

from __future__ import annotations

import re
import socket
import time

import pytest
from test_server_support import Server, get, make_mirror


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = make_mirror(tmp_path_factory.mktemp("parser") / "mirror")
    with Server(root, workers=1) as srv:
        yield srv


def exchange(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send `data`, then read until the server ends the connection (never closing first)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def statuses(answer: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]


SMUGGLED = b"GET /pkgs/noarch/repodata.json HTTP/1.1\r\nHost: t\r\n\r\n"  # must never be answered

DESYNC = {
    "two Content-Length": b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\n",
    "two equal Content-Length": b"GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
    "Content-Length and chunked": (
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "bare LF inside a header value": b"GET / HTTP/1.1\r\nHost: t\nContent-Length: 44\r\n\r\n",
    "bare LF line ends": b"GET / HTTP/1.1\nHost: t\n\n",
    "NUL in a header": b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n",
    "CR in a header": b"GET / HTTP/1.1\r\nHost: t\r\nX: a\rb\r\n\r\n",
    "VT in a header": b"GET / HTTP/1.1\r\nHost: t\r\nX: a\x0bb\r\n\r\n",
    "space before the colon": b"GET / HTTP/1.1\r\nHost : t\r\n\r\n",
    "non-token header name": b"GET / HTTP/1.1\r\nHost: t\r\nX(y): z\r\n\r\n",
    "empty header name": b"GET / HTTP/1.1\r\nHost: t\r\n: z\r\n\r\n",
    "folded header": b"GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n",
    "HTTP/1.9": b"GET / HTTP/1.9\r\nHost: t\r\n\r\n",
    "HTTP/2.0": b"GET / HTTP/2.0\r\nHost: t\r\n\r\n",
    "HTTP/0.9": b"GET / HTTP/0.9\r\nHost: t\r\n\r\n",
    "no version": b"GET /\r\n\r\n",
    "two Hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "a body on a GET": b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 44\r\n\r\n",
    "chunked GET": b"GET / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "Transfer-Encoding not chunked": b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
    "signed Content-Length": b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +4\r\n\r\n",
    "a lower-case method": b"get / HTTP/1.1\r\nHost: t\r\n\r\n",
    "a tab in the target": b"GET /a\tb HTTP/1.1\r\nHost: t\r\n\r\n",
    "an Upgrade": b"GET / HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    "CONNECT": b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: t\r\n\r\n",
}


@pytest.mark.parametrize("name", list(DESYNC))
def test_a_request_a_proxy_could_frame_otherwise_gets_4xx_then_close(server, name):
    answer = exchange(server.port, DESYNC[name] + SMUGGLED)
    codes = statuses(answer)
    assert codes and codes[0] in (400, 405), (name, answer[:200])
    assert codes == [codes[0]], f"{name}: the request after it was answered: {codes}"
    assert b"Connection: close" in answer
    assert b'"packages"' not in answer  # the smuggled request's body never comes back


def test_a_refused_request_is_answered_even_while_the_client_keeps_sending(server):
    """Lingering close: the server stops sending, reads and drops what comes, and the client
    gets the whole answer rather than a reset."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
        for _ in range(20):
            s.sendall(b"x" * 4096)
        time.sleep(0.2)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert statuses(answer) == [400]
    assert answer.endswith(b"400 Bad Request\n")


def test_bodies_are_framed_by_the_parser(server):
    """A POST's body (Content-Length or chunked) is read whole and refused with 405; the
    request pipelined after it is answered: the body was not taken for a request."""
    doc = b'{"packages": {}}'
    inner = b"GET /pkgs/noarch/x HTTP/1.1\r\nHost: t\r\n\r\n"  # a body that looks like a request
    for body in (
        b"Content-Length: %d\r\n\r\n" % len(inner) + inner,
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nGET /\r\n3;ext=1\r\nabc\r\n0\r\n\r\n",
    ):
        request = b"POST /pkgs/ HTTP/1.1\r\nHost: t\r\n" + body
        last = b"GET /pkgs/noarch/repodata.json HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        answer = exchange(server.port, request + last)
        assert statuses(answer) == [405, 200], answer[:300]
        assert answer.endswith(doc)


def test_oversized_heads_get_431(server):
    for request in (
        b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"a" * 20000 + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n",
    ):
        assert statuses(exchange(server.port, request)) == [431]
    # a head arriving in pieces is bounded too, long before it ends
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nX: ")
        try:
            for _ in range(64):
                s.sendall(b"a" * 1024)
                time.sleep(0.002)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        try:
            while chunk := s.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    assert statuses(answer) == [431]


def test_the_server_still_serves_after_all_of_it(server):
    assert get(server.port, b"/pkgs/noarch/repodata.json")[0] == 200
    assert not [line for line in server.stderr if "Traceback" in line or "internal error" in line]
