"""The network settings take effect: ssl_verify against a self-signed https upstream on
loopback (refused when verifying, accepted with its CA bundle or with ssl_verify false), and
proxy (every request goes through it)."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys

import pytest
from upstream_server import ForwardProxy, Upstream, make_channel, mirror_problems, spec

from casconsole.settings import load_settings
from casconsole.sync.engine import Sync

SUBDIRS = ("linux-64", "noarch")


def settings_for(url, mirror, **keys):
    values = {"remote_url": url, "mirror_dir": str(mirror), "platforms": ["linux-64"], "retries": 0, **keys}
    return load_settings(cli={key: (value, "test") for key, value in values.items()})


@pytest.fixture
def channel(tmp_path):
    root = tmp_path / "upstream"
    make_channel(root, {"linux-64": [spec("tls", "1.0", "linux-64")], "noarch": [spec("helper", "1.0")]})
    return root


@pytest.fixture
def https_upstream(channel, certificate):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    with Upstream(channel, ssl_context=context) as server:
        yield server


def test_https_with_a_self_signed_certificate_fails_when_verifying(https_upstream, tmp_path):
    assert https_upstream.url.startswith("https://")
    stats = Sync(settings_for(https_upstream.url, tmp_path / "mirror")).run()
    assert stats.state == "error"
    assert "CERTIFICATE_VERIFY_FAILED" in stats.error
    assert not list((tmp_path / "mirror" / "pkgs").rglob("*.conda"))


def test_https_works_with_the_ca_bundle_path(https_upstream, certificate, tmp_path):
    stats = Sync(settings_for(https_upstream.url, tmp_path / "mirror", ssl_verify=str(certificate[0]))).run()
    assert (stats.state, stats.downloaded) == ("done", 2)
    assert mirror_problems(tmp_path / "mirror" / "pkgs", https_upstream.root, SUBDIRS) == []


def test_https_works_with_ssl_verify_false(https_upstream, tmp_path):
    stats = Sync(settings_for(https_upstream.url, tmp_path / "mirror", ssl_verify=False)).run()
    assert (stats.state, stats.downloaded) == ("done", 2)


def test_cas_sync_ssl_verify_flag(https_upstream, certificate, tmp_path):
    args = [sys.executable, "-m", "casconsole.cli.sync", "--remote-url", https_upstream.url,
            "--mirror-dir", str(tmp_path / "mirror"), "--platform", "linux-64"]  # fmt: skip
    refused = subprocess.run(args, capture_output=True, text=True)
    assert refused.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr
    accepted = subprocess.run([*args, "--ssl-verify", str(certificate[0])], capture_output=True, text=True)
    assert accepted.returncode == 0, accepted.stderr


def test_every_request_goes_through_the_proxy(channel, tmp_path):
    with Upstream(channel) as server, ForwardProxy() as proxy:
        stats = Sync(settings_for(server.url, tmp_path / "mirror", proxy=proxy.url)).run()
        assert (stats.state, stats.downloaded) == ("done", 2)
        through = {url.removeprefix(server.url) for url in proxy.seen}
        assert {"/linux-64/tls-1.0-0.conda", "/noarch/helper-1.0-0.conda"} <= through
        assert {r.path for r in server.requests} == {p.lstrip("/") for p in through}


def test_an_unreachable_proxy_fails_the_sync(channel, tmp_path):
    with Upstream(channel) as server:
        stats = Sync(settings_for(server.url, tmp_path / "mirror", proxy="http://127.0.0.1:9")).run()
        assert stats.state == "error"
        assert "cannot connect to proxy 127.0.0.1:9 (ConnectionRefusedError" in stats.error
        assert server.requests == []


def test_https_goes_through_the_proxy_in_a_tunnel_with_its_credentials(https_upstream, certificate, tmp_path):
    with ForwardProxy() as proxy:
        url = proxy.url.replace("http://", "http://mirror:p%40ss@")
        ca = str(certificate[0])
        stats = Sync(settings_for(https_upstream.url, tmp_path / "mirror", proxy=url, ssl_verify=ca)).run()
    assert (stats.state, stats.downloaded) == ("done", 2)
    assert mirror_problems(tmp_path / "mirror" / "pkgs", https_upstream.root, SUBDIRS) == []
    port = https_upstream.url.rsplit(":", 1)[1]
    assert set(proxy.seen) == {f"CONNECT 127.0.0.1:{port}"}
    assert len(proxy.seen) >= 2  # the repodata's client and at least one download worker
    assert set(proxy.authorizations) == {"Basic bWlycm9yOnBAc3M="}  # mirror:p@ss
    fetched = {r.path for r in https_upstream.requests}
    assert {"linux-64/tls-1.0-0.conda", "noarch/helper-1.0-0.conda"} <= fetched


def test_plain_http_through_the_proxy_sends_its_credentials(channel, tmp_path):
    with Upstream(channel) as server, ForwardProxy() as proxy:
        url = proxy.url.replace("http://", "http://mirror:secret@")
        stats = Sync(settings_for(server.url, tmp_path / "mirror", proxy=url)).run()
    assert (stats.state, stats.downloaded) == ("done", 2)
    assert set(proxy.authorizations) == {"Basic bWlycm9yOnNlY3JldA=="}  # mirror:secret
    assert f"{server.url}/linux-64/tls-1.0-0.conda" in proxy.seen


def test_a_proxy_url_that_cannot_be_used_is_refused_with_the_settings(channel, tmp_path):
    config = tmp_path / "cas.yaml"
    config.write_text(
        f"remote_url: http://127.0.0.1:9\nmirror_dir: {tmp_path / 'm'}\nproxy: socks5://h:1080\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "casconsole.cli.sync", "--config", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert f"{config}:3: proxy: 'socks5://h:1080' is not an http://host:port URL" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "m").exists()


def test_repodata_sent_gzip_encoded_and_chunked_is_read_whole(channel, tmp_path):
    for zst in channel.glob("*/repodata.json.zst"):
        zst.unlink()  # so the sync asks for repodata.json, which this server gzips on the fly
    # more than the 1 MiB first guessed for a body of unknown length: blacklisted fillers
    repodata = json.loads((channel / "linux-64" / "repodata.json").read_bytes())
    record = repodata["packages.conda"]["tls-1.0-0.conda"]
    for i in range(8000):
        repodata["packages.conda"][f"filler-{i}-0.conda"] = {**record, "name": "filler", "version": str(i)}
    (channel / "linux-64" / "repodata.json").write_text(json.dumps(repodata))
    assert (channel / "linux-64" / "repodata.json").stat().st_size > 2 << 20
    with Upstream(channel) as server:
        server.gzip_json = True
        settings = settings_for(server.url, tmp_path / "mirror", blacklist=["filler"])
        stats = Sync(settings).run()
        assert {r.path for r in server.requests} >= {"linux-64/repodata.json", "noarch/repodata.json"}
    assert (stats.state, stats.downloaded) == ("done", 2)
    mirrored = json.loads((tmp_path / "mirror" / "pkgs" / "linux-64" / "repodata.json").read_bytes())
    assert list(mirrored["packages.conda"]) == ["tls-1.0-0.conda"]
    assert mirror_problems(tmp_path / "mirror" / "pkgs", channel, SUBDIRS) == []


def test_redirects_are_followed_and_a_loop_fails_the_file(channel, tmp_path):
    moved = channel / "moved"
    moved.mkdir()
    for name in ("tls-1.0-0.conda", "repodata.json.zst"):
        (moved / name).write_bytes((channel / "linux-64" / name).read_bytes())
    with Upstream(channel) as server:
        server.redirects["linux-64/repodata.json.zst"] = "/moved/repodata.json.zst"  # relative
        server.redirects["linux-64/tls-1.0-0.conda"] = f"{server.url}/moved/tls-1.0-0.conda"
        server.redirects["noarch/helper-1.0-0.conda"] = "/noarch/helper-1.0-0.conda"  # to itself
        stats = Sync(settings_for(server.url, tmp_path / "mirror")).run()
        assert server.seen("moved/tls-1.0-0.conda")
    assert stats.state == "failed"
    assert stats.failures == [("noarch", "helper-1.0-0.conda", "more than 10 redirects")]
    assert (tmp_path / "mirror" / "pkgs" / "linux-64" / "tls-1.0-0.conda").read_bytes() == (
        moved / "tls-1.0-0.conda"
    ).read_bytes()
    assert mirror_problems(tmp_path / "mirror" / "pkgs", channel, SUBDIRS) == []


def test_files_are_fetched_over_kept_alive_connections(tmp_path):
    root = tmp_path / "upstream"
    make_channel(root, {"linux-64": [spec(f"p{i}", "1.0", "linux-64") for i in range(6)], "noarch": []})
    with Upstream(root) as server:
        server.gzip_json = True  # a chunked repodata, then files with a Content-Length, on one connection
        for zst in root.glob("*/repodata.json.zst"):
            zst.unlink()
        stats = Sync(settings_for(server.url, tmp_path / "mirror", concurrency=1)).run()
        files = [r for r in server.requests if r.path.endswith(".conda")]
    assert (stats.state, stats.downloaded) == ("done", 6)
    assert len(files) == 6 and len({r.peer for r in files}) == 1  # one worker thread, one connection
    assert mirror_problems(tmp_path / "mirror" / "pkgs", root, SUBDIRS) == []
