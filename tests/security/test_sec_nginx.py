"""Issue 13, point 6: nginx running the printed configuration never serves a private
channel's file without a token, through symlinks (same owner) or the root URL included."""

from __future__ import annotations

import httpx
import pytest
from nginx_support import NGINX, Nginx
from test_server_support import PRIVATE, Server, cli, get, make_mirror

pytestmark = pytest.mark.skipif(not NGINX, reason="nginx is not installed")


@pytest.fixture
def mirror(tmp_path):
    root = make_mirror(tmp_path / "mirror")
    # all made by this user, so nginx's old `if_not_owner` would have followed them
    (root / "pkgs" / "noarch" / "leak-1.0-0.tar.bz2").symlink_to(
        root / PRIVATE / "noarch" / "secret-1.0-0.tar.bz2"
    )
    (root / "pkgs" / "peek").symlink_to(root / PRIVATE)
    (root / "sneak").symlink_to(root / PRIVATE)
    return root


def test_symlinks_into_a_private_channel_are_not_followed(mirror, tmp_path):
    token = cli("token", "add", PRIVATE, "--root", str(mirror)).stdout.strip()
    with Server(mirror, workers=1) as auth, Nginx(mirror, tmp_path, [PRIVATE], auth.port) as ngx:
        ok = get(ngx.port, f"/t/{token}/{PRIVATE}/noarch/secret-1.0-0.tar.bz2".encode())
        assert ok[0] == 200 and ok[2] == b"private package bytes"
        for target in (
            "/pkgs/noarch/leak-1.0-0.tar.bz2",
            "/pkgs/peek/noarch/secret-1.0-0.tar.bz2",
            "/sneak/noarch/secret-1.0-0.tar.bz2",
            "/t/wrong/pkgs/noarch/leak-1.0-0.tar.bz2",
            "/t/wrong/sneak/noarch/secret-1.0-0.tar.bz2",
            f"/t/{token}/pkgs/peek/noarch/secret-1.0-0.tar.bz2",
        ):
            status, _, body = get(ngx.port, target.encode())
            assert status in (403, 404), (target, status)
            assert b"private package" not in body, target
        assert get(ngx.port, b"/pkgs/noarch/repodata.json")[0] == 200
        assert httpx.get(f"{ngx.url}/pkgs/noarch/").headers["referrer-policy"] == "no-referrer"


def test_the_root_url_form_follows_the_mirrored_channel(mirror, tmp_path):
    token = cli("token", "add", PRIVATE, "--root", str(mirror)).stdout.strip()
    public = (mirror / "pkgs" / "linux-64" / "repodata.json").read_bytes()
    with (
        Server(mirror, workers=1) as auth,
        Nginx(mirror, tmp_path, [PRIVATE], auth.port, channel="pkgs") as ngx,
    ):
        assert get(ngx.port, b"/linux-64/repodata.json")[2] == public
        assert get(ngx.port, b"/t/anything/linux-64/repodata.json")[2] == public
    env = {"CAS_MIRROR_CHANNEL_NAME": PRIVATE}
    work = tmp_path / "private-root"
    work.mkdir()
    with (
        Server(mirror, workers=1, env=env) as auth,
        Nginx(mirror, work, [PRIVATE], auth.port, channel=PRIVATE) as ngx,
    ):
        assert get(ngx.port, b"/noarch/secret-1.0-0.tar.bz2")[0] == 404
        assert get(ngx.port, b"/t/wrong/noarch/secret-1.0-0.tar.bz2")[0] == 404
        status, _, body = get(ngx.port, f"/t/{token}/noarch/secret-1.0-0.tar.bz2".encode())
        assert (status, body) == (200, b"private package bytes")
