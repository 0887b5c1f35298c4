"""cas-server in front of a bucket mirror of a real SeaweedFS, end to end: `cas-sync` fills the
bucket, `cas-index` indexes a private internal channel there, `cas-server token add` writes its
token to the bucket, and clients (raw HTTP, urllib, py-rattler) get the same answers as from a
folder: files and ranges and conditional requests, private channels only with a token, folder
pages, the health URL; streamed through the server, or redirected to presigned URLs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
from conda_client import installed_as_archived, solve_and_install
from test_server_support import Server, cli, raw, server_env
from upstream_server import Upstream, make_channel, spec

from casconsole.conda.archive import build_package

PRIVATE = "internal-pkgs"


@pytest.fixture
def mirror(tmp_path, bucket):
    """A bucket mirror: pkgs synced from a test upstream, a private channel indexed, a token."""
    root = tmp_path / "upstream"
    make_channel(
        root,
        {
            "linux-64": [spec("app", "1.0", "linux-64", kb=40, depends=["helper"])],
            "noarch": [spec("helper", "2.0", kb=3000)],  # large enough to be streamed in chunks
        },
    )
    config = tmp_path / "cas.yaml"
    config.write_text(
        f"{bucket.settings_text()}platforms: [linux-64]\ns3_work_dir: {tmp_path / 'work'}\n"
        f"private_channels: [{PRIVATE}]\n"
    )
    with Upstream(root) as upstream:
        command = [sys.executable, "-m", "casconsole.cli.sync", "--config", str(config)]
        done = subprocess.run(
            [*command, "--remote-url", upstream.url], capture_output=True, text=True, timeout=120
        )
    assert done.returncode == 0, done.stderr
    secret = build_package(tmp_path / "built", spec("secret", "1.0", "noarch"))
    bucket.view.put(f"{PRIVATE}/noarch/{secret.name}", secret.read_bytes())
    indexed = subprocess.run(
        [sys.executable, "-m", "casconsole.cli.index", "--config", str(config), f"{bucket.url}/{PRIVATE}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert indexed.returncode == 0, indexed.stderr
    added = cli("token", "add", PRIVATE, "--config", str(config), env=server_env())
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert token and token not in bucket.view.get(".cas/tokens.json").decode()  # only its hash
    return {"config": config, "token": token, "upstream": root, "secret": secret, "view": bucket.view,
            "url": bucket.url}  # fmt: skip


def start(mirror, tmp_path, **env) -> Server:
    """cas-server on the bucket (--root s3://...), its endpoint from the settings file."""
    args = ("--config", str(mirror["config"]))
    return Server(mirror["url"], *args, log=tmp_path / "access.log", env=env, workers=1)


def get(url: str, headers: dict | None = None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_files_ranges_and_conditional_requests_streamed_from_the_bucket(mirror, tmp_path):
    view = mirror["view"]
    with start(mirror, tmp_path) as server:
        url = server.url
        for path in ("/linux-64/repodata.json", "/pkgs/linux-64/repodata.json"):
            status, headers, body = get(url + path)
            assert status == 200 and body == view.get("pkgs/linux-64/repodata.json")
            assert headers["ETag"] == view.etag("pkgs/linux-64/repodata.json")
            assert headers["Cache-Control"] == "public, max-age=60"
        helper = next(k for k in view.keys("pkgs/noarch") if k.endswith(".conda"))
        data = view.get(helper)
        status, headers, body = get(f"{url}/{helper}")
        assert status == 200 and body == data and len(data) > 3_000_000
        assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
        etag = headers["ETag"]
        assert get(f"{url}/{helper}", {"If-None-Match": etag})[0] == 304
        status, headers, body = get(f"{url}/{helper}", {"Range": "bytes=100-199"})
        assert (status, body, headers["Content-Range"]) == (206, data[100:200], f"bytes 100-199/{len(data)}")
        status, _, body = get(f"{url}/{helper}", {"Range": "bytes=-1000000"})
        assert status == 206 and body == data[-1_000_000:]
        status, _, body = get(f"{url}/{helper}", {"Range": "bytes=5-9", "If-Range": '"other"'})
        assert status == 200 and body == data
        assert get(f"{url}/{helper}", {"Range": f"bytes={len(data)}-"})[0] == 416
        status, headers, body = raw(
            server.port, f"HEAD /{helper} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        assert status == 200 and body == b"" and int(headers["content-length"]) == len(data)
        # folder pages from listings; nothing of .cas/; no private channel without a token
        status, _, page = get(f"{url}/pkgs/noarch/")
        assert status == 200 and helper.rpartition("/")[2].encode() in page
        status, _, root_page = get(url + "/")
        assert b"pkgs/" in root_page and PRIVATE.encode() not in root_page
        assert get(f"{url}/pkgs/noarch")[0] == 200  # redirected to the folder's page, followed
        for path in (
            "/.cas/tokens.json",
            "/.cas/sync.lock",
            f"/{PRIVATE}/noarch/repodata.json",
            "/nope.conda",
        ):
            assert get(url + path)[0] == 404, path
        secret = f"{PRIVATE}/noarch/{mirror['secret'].name}"
        status, _, body = get(f"{url}/t/{mirror['token']}/{secret}")
        assert status == 200 and body == mirror["secret"].read_bytes()
        assert get(f"{url}/t/{'x' * 32}/{secret}")[0] == 404
        health = json.loads(get(url + "/.well-known/cas/health")[2])
        assert health["status"] == "ok" and health["sync"]["state"] == "done"
        # a token revoked in the bucket is refused within the refresh time
        listed = cli("token", "list", PRIVATE, "--config", str(mirror["config"]))
        token_id = listed.stdout.splitlines()[1].split()[0]
        assert cli("token", "revoke", PRIVATE, token_id, "--config", str(mirror["config"])).returncode == 0
        deadline = time.monotonic() + 10
        while get(f"{url}/t/{mirror['token']}/{secret}")[0] == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert get(f"{url}/t/{mirror['token']}/{secret}")[0] == 404
    log = (tmp_path / "access.log").read_text()
    assert mirror["token"] not in log and "/t/<token>/" in log


def test_redirects_to_presigned_urls(mirror, tmp_path):
    view = mirror["view"]
    with start(mirror, tmp_path, CAS_MIRROR_S3_SERVE="redirect") as server:
        helper = next(k for k in view.keys("pkgs/noarch") if k.endswith(".conda"))
        status, headers, _ = raw(
            server.port, f"GET /{helper} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        assert status == 302 and "X-Amz-Signature=" in headers["location"]
        assert headers["cache-control"] == "no-store"
        status, _, body = get(f"{server.url}/{helper}", {"Range": "bytes=0-9"})  # urllib follows it
        assert status == 206 and body == view.get(helper)[:10]
        etag = view.etag("pkgs/linux-64/repodata.json")
        assert get(f"{server.url}/linux-64/repodata.json", {"If-None-Match": etag})[0] == 304  # answered here
        status, headers, body = raw(
            server.port, f"HEAD /{helper} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        )
        assert status == 200 and body == b""
        secret = f"{PRIVATE}/noarch/{mirror['secret'].name}"
        assert get(f"{server.url}/{secret}")[0] == 404
        status, _, body = get(f"{server.url}/t/{mirror['token']}/{secret}")
        assert status == 200 and body == mirror["secret"].read_bytes()


@pytest.mark.parametrize("mode", ["stream", "redirect"])
def test_py_rattler_installs_through_cas_server_from_the_bucket(mirror, tmp_path, mode):
    with start(mirror, tmp_path, CAS_MIRROR_S3_SERVE=mode) as server:
        records = solve_and_install(f"{server.url}/pkgs", ["app"], tmp_path / "env", tmp_path / "cache")
        assert sorted(r.name.normalized for r in records) == ["app", "helper"]
        private = solve_and_install(
            f"{server.url}/t/{mirror['token']}/{PRIVATE}", ["secret"], tmp_path / "env2", tmp_path / "cache2"
        )
        assert [r.name.normalized for r in private] == ["secret"]
    for subdir, name in (("linux-64", "app"), ("noarch", "helper")):
        archive = next((mirror["upstream"] / subdir).glob(f"{name}-*.conda"))
        assert installed_as_archived(tmp_path / "env", archive) >= 1
    assert installed_as_archived(tmp_path / "env2", mirror["secret"]) >= 1


def test_a_bucket_that_cannot_be_reached_stops_cas_server_at_start(mirror, tmp_path):
    env = server_env(CAS_MIRROR_S3_ENDPOINT_URL="http://127.0.0.1:9", CAS_MIRROR_RETRIES="0")
    done = cli("--config", str(mirror["config"]), "--port", "0", env=env, timeout=60)
    assert done.returncode == 1
    assert "connection refused" in done.stderr and done.stderr.count("\n") <= 2
    assert "Traceback" not in done.stderr


def test_nginx_config_for_a_bucket(mirror, tmp_path):
    shown = cli("--nginx-config", "--config", str(mirror["config"]))
    assert shown.returncode == 0, shown.stderr
    conf = shown.stdout
    assert "proxy_pass http://cas_bucket/cas-test/" in conf
    assert "add_header Cache-Control $cas_cache_control always" in conf
    assert '"~\\.(conda|tar\\.bz2)$" "public, max-age=31536000, immutable";' in conf
    assert f"location ^~ /{PRIVATE}/ {{\n            return 404;" in conf
    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed (.ci/run installs it)")
    local = conf.replace("/var/log/nginx/access.log", str(tmp_path / "a.log"))
    local = local.replace("/var/cache/nginx/cas", str(tmp_path / "cache"))
    (tmp_path / "nginx.conf").write_text(
        f"daemon off;\nerror_log {tmp_path / 'e.log'};\npid {tmp_path / 'n.pid'};\n{local}"
    )
    checked = subprocess.run(
        ["nginx", "-t", "-c", str(tmp_path / "nginx.conf")], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
