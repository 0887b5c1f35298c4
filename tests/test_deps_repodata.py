"""The fast paths under the plan: one-shot .zst, bodies read into one buffer, the next subdir
fetched while this one is decoded. Each must give what the plain path gives, errors included."""

from __future__ import annotations

import gzip
import http.server
import json
import threading

import pytest
import zstandard

from casconsole.conda.repodata import decompress
from casconsole.errors import RepoDataError, RepoDataNotFound
from casconsole.settings import load_settings
from casconsole.upstream.policy import NetworkPolicy
from casconsole.upstream.repodata import Upstream, fetch_upstream

REPODATA = json.dumps(
    {
        "info": {"subdir": "linux-64"},
        "packages": {"a-1-0.tar.bz2": {"name": "a", "version": "1", "depends": []}},
    }
).encode()


def test_zst_of_one_frame_several_frames_or_no_size_all_decompress():
    one = zstandard.ZstdCompressor().compress(REPODATA)
    frames = zstandard.ZstdCompressor().compress(REPODATA[:50]) + zstandard.ZstdCompressor().compress(
        REPODATA[50:]
    )
    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(REPODATA)
    for data in (one, frames, unsized):
        assert bytes(decompress("repodata.json.zst", data)) == REPODATA
    with pytest.raises(zstandard.ZstdError):
        decompress("repodata.json.zst", b"not zstd")


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves REPODATA at /ch/linux-64/repodata.json in the way the path says."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        if not self.path.endswith("/linux-64/repodata.json"):
            self.send_error(404)
            return
        mode = self.path.split("/")[1]
        body = gzip.compress(REPODATA) if mode == "gzip" else REPODATA
        self.send_response(200)
        if mode == "gzip":
            self.send_header("Content-Encoding", "gzip")
        if mode != "chunked":
            length = len(body) + (10 if mode == "short" else 0)
            self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)
        if mode in ("short", "chunked"):
            self.close_connection = True


def fetch_repodata_bytes(remote_url: str, subdir: str) -> tuple[str, bytes | bytearray]:
    """(URL of the file found, its JSON bytes), in one attempt."""
    with Upstream(remote_url, NetworkPolicy(retries=0)) as upstream:
        fetched = upstream.fetch(subdir)
    return fetched.url, fetched.data


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("mode", ["plain", "gzip", "chunked"])
def test_bodies_arrive_whole_with_or_without_length_or_encoding(server, mode):
    url, data = fetch_repodata_bytes(f"{server}/{mode}", "linux-64")
    assert url.endswith("/linux-64/repodata.json") and bytes(data) == REPODATA


def test_a_body_shorter_than_its_length_is_an_error_naming_the_url(server):
    with pytest.raises(RepoDataError, match=r"/short/linux-64/repodata.json"):
        fetch_repodata_bytes(f"{server}/short", "linux-64")


def test_fetch_ahead_keeps_order_and_errors(server, tmp_path):
    def settings(url, *platforms):
        cli = {
            "remote_url": (url, "x"),
            "mirror_dir": (str(tmp_path / "m"), "x"),
            "platforms": (list(platforms), "x"),
        }
        return load_settings(cli=cli, env={})

    upstream = fetch_upstream(settings(f"{server}/plain", "linux-64"))
    assert list(upstream) == ["linux-64", "noarch"]
    assert [r.fn for r in upstream["linux-64"].records] == ["a-1-0.tar.bz2"]
    assert upstream["noarch"].records == []  # no noarch upstream: an empty one
    with pytest.raises(RepoDataNotFound, match="osx-64"):
        fetch_upstream(settings(f"{server}/plain", "linux-64", "osx-64"))
