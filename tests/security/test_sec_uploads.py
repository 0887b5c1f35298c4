"""Issue 19: uploads are hostile input. Only a token with upload rights on the channel may PUT;
everyone else gets 403 or 404 and nothing is written. A truncated, invalid, mislabelled, too
large or stalled upload leaves nothing behind; bodies are framed by llhttp; no token is logged."""

from __future__ import annotations

import os
import socket
import time

import httpx
import pytest
from nginx_support import NGINX, Nginx
from processes import wait_for
from test_server_support import PRIVATE, Server, cli, get
from upload_support import PUBLIC, add_token, exchange, package, put_raw, status_of, tree, upload_mirror

pytest_plugins = ["disk_fixtures"]

MAX = 300_000  # upload_max_size of these servers
TIMEOUT = "2"  # upload_timeout of these servers, seconds


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A server with small limits; tokens of every kind; packages to send."""
    work = tmp_path_factory.mktemp("uploads")
    mirror = upload_mirror(work / "mirror")
    tokens = {
        "private": add_token(mirror, PRIVATE),
        "public": add_token(mirror, PUBLIC),
        "read": add_token(mirror, PRIVATE, upload=False),
        "other": add_token(mirror, "other-pkgs"),
    }
    dist = work / "dist"
    packages = {
        "linux": package(dist, "mytool"),
        "osx": package(dist, "mactool", subdir="osx-64"),
        "big": package(dist, "big", payload=os.urandom(MAX + 1000)),
        "slow": package(dist, "slow", payload=os.urandom(150_000)),
    }
    args = ("--upload-max-size", str(MAX), "--upload-timeout", TIMEOUT)
    with Server(mirror, *args, workers=1) as srv:
        yield srv, mirror, tokens, packages


def unchanged(mirror, action):
    """Run `action`, then check (after the server had time to clean up) that the mirror's tree
    is as it was; returns what `action` returned."""
    before = tree(mirror)
    result = action()
    assert wait_for(lambda: tree(mirror) == before, timeout=8), set(tree(mirror).items()) ^ set(
        before.items()
    )
    return result


NOT_FOUND = b"404 Not Found\n"


@pytest.mark.parametrize(
    ("who", "where", "expected"),
    [
        (None, PUBLIC, 403),  # anonymous
        (None, PRIVATE, 404),  # anonymous, private: not revealed
        ("read", PRIVATE, 403),  # may read, may not upload
        ("read", PUBLIC, 403),
        ("other", PRIVATE, 404),  # another channel's upload token
        ("other", PUBLIC, 403),
        ("wrong", PRIVATE, 404),
        ("wrong", PUBLIC, 403),
        ("private", "pkgs", 403),  # the mirrored channel takes no uploads
        ("private", "Internal-pkgs", 404),  # a private channel in another case is not it
        ("public", "", 403),  # the root URL form: the mirrored channel
    ],
)
def test_only_a_token_with_upload_rights_on_the_channel_may_upload(site, who, where, expected):
    srv, mirror, tokens, packages = site
    pkg = packages["linux"]
    prefix = "" if who is None else f"/t/{tokens.get(who, 'A' * 32)}"
    target = f"{prefix}/{where}/linux-64/{pkg.name}".replace("//", "/")
    answer = unchanged(mirror, lambda: put_raw(srv.port, target, pkg.read_bytes()))
    assert status_of(answer) == expected, answer[:300]
    if expected == 404:  # the same answer as for a channel that does not exist
        assert answer.endswith(b"\r\n\r\n" + NOT_FOUND)


def test_a_revoked_upload_token_is_refused_at_once(site, tmp_path):
    srv, mirror, _, _ = site
    token = add_token(mirror, PUBLIC)
    pkg = package(tmp_path, "revoked")
    target = f"/t/{token}/{PUBLIC}/linux-64/{pkg.name}"
    ids = [
        line.split()[0]
        for line in cli("token", "list", PUBLIC, "--root", str(mirror)).stdout.splitlines()[1:]
    ]
    cli("token", "revoke", PUBLIC, ids[-1], "--root", str(mirror))
    assert status_of(unchanged(mirror, lambda: put_raw(srv.port, target, pkg.read_bytes()))) == 403


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("linux-64/../linux-64/mytool-1.0-h0_0.conda", 404),
        ("linux-64/%2e%2e/mytool-1.0-h0_0.conda", 404),
        ("linux-64%2fmytool-1.0-h0_0.conda", 400),
        ("linux-64/..%5cmytool-1.0-h0_0.conda", 400),
        (".history/linux-64/mytool-1.0-h0_0.conda", 404),
        (".cache/mytool-1.0-h0_0.conda", 404),
        ("linux-64/.upload-0000000000000000/mytool-1.0-h0_0.conda", 404),
        ("linux-64/.mytool-1.0-h0_0.conda", 404),
        ("linux-64/repodata.json", 400),
        ("linux-64/notes.txt", 400),
        ("nowhere-64/mytool-1.0-h0_0.conda", 400),
        ("linux-64/", 400),
        ("linux-64/deep/mytool-1.0-h0_0.conda", 400),
        ("linux-64/mytool-1.0-h0_0.conda?force=1&x=2", 400),
        ("linux-64/my%20tool-1.0-h0_0.conda", 400),
        ("linux-64/my%01tool-1.0-h0_0.conda", 400),
        ("linux-64/p%D0%B0ndas-1.0-h0_0.conda", 400),  # a Cyrillic a
        ("linux-64/mytool.conda", 400),
        ("linux-64/-1.0-h0_0.conda", 400),
    ],
)
def test_a_path_that_is_no_package_place_is_refused(site, path, expected):
    srv, mirror, tokens, packages = site
    target = f"/t/{tokens['public']}/{PUBLIC}/{path}"
    answer = unchanged(mirror, lambda: put_raw(srv.port, target, packages["linux"].read_bytes()))
    assert status_of(answer) == expected, (path, answer[:300])


def test_truncated_invalid_and_mislabelled_uploads_leave_nothing_behind(site, tmp_path):
    srv, mirror, tokens, packages = site
    url = f"/t/{tokens['public']}/{PUBLIC}"
    good = packages["linux"].read_bytes()

    def cut(head_length: int, sent: bytes, chunked: bool = False) -> bytes:
        framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % head_length
        head = (
            f"PUT {url}/linux-64/mytool-1.0-h0_0.conda HTTP/1.1\r\nHost: t\r\n".encode()
            + framing
            + b"\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(head + sent)
            time.sleep(0.2)
        return b""

    # truncated: the client goes away before the body is whole (by length, and chunked)
    unchanged(mirror, lambda: cut(len(good), good[: len(good) // 2]))
    unchanged(mirror, lambda: cut(0, b"%x\r\n" % 500 + good[:500] + b"\r\n", chunked=True))

    unreadable = b"not a readable conda package"
    cases = {
        "random bytes": ("linux-64/junk-1.0-0.conda", os.urandom(5000), unreadable),
        "random .tar.bz2": ("linux-64/junk-1.0-0.tar.bz2", os.urandom(5000), unreadable),
        "a zip, no info": ("linux-64/zip-1.0-0.conda", _zip_without_info(tmp_path), b"not a readable"),
        "another subdir's": ("linux-64/mactool-1.0-h0_0.conda", packages["osx"].read_bytes(), b"'osx-64'"),
        "renamed": ("linux-64/other-1.0-h0_0.conda", good, b"names it mytool-1.0-h0_0, not other-1.0-h0_0"),
        "a .conda sent as .tar.bz2": ("linux-64/mytool-1.0-h0_0.tar.bz2", good, unreadable),
    }
    for name, (path, body, reason) in cases.items():
        answer = unchanged(mirror, lambda path=path, body=body: put_raw(srv.port, f"{url}/{path}", body))
        assert status_of(answer) == 422 and reason in answer, (name, answer[:400])


def _zip_without_info(tmp_path) -> bytes:
    import zipfile

    path = tmp_path / "plain.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", '{"conda_pkg_format_version": 2}')
    return path.read_bytes()


def test_too_large_is_refused_before_its_body_or_when_it_grows_past_the_limit(site):
    srv, mirror, tokens, packages = site
    big = packages["big"].read_bytes()
    target = f"/t/{tokens['public']}/{PUBLIC}/linux-64/{packages['big'].name}"
    # declared too large: answered at the head, before a byte of the body is sent
    head = f"PUT {target} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(big)}\r\n\r\n".encode()
    answer = unchanged(mirror, lambda: exchange(srv.port, head))
    assert status_of(answer) == 413 and b"upload_max_size (300,000 bytes)" in answer
    # chunked: refused once it grows past the limit, its bytes removed
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(big[i : i + 50_000]), big[i : i + 50_000]) for i in range(0, len(big), 50_000)
    )
    chunked = (
        f"PUT {target} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + chunks
        + b"0\r\n\r\n"
    )
    answer = unchanged(mirror, lambda: exchange(srv.port, chunked))
    assert status_of(answer) == 413


def test_a_stalled_upload_is_dropped_and_a_slow_one_is_not(site):
    srv, mirror, tokens, packages = site
    body = packages["slow"].read_bytes()
    target = f"/t/{tokens['public']}/{PUBLIC}/noarch/{packages['slow'].name}".replace("noarch", "linux-64")
    head = f"PUT {target} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n".encode()

    def stall() -> bytes:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=15) as s:
            s.sendall(head + body[:40_000])
            started = time.monotonic()
            answer = s.recv(65536)  # nothing more is sent: the server gives up after upload_timeout
            assert 1.5 < time.monotonic() - started < 6
            return answer

    assert status_of(unchanged(mirror, stall)) == 408

    # a slow link: 4 s in all, twice upload_timeout, but never silent for long
    with socket.create_connection(("127.0.0.1", srv.port), timeout=15) as s:
        s.sendall(head)
        step = len(body) // 10 + 1
        for i in range(0, len(body), step):
            s.sendall(body[i : i + step])
            time.sleep(0.4)
        answer = s.recv(65536)
    assert status_of(answer) == 201, answer[:300]
    assert (mirror / PUBLIC / "linux-64" / packages["slow"].name).read_bytes() == body


def test_bodies_are_framed_by_the_parser_chunked_and_pipelined(site, tmp_path):
    srv, mirror, tokens, _ = site
    pkg = package(tmp_path, "chunky", payload=os.urandom(70_000))
    data = pkg.read_bytes()
    target = f"/t/{tokens['public']}/{PUBLIC}/linux-64/{pkg.name}"
    pieces = [data[i : i + 7000] for i in range(0, len(data), 7000)]
    body = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    smuggled = (
        f"GET /{PUBLIC}/linux-64/repodata.json HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
    )
    request = (
        f"PUT {target} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".encode() + body + smuggled
    )
    answer = exchange(srv.port, request)
    codes = [int(c) for c in __import__("re").findall(rb"HTTP/1\.1 (\d{3}) ", answer)]
    assert codes == [201, 200], answer[:500]
    assert answer.rstrip().endswith(b"}") and pkg.name.encode() in answer.split(b"HTTP/1.1 200 OK")[1]
    assert (mirror / PUBLIC / "linux-64" / pkg.name).read_bytes() == data


def test_expect_100_continue_is_answered_before_the_body(site, tmp_path):
    srv, _, tokens, _ = site
    pkg = package(tmp_path, "expecting")
    data = pkg.read_bytes()
    head = (
        f"PUT /t/{tokens['public']}/{PUBLIC}/linux-64/{pkg.name} HTTP/1.1\r\nHost: t\r\n"
        f"Content-Length: {len(data)}\r\nExpect: 100-continue\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(head)
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(data)
        assert status_of(s.recv(65536)) == 201
    refused = head.replace(tokens["public"].encode(), tokens["read"].encode())
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(refused)
        answer = s.recv(65536)
    assert status_of(answer) == 403 and b"100 Continue" not in answer


def test_a_subdir_reached_through_a_symlink_takes_no_upload(site, tmp_path):
    srv, mirror, tokens, _ = site
    outside = tmp_path / "outside"
    outside.mkdir()
    (mirror / PUBLIC).mkdir(exist_ok=True)
    link = mirror / PUBLIC / "win-64"
    link.symlink_to(outside, target_is_directory=True)
    try:
        pkg = package(tmp_path / "dist", "wintool", subdir="win-64")
        answer = put_raw(srv.port, f"/t/{tokens['public']}/{PUBLIC}/win-64/{pkg.name}", pkg.read_bytes())
        assert status_of(answer) == 403 and b"symlink" in answer
        assert list(outside.iterdir()) == []
    finally:
        link.unlink()


def test_a_full_disk_is_refused_and_leaves_nothing(tmpfs, tmp_path):
    disk = tmpfs(400_000)
    mirror = upload_mirror(disk / "mirror")
    token = add_token(mirror, PUBLIC)
    fits = package(tmp_path, "fits", payload=os.urandom(150_000))
    too_big = package(tmp_path, "toobig", payload=os.urandom(500_000))
    with Server(mirror, "--gzip-cache", str(tmp_path / "gz"), workers=1, log=tmp_path / "access.log") as srv:
        url = f"/t/{token}/{PUBLIC}/linux-64"
        answer = unchanged(mirror, lambda: put_raw(srv.port, f"{url}/{too_big.name}", too_big.read_bytes()))
        assert status_of(answer) == 507  # its declared length does not fit: refused at the head
        (disk / "filler").write_bytes(b"\0" * 300_000)  # now the space runs out mid-body
        chunked = (
            f"PUT {url}/{fits.name} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n".encode()
            + b"Connection: close\r\n\r\n"
            + b"%x\r\n" % fits.stat().st_size
            + fits.read_bytes()
            + b"\r\n0\r\n\r\n"
        )
        answer = unchanged(mirror, lambda: exchange(srv.port, chunked))
        assert status_of(answer) == 507, answer[:300]
        (disk / "filler").unlink()
        assert status_of(put_raw(srv.port, f"{url}/{fits.name}", fits.read_bytes())) == 201
        assert not [line for line in srv.stderr if "Traceback" in line]


def test_a_mirror_the_server_may_not_write_refuses_uploads_and_says_why(tmpfs, remount, tmp_path):
    """The shipped systemd unit keeps the mirror read-only to cas-server: uploads then get 500,
    and the server's log says what to change."""
    disk = tmpfs(2_000_000)
    mirror = upload_mirror(disk / "mirror")
    token = add_token(mirror, PUBLIC)
    pkg = package(tmp_path, "readonly")
    log = tmp_path / "access.log"  # (not on the disk remounted: an open file keeps it busy)
    with Server(mirror, "--gzip-cache", str(tmp_path / "gz"), workers=1, log=log) as srv:
        remount(disk, "ro")
        try:
            answer = unchanged(
                mirror,
                lambda: put_raw(srv.port, f"/t/{token}/{PUBLIC}/linux-64/{pkg.name}", pkg.read_bytes()),
            )
        finally:
            remount(disk, "rw")
        assert status_of(answer) == 500 and b"the server cannot write into the channel" in answer
        assert wait_for(
            lambda: any("uploads need the mirror writable by cas-server" in x for x in srv.stderr)
        )
        assert not [line for line in srv.stderr if "Traceback" in line]


