"""Issue 13, point 4: `private_channels` entries follow the channel-name rule (no slash, no
dot prefix, exact case) with exit status 2 otherwise; a listed channel without a folder is a
warning; requests are matched exactly, so no spelling of a private channel reaches it."""

from __future__ import annotations

import httpx
import pytest
from test_server_support import PRIVATE, Server, cli, get, make_mirror, server_env


@pytest.fixture
def mirror(tmp_path):
    return make_mirror(tmp_path / "mirror")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (f"{PRIVATE}/", "path separator"),
        (f"./{PRIVATE}", "path separator"),
        (f".{PRIVATE}", "starts with a dot"),
        (f"{PRIVATE}\\x", "path separator"),
        ("Internal-Pkgs", "matched exactly"),  # the folder is internal-pkgs
        ("INTERNAL-PKGS", "matched exactly"),
    ],
)
def test_private_channel_entries_that_protect_nothing_are_refused(mirror, entry, message):
    for args in ((), ("--nginx-config",)):
        result = cli(
            "--root", str(mirror), "--port", "0", *args, env=server_env(CAS_MIRROR_PRIVATE_CHANNELS=entry)
        )
        assert result.returncode == 2, (entry, result.stderr)
        assert message in result.stderr and "private_channels" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    config = mirror.parent / "cas.yaml"
    config.write_text(f"private_channels: ['{entry}']\n")
    result = cli("--root", str(mirror), "--port", "0", "--config", str(config))
    assert result.returncode == 2
    assert message in result.stderr


def test_a_token_is_made_only_for_a_channel_name(mirror):
    for name in (f"{PRIVATE}/", f"../{PRIVATE}", ".cas"):
        result = cli("token", "add", name, "--root", str(mirror))
        assert result.returncode == 2, name
        assert "token add" in result.stderr and not result.stdout
    assert "no tokens" in cli("token", "list", "--root", str(mirror)).stderr


def test_a_private_channel_without_a_folder_is_a_warning(mirror):
    with Server(mirror, private=f"{PRIVATE},not-made-yet") as srv:
        assert any("not-made-yet" in line and "no folder" in line for line in srv.stderr)
        assert httpx.get(f"{srv.url}/pkgs/noarch/repodata.json").status_code == 200
        # once made, it is private from its first file on
        (mirror / "not-made-yet" / "noarch").mkdir(parents=True)
        (mirror / "not-made-yet" / "noarch" / "repodata.json").write_text("{}")
        assert httpx.get(f"{srv.url}/not-made-yet/noarch/repodata.json").status_code == 404


def test_requests_are_matched_exactly(mirror):
    token = cli("token", "add", PRIVATE, "--root", str(mirror)).stdout.strip()
    (mirror / "Internal-Pkgs").symlink_to(mirror / PRIVATE)  # what a case-insensitive disk shows
    with Server(mirror) as srv:
        assert get(srv.port, f"/t/{token}/{PRIVATE}/noarch/secret-1.0-0.tar.bz2".encode())[0] == 200
        for target in (
            "/Internal-Pkgs/noarch/secret-1.0-0.tar.bz2",
            "/INTERNAL-PKGS/noarch/secret-1.0-0.tar.bz2",
            f"/t/{token}/Internal-Pkgs/noarch/secret-1.0-0.tar.bz2",
            "/%49nternal-Pkgs/noarch/secret-1.0-0.tar.bz2",
            "/internal-pkgs%20/noarch/secret-1.0-0.tar.bz2",
            "/internal-pkgs./noarch/secret-1.0-0.tar.bz2",
            "/Internal-Pkgs/",
        ):
            status, _, body = get(srv.port, target.encode())
            assert status == 404, target
            assert b"private package" not in body
        assert "Internal-Pkgs" not in httpx.get(f"{srv.url}/").text


def test_the_root_url_of_a_private_mirrored_channel_needs_a_token(mirror):
    token = cli("token", "add", PRIVATE, "--root", str(mirror)).stdout.strip()
    with Server(mirror, env={"CAS_MIRROR_CHANNEL_NAME": PRIVATE}) as srv:
        assert get(srv.port, b"/noarch/secret-1.0-0.tar.bz2")[0] == 404
        assert get(srv.port, b"/noarch/repodata.json")[0] == 404
        status, _, body = get(srv.port, f"/t/{token}/noarch/secret-1.0-0.tar.bz2".encode())
        assert (status, body) == (200, b"private package bytes")
        assert get(srv.port, b"/t/wrong/noarch/secret-1.0-0.tar.bz2")[0] == 404
