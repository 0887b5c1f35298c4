"""Issue 13, point 5: slow and odd clients. The send timeout counts only bytes the client
accepts; an If-Modified-Since out of range or in the future is ignored; a redirect is never
scheme-relative; directory pages leave out symlinks into a private channel; requests
pipelined before a half-close are all answered."""

from __future__ import annotations

import hashlib
import socket
import time

import pytest
from test_server_support import PRIVATE, Server, get, make_mirror


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = make_mirror(tmp_path_factory.mktemp("slow") / "mirror")
    big = root / "pkgs" / "linux-64" / "huge-1.0-0.conda"
    big.write_bytes(hashlib.sha256(b"seed").digest() * (24 * 1024 * 1024 // 32))
    (root / "pkgs" / "peek").symlink_to(root / PRIVATE)  # a folder of a private channel
    (root / "pkgs" / "noarch" / "leak-1.0-0.tar.bz2").symlink_to(
        root / PRIVATE / "noarch" / "secret-1.0-0.tar.bz2"
    )
    (root / "sneak").symlink_to(root / PRIVATE)  # at the root
    return root


@pytest.fixture(scope="module")
def server(root):
    with Server(root, "--client-timeout", "3", workers=1) as srv:
        yield srv


def test_a_client_that_trickles_bytes_but_never_reads_is_dropped(server):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    s.connect(("127.0.0.1", server.port))
    s.sendall(b"GET /pkgs/linux-64/huge-1.0-0.conda HTTP/1.1\r\nHost: t\r\n\r\nGET /")
    start = time.monotonic()
    dropped = None
    try:
        while time.monotonic() - start < 20:  # a byte a quarter second: activity, but no reading
            try:
                s.send(b"x")
            except (BrokenPipeError, ConnectionResetError):
                dropped = time.monotonic() - start
                break
            time.sleep(0.25)
        received = 0
        s.settimeout(5)
        try:
            while chunk := s.recv(1 << 20):
                received += len(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
    finally:
        s.close()
    assert dropped is not None and dropped < 12, dropped  # 3 s timeout, checked each second
    assert received < 24 * 1024 * 1024  # cut off: it never got the whole file
    assert get(server.port, b"/pkgs/noarch/repodata.json")[0] == 200


@pytest.mark.parametrize(
    "since",
    [
        b"Fri, 01 Jan 99999 00:00:00 GMT",  # absurd year: was a 500
        b"Sat, 01 Jan 10000 00:00:00 GMT",
        b"Fri, 01 Jan 2100 00:00:00 GMT",  # the future: was a 304
        b"Mon, 01 Jan 1900 00:00:00 GMT",
        b"Thu, 01 Jan 1970 00:00:00 +9999",
        b"\xff\xfe",
    ],
)
def test_odd_if_modified_since_is_ignored(server, since):
    status, _, body = get(server.port, b"/pkgs/noarch/repodata.json", b"If-Modified-Since: %s\r\n" % since)
    assert status == 200
    assert body == b'{"packages": {}}'


@pytest.mark.parametrize(
    ("target", "location"),
    [
        (b"//t/evil.example/pkgs", b"/t/evil.example/pkgs/"),
        (b"//pkgs", b"/pkgs/"),
        (b"///pkgs//noarch", b"/pkgs/noarch/"),
        (b"/t/x//pkgs", b"/t/x/pkgs/"),
        (b"//linux-64", b"/linux-64/"),  # the root-URL form of the mirrored channel
    ],
)
def test_redirects_are_never_scheme_relative(server, target, location):
    status, headers, _ = get(server.port, target)
    assert status == 301
    assert headers["location"].encode() == location
    assert not headers["location"].startswith("//")


def test_directory_pages_leave_out_symlinks_into_a_private_channel(server):
    for target in (b"/pkgs/", b"/", b"/pkgs/noarch/"):
        status, headers, page = get(server.port, target)
        assert status == 200
        assert headers["referrer-policy"] == "no-referrer"
        assert b"peek" not in page and b"sneak" not in page and b"leak-1.0" not in page, target
    assert b"pkgs/" in get(server.port, b"/")[2]
    for target in (b"/pkgs/peek/noarch/secret-1.0-0.tar.bz2", b"/pkgs/noarch/leak-1.0-0.tar.bz2", b"/sneak/"):
        assert get(server.port, target)[0] == 404


def test_requests_pipelined_before_a_half_close_are_all_answered(server, root):
    big = (root / "pkgs" / "linux-64" / "huge-1.0-0.conda").read_bytes()
    small = (root / "pkgs" / "noarch" / "repodata.json").read_bytes()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(
            b"GET /pkgs/linux-64/huge-1.0-0.conda HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /pkgs/noarch/repodata.json HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        s.shutdown(socket.SHUT_WR)  # the client is done sending; the answers are still to come
        time.sleep(0.3)
        data = b""
        while chunk := s.recv(1 << 20):
            data += chunk
    first_head, _, rest = data.partition(b"\r\n\r\n")
    assert first_head.startswith(b"HTTP/1.1 200")
    assert rest[: len(big)] == big
    second = rest[len(big) :]
    assert second.startswith(b"HTTP/1.1 200")
    assert second.endswith(b"\r\n\r\n" + small)
    assert b"Connection: close" in second  # the last answer says so, then the server closes


def test_a_request_cut_short_by_a_half_close_closes_cleanly(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GET /pkgs/noarch/repodata.json HTTP/1.1\r\nHost: t\r\n\r\nGET /pk")
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 ") == 1  # the whole request answered, the partial one dropped
    assert data.endswith(b'\r\n\r\n{"packages": {}}')