def test_no_token_reaches_a_log_line(site, tmp_path):
    srv, _, tokens, _ = site
    pkg = package(tmp_path, "logged")
    for token in (tokens["public"], tokens["read"], tokens["private"]):
        put_raw(srv.port, f"/t/{token}/{PUBLIC}/linux-64/{pkg.name}", pkg.read_bytes())
        put_raw(srv.port, f"/{PUBLIC}/linux-64/{pkg.name}?{token}", pkg.read_bytes())
        put_raw(
            srv.port,
            f"/t/{token}/{PUBLIC}/linux-64/{pkg.name}",
            b"x" * 100,
            b"X-Token: " + token.encode() + b"\r\n",
        )
    time.sleep(0.5)
    text = srv.log.read_text() + "".join(srv.stderr)
    assert "PUT /t/<token>/team-pkgs/linux-64/" in text
    assert not [t for t in tokens.values() if t in text]


@pytest.mark.skipif(not NGINX, reason="nginx is not installed")
def test_nginx_passes_uploads_to_the_cas_server_which_judges_them(tmp_path):
    mirror = upload_mirror(tmp_path / "mirror")
    token, reader = add_token(mirror, PRIVATE), add_token(mirror, PRIVATE, upload=False)
    pkg = package(tmp_path / "dist", "viaproxy", payload=os.urandom(100_000))
    with Server(mirror, workers=1) as auth, Nginx(mirror, tmp_path, [PRIVATE], auth.port) as ngx:
        url = f"{ngx.url}/t/{{}}/{PRIVATE}/linux-64/{pkg.name}"
        for who, expected in ((reader, 403), ("A" * 32, 404)):
            response = unchanged(mirror, lambda who=who: httpx.put(url.format(who), content=pkg.read_bytes()))
            assert response.status_code == expected
        answer = unchanged(
            mirror, lambda: put_raw(ngx.port, f"/{PRIVATE}/linux-64/{pkg.name}", pkg.read_bytes())
        )
        assert status_of(answer) == 404
        assert httpx.get(f"{ngx.url}/.cas-upload").status_code == 404  # internal only
        done = httpx.put(
            url.format(token), content=iter([pkg.read_bytes()[:50_000], pkg.read_bytes()[50_000:]])
        )
        assert done.status_code == 201, done.text
        assert get(ngx.port, f"/t/{reader}/{PRIVATE}/linux-64/{pkg.name}".encode())[2] == pkg.read_bytes()
        assert httpx.post(url.format(token), content=b"x").status_code == 405
        log = ngx.access_log.read_text()
        assert "PUT /t/<token>/" in log and token not in log
