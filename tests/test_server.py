"""cas-server over real HTTP: methods, types, ranges, validators, gzip, pages, traversal."""

from __future__ import annotations

import gzip
import json
import os
import time

import httpx
import pytest
from processes import wait_for
from test_server_support import PRIVATE, Server, get, make_mirror, raw

from casconsole.fsutil import atomic_write_bytes
from casconsole.serve.site import parse_range, split_target


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("serve")
    root = make_mirror(base / "mirror")
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("TOP SECRET outside the root")
    # symlinks: one escaping to a file, one to a folder, one staying inside, one into .cas
    sub = root / "pkgs" / "linux-64"
    (sub / "escape.json").symlink_to(outside / "secret.txt")
    (root / "pkgs" / "evil").symlink_to(outside)
    (sub / "alias.tar.bz2").symlink_to(sub / "small-1.0-0.tar.bz2")
    (sub / "tokens.json").symlink_to(root / ".cas" / "tokens.json")
    (root / "pkgs" / "peek").symlink_to(root / PRIVATE)
    return root


@pytest.fixture(scope="module")
def server(tree):
    with Server(tree) as srv:
        yield srv


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def test_get_and_head_give_the_file_with_type_and_length(client, tree):
    path = "pkgs/linux-64/repodata.json"
    data = (tree / path).read_bytes()
    r = client.get("/" + path, headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["content-type"] == "application/json"
    assert r.headers["content-length"] == str(len(data))
    h = client.head("/" + path, headers={"Accept-Encoding": "identity"})
    assert h.status_code == 200
    assert h.content == b""
    assert h.headers["content-length"] == str(len(data))
    assert h.headers["etag"] == r.headers["etag"]

    big = (tree / "pkgs/linux-64/big-1.0-0.conda").read_bytes()  # sent with sendfile
    r = client.get("/pkgs/linux-64/big-1.0-0.conda")
    assert r.content == big
    assert r.headers["content-type"] == "application/octet-stream"
    r = client.get("/pkgs/linux-64/small-1.0-0.tar.bz2")
    assert r.headers["content-type"] == "application/x-bzip2"
    assert "content-encoding" not in r.headers  # a .bz2 is the file itself, not an encoding
    r = client.get("/pkgs/linux-64/repodata.json.zst", headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-type"] == "application/zstd"
    assert "content-encoding" not in r.headers
    assert r.content == (tree / "pkgs/linux-64/repodata.json.zst").read_bytes()


def test_keep_alive_serves_many_requests_on_one_connection(server, tree):
    small = (tree / "pkgs/linux-64/small-1.0-0.tar.bz2").read_bytes()
    with httpx.Client(base_url=server.url, limits=httpx.Limits(max_connections=1)) as c:
        for _ in range(50):
            assert c.get("/pkgs/linux-64/small-1.0-0.tar.bz2").content == small
    # pipelined: two requests in one write, two whole answers in order
    req = b"GET /pkgs/noarch/repodata.json HTTP/1.1\r\nHost: t\r\n\r\n"
    last = req.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    status, _, rest = raw(server.port, req + last)
    doc = (tree / "pkgs/noarch/repodata.json").read_bytes()
    assert status == 200
    assert rest.startswith(doc + b"HTTP/1.1 200 OK\r\n")
    assert rest.endswith(b"\r\n\r\n" + doc)


def test_methods_other_than_get_and_head_are_refused(client):
    r = client.post("/pkgs/noarch/repodata.json")
    assert r.status_code in (400, 405)
    r = client.request("DELETE", "/pkgs/noarch/repodata.json")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    ("header", "status", "first", "last"),
    [
        ("bytes=0-9", 206, 0, 9),
        ("bytes=100-", 206, 100, None),
        ("bytes=-10", 206, -10, None),
        ("bytes=5-5", 206, 5, 5),
        ("bytes=10-999999999", 206, 10, None),
    ],
)
def test_single_ranges(client, tree, header, status, first, last):
    data = (tree / "pkgs/linux-64/big-1.0-0.conda").read_bytes()
    r = client.get("/pkgs/linux-64/big-1.0-0.conda", headers={"Range": header})
    assert r.status_code == status
    want = data[first:] if last is None else data[first : last + 1]
    assert r.content == want
    start = first if first >= 0 else len(data) + first
    assert r.headers["content-range"] == f"bytes {start}-{start + len(want) - 1}/{len(data)}"
    assert r.headers["content-length"] == str(len(want))


def test_unsatisfiable_and_ignored_ranges(client, tree):
    size = (tree / "pkgs/linux-64/small-1.0-0.tar.bz2").stat().st_size
    r = client.get("/pkgs/linux-64/small-1.0-0.tar.bz2", headers={"Range": f"bytes={size}-"})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{size}"
    for header in ("bytes=0-1,5-6", "items=0-1", "bytes=9-3", "bytes=x-"):
        r = client.get("/pkgs/linux-64/small-1.0-0.tar.bz2", headers={"Range": header})
        assert r.status_code == 200, header
        assert len(r.content) == size


def test_if_range(client):
    url = "/pkgs/linux-64/small-1.0-0.tar.bz2"
    first = client.get(url)
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    assert client.get(url, headers={"Range": "bytes=0-0", "If-Range": etag}).status_code == 206
    assert client.get(url, headers={"Range": "bytes=0-0", "If-Range": modified}).status_code == 206
    stale = client.get(url, headers={"Range": "bytes=0-0", "If-Range": '"other"'})
    assert stale.status_code == 200
    assert stale.content == first.content


def test_etag_and_last_modified_give_304(client):
    url = "/pkgs/linux-64/small-1.0-0.tar.bz2"
    first = client.get(url)
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    for headers in (
        {"If-None-Match": etag},
        {"If-None-Match": f'"nope", W/{etag}'},
        {"If-None-Match": "*"},
        {"If-Modified-Since": modified},
    ):
        r = client.get(url, headers=headers)
        assert r.status_code == 304, headers
        assert r.content == b""
        assert r.headers["etag"] == etag
    for headers in (
        {"If-None-Match": '"nope"'},
        {"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"},
        {"If-None-Match": '"nope"', "If-Modified-Since": modified},  # ETag decides
        {"If-Modified-Since": "not a date"},
        {"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"},  # from the future: ignored
    ):
        assert client.get(url, headers=headers).status_code == 200, headers


def test_gzip_for_json_when_accepted_compressed_once_per_version(client, tree):
    path = tree / "pkgs/linux-64/repodata.json"
    url = "/pkgs/linux-64/repodata.json"
    plain = client.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.headers["vary"] == "Accept-Encoding"

    def gzipped():
        r = httpx.get(client.base_url.join(url), headers={"Accept-Encoding": "gzip"})
        return r if r.headers.get("content-encoding") == "gzip" else None

    r = wait_for(gzipped)  # the first requests may get the plain file while it is compressed
    assert r is not None, "never served gzip"
    assert r.content == path.read_bytes()  # decoded by httpx
    assert int(r.headers["content-length"]) < len(path.read_bytes()) // 3  # the wire size
    assert r.headers["etag"] != plain.headers["etag"]
    assert client.get(url, headers={"Accept-Encoding": "gzip;q=0"}).headers.get("content-encoding") is None
    # 304 against the gzip variant's own ETag
    again = client.get(url, headers={"Accept-Encoding": "gzip", "If-None-Match": r.headers["etag"]})
    assert again.status_code == 304
    # not JSON: never compressed, whatever the client accepts
    r = client.get("/pkgs/linux-64/small-1.0-0.tar.bz2", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in r.headers


def test_gzip_follows_a_rewritten_file(tmp_path):
    root = make_mirror(tmp_path / "mirror")
    path = root / "pkgs/linux-64/repodata.json"
    with Server(root) as srv:
        url = f"{srv.url}/pkgs/linux-64/repodata.json"
        for version in range(3):
            doc = {"info": {"subdir": "linux-64"}, "packages": {}, "v": version, "pad": "x" * 5000}
            atomic_write_bytes(path, json.dumps(doc).encode())

            def fresh(version=version):
                r = httpx.get(url, headers={"Accept-Encoding": "gzip"})
                enc = r.headers.get("content-encoding")
                return r if enc == "gzip" and r.json()["v"] == version else None

            r = wait_for(fresh)
            assert r is not None
            raw_body = get(srv.port, b"/pkgs/linux-64/repodata.json", b"Accept-Encoding: gzip\r\n")[2]
            assert json.loads(gzip.decompress(raw_body))["v"] == version
        cache = root / ".cas" / "cache" / "gzip"
        assert len(list(cache.glob("*.gz"))) == 1  # older versions are removed


def test_directory_pages_and_redirects(client, tree):
    r = client.get("/pkgs/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "href='linux-64/'" in r.text
    assert "href='noarch/'" in r.text
    r = client.get("/pkgs/linux-64/")
    assert "repodata.json" in r.text
    assert ".part" not in r.text  # hidden files are not listed
    assert "escape.json" not in r.text  # nor symlinks that lead outside
    assert "alias.tar.bz2" in r.text
    r = client.get("/pkgs")
    assert r.status_code == 301
    assert r.headers["location"] == "/pkgs/"
    root_page = client.get("/").text
    assert "pkgs/" in root_page
    assert PRIVATE not in root_page  # private channels are not listed
    assert ".cas" not in root_page
    assert client.get("/pkgs/linux-64/repodata.json/").status_code == 404


SECRET = b"TOP SECRET"


@pytest.mark.parametrize(
    "target",
    [
        b"/../outside/secret.txt",
        b"/pkgs/../../outside/secret.txt",
        b"/pkgs/linux-64/../../../outside/secret.txt",
        b"/%2e%2e/outside/secret.txt",
        b"/pkgs/%2E%2E/%2e%2e/outside/secret.txt",
        b"/.%2e/outside/secret.txt",
        b"/pkgs%2f..%2f..%2foutside%2fsecret.txt",
        b"/pkgs/%2F..%2F..%2Foutside/secret.txt",
        b"/%252e%252e/outside/secret.txt",
        b"//../outside/secret.txt",
        b"/pkgs//..//..//outside/secret.txt",
        b"/pkgs\\..\\..\\outside\\secret.txt",
        b"/pkgs/%5c..%5c..%5coutside%5csecret.txt",
        b"/pkgs/linux-64/repodata.json%00.txt",
        b"/pkgs/linux-64/%00/../../../outside/secret.txt",
        b"http://t/../outside/secret.txt",
        b"../outside/secret.txt",
        b"outside/secret.txt",
        b"/pkgs/linux-64/escape.json",
        b"/pkgs/evil/secret.txt",
        b"/pkgs/evil/",
        b"/pkgs/linux-64/tokens.json",
        b"/pkgs/peek/noarch/secret-1.0-0.tar.bz2",
        b"/.cas/tokens.json",
        b"/%2ecas/tokens.json",
        b"/pkgs/linux-64/.repodata.json.abc.part",
    ],
)
def test_traversal_and_escapes_never_reach_outside(server, tree, target):
    status, _, body = get(server.port, target)
    assert status in (400, 404), (target, status)
    assert SECRET not in body
    assert b"private package" not in body
    assert b"tokens" not in body


def test_absolute_paths_stay_under_the_root(server, tree):
    secret = tree.parent / "outside" / "secret.txt"
    for target in (str(secret).encode(), b"/" + str(secret).encode(), b"/%2F" + str(secret).encode()[1:]):
        status, _, body = get(server.port, target)
        assert status in (400, 404), target
        assert SECRET not in body
    status, _, _ = raw(server.port, b"GET /pkgs/\x00 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert status in (400, 404)


def test_symlink_inside_the_root_is_served(client, tree):
    r = client.get("/pkgs/linux-64/alias.tar.bz2")
    assert r.status_code == 200
    assert r.content == (tree / "pkgs/linux-64/small-1.0-0.tar.bz2").read_bytes()


def test_malformed_requests_get_4xx_not_a_crash(server):
    for request in (
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
        b"GET /\r\n\r\n",
        b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        b"GET / HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n",
        b"GET /pkgs/%ff%fe HTTP/1.1\r\nConnection: close\r\n\r\n",
    ):
        status, _, _ = raw(server.port, request)
        assert 400 <= status < 500 or (status == 505 and b"HTTP/2" in request), request
    # and it still serves
    assert get(server.port, b"/pkgs/noarch/repodata.json")[0] == 200


def test_access_log_has_one_line_per_request(tree, tmp_path):
    with Server(tree, log=tmp_path / "access.log") as srv:
        for i in range(5):
            httpx.get(f"{srv.url}/pkgs/noarch/repodata.json?i={i}")
        httpx.get(f"{srv.url}/nope")
        httpx.get(f"{srv.url}/t/s3cr3t-token/pkgs/noarch/repodata.json")
        get(srv.port, b"/t/s3cr3t-token/%00")
        lines = srv.log_lines(8)
    assert len(lines) == 8
    assert sum('"GET /pkgs/noarch/repodata.json HTTP/1.1" 200' in line for line in lines) == 5
    assert any('"GET /nope HTTP/1.1" 404' in line for line in lines)
    assert all("s3cr3t" not in line for line in lines)
    assert any("/t/<token>/pkgs/noarch/repodata.json" in line for line in lines)


def test_pure_helpers():
    assert parse_range(b"bytes=0-0", 10) == (0, 0)
    assert parse_range(b"bytes=-3", 10) == (7, 9)
    assert parse_range(b"bytes=-30", 10) == (0, 9)
    assert parse_range(b"bytes=10-", 10) is False
    assert parse_range(b"bytes=-0", 10) is False
    assert parse_range(b"bytes=0-1,2-3", 10) is None
    assert split_target(b"/a//b/?x=1")[0] == ["a", "b"]
    assert split_target(b"http://h:1/a/b")[0] == ["a", "b"]


def test_mtime_and_size_make_the_etag(tmp_path):
    root = make_mirror(tmp_path / "mirror")
    f = root / "pkgs/noarch/repodata.json"
    with Server(root, workers=1) as srv, httpx.Client(base_url=srv.url) as c:
        e1 = c.get("/pkgs/noarch/repodata.json").headers["etag"]
        atomic_write_bytes(f, b'{"packages": {}, "x": 1}')
        os.utime(f, (time.time() + 5, time.time() + 5))
        r = c.get("/pkgs/noarch/repodata.json", headers={"If-None-Match": e1})
        assert r.status_code == 200
        assert r.json()["x"] == 1


def test_odd_file_names_are_listed_and_served(tmp_path):
    root = make_mirror(tmp_path / "mirror")
    sub = root / "pkgs" / "noarch"
    (sub / "café-1.0-0.tar.bz2").write_bytes(b"utf-8 name")
    os.makedirs(os.fsencode(sub / "latin") + b"-\xe9")  # not UTF-8
    (sub / "with space & 'quote'.json").write_bytes(b"{}")
    with Server(root, workers=1) as srv, httpx.Client(base_url=srv.url) as c:
        page = c.get("/pkgs/noarch/")
        assert page.status_code == 200
        assert "caf%C3%A9-1.0-0.tar.bz2" in page.text
        assert "latin-%E9/" in page.text
        assert "with%20space%20%26%20%27quote%27.json" in page.text
        assert c.get("/pkgs/noarch/caf%C3%A9-1.0-0.tar.bz2").content == b"utf-8 name"
        assert c.get("/pkgs/noarch/latin-%E9/").status_code == 200
        r = c.get("/pkgs/noarch/latin-%E9")
        assert r.status_code == 301
        assert r.headers["location"] == "/pkgs/noarch/latin-%E9/"
        assert c.get("/pkgs/noarch/with%20space%20%26%20'quote'.json").status_code == 200
        # a raw byte past ASCII in the request line is not HTTP: refused, not guessed at
        status, _, _ = get(srv.port, "/pkgs/noarch/latin-\xe9".encode("latin-1"))
        assert status == 400


def test_folded_header_lines_are_refused(server):
    status, _, _ = raw(server.port, b"GET / HTTP/1.1\r\nHost: t\r\n folded: x\r\n\r\n")
    assert status == 400
