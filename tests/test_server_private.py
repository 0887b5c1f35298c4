"""Private channels: reachable only under /t/<token>/, tokens hashed and managed by the CLI."""

from __future__ import annotations

import json

import httpx
import pytest
from processes import wait_for
from test_server_support import PRIVATE, Server, cli, get, make_mirror

from casconsole.serve.tokens import hash_token, new_token


@pytest.fixture
def mirror(tmp_path):
    return make_mirror(tmp_path / "mirror")


def add(mirror, channel=PRIVATE) -> str:
    result = cli("token", "add", channel, "--root", str(mirror))
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert len(token) >= 32
    return token


def not_found_signature(r: httpx.Response):
    headers = {k: v for k, v in r.headers.items() if k != "date"}
    return r.status_code, headers, r.content


def test_private_channel_only_under_a_valid_token(mirror):
    token = add(mirror)
    other = add(mirror, "some-other-channel")
    with Server(mirror) as srv, httpx.Client(base_url=srv.url) as c:
        good = c.get(f"/t/{token}/{PRIVATE}/noarch/repodata.json")
        assert good.status_code == 200
        assert good.json()["info"]["subdir"] == "noarch"
        assert c.get(f"/t/{token}/{PRIVATE}/noarch/secret-1.0-0.tar.bz2").content == (
            b"private package bytes"
        )
        assert c.get(f"/t/{token}/{PRIVATE}/noarch/").status_code == 200

        # missing, wrong, other channel's token, no channel: all one and the same 404
        reference = not_found_signature(c.get("/no-such-channel/noarch/repodata.json"))
        assert reference[0] == 404
        for url in (
            f"/{PRIVATE}/noarch/repodata.json",
            f"/t/wrong-token/{PRIVATE}/noarch/repodata.json",
            f"/t/{other}/{PRIVATE}/noarch/repodata.json",
            f"/t/{token[:-1]}/{PRIVATE}/noarch/repodata.json",
            f"/t/{hash_token(token)}/{PRIVATE}/noarch/repodata.json",  # the stored hash is no key
            f"/{PRIVATE}%2Fnoarch/repodata.json".replace("%2F", "/"),
            f"/{PRIVATE}",
            f"/{PRIVATE}/",
            f"/t/wrong-token/{PRIVATE}",
        ):
            assert not_found_signature(c.get(url)) == reference, url

        status, _, body = get(srv.port, f"//{PRIVATE}//noarch/repodata.json".encode())
        assert (status, body) == (404, reference[2])  # raw: httpx reads // as a host
        # public channels answer under /t/<token>/ too, with any token
        assert c.get(f"/t/{token}/pkgs/noarch/repodata.json").status_code == 200
        assert c.get("/t/anything/pkgs/noarch/repodata.json").status_code == 200
        # the root page under a token lists what that token opens
        assert PRIVATE in c.get(f"/t/{token}/").text
        assert PRIVATE not in c.get("/t/wrong/").text
        assert PRIVATE not in c.get("/").text


def test_tokens_are_stored_hashed_listed_and_revoked_while_serving(mirror):
    t1 = add(mirror)
    t2 = add(mirror)
    stored = (mirror / ".cas" / "tokens.json").read_text()
    assert t1 not in stored and t2 not in stored
    assert hash_token(t1) in stored
    assert (mirror / ".cas" / "tokens.json").stat().st_mode & 0o077 == 0

    listing = cli("token", "list", "--root", str(mirror))
    assert listing.returncode == 0
    assert t1 not in listing.stdout
    rows = [line.split() for line in listing.stdout.splitlines()[1:]]
    assert [r[1] for r in rows] == [PRIVATE, PRIVATE]
    id1 = next(r[0] for r in rows if json.loads(stored)["tokens"][0]["id"] == r[0])

    url1 = f"/t/{t1}/{PRIVATE}/noarch/repodata.json"
    url2 = f"/t/{t2}/{PRIVATE}/noarch/repodata.json"
    with Server(mirror) as srv, httpx.Client(base_url=srv.url) as c:
        assert c.get(url1).status_code == 200
        assert c.get(url2).status_code == 200
        revoked = cli("token", "revoke", PRIVATE, id1, "--root", str(mirror))
        assert revoked.returncode == 0, revoked.stderr
        assert id1 in revoked.stdout
        # takes effect at once, in every worker, without a restart
        assert all(c.get(url1).status_code == 404 for _ in range(10))
        assert c.get(url2).status_code == 200
        assert cli("token", "revoke", PRIVATE, "--all", "--root", str(mirror)).returncode == 0
        assert c.get(url2).status_code == 404
        # a token added while it runs works at once
        t3 = add(mirror)
        assert wait_for(lambda: c.get(f"/t/{t3}/{PRIVATE}/noarch/repodata.json").status_code == 200)
    listing = cli("token", "list", PRIVATE, "--root", str(mirror)).stdout.splitlines()
    assert len(listing) == 2  # the header and t3's row
    assert cli("token", "revoke", PRIVATE, "--all", "--root", str(mirror)).returncode == 0
    assert "no tokens" in cli("token", "list", PRIVATE, "--root", str(mirror)).stderr


def test_a_token_never_starts_with_a_dash():
    """`cas-upload --token -x...` reads the token as an option; one in 64 of token_urlsafe's
    would begin with `-` (2,000 draws: all but certain to meet one without the guard)."""
    tokens = [new_token() for _ in range(2000)]
    assert not [t for t in tokens if t.startswith("-")]
    assert len(set(tokens)) == 2000 and {len(t) for t in tokens} == {32}
    assert any("-" in t for t in tokens)  # the alphabet is still URL-safe base64's


def test_a_corrupt_token_file_denies_everything(mirror):
    token = add(mirror)
    with Server(mirror) as srv, httpx.Client(base_url=srv.url) as c:
        assert c.get(f"/t/{token}/{PRIVATE}/noarch/repodata.json").status_code == 200
        (mirror / ".cas" / "tokens.json").write_text("{not json")
        assert c.get(f"/t/{token}/{PRIVATE}/noarch/repodata.json").status_code == 404
        assert c.get("/pkgs/noarch/repodata.json").status_code == 200
    # the CLI says what is wrong and does not overwrite the file
    result = cli("token", "add", PRIVATE, "--root", str(mirror))
    assert result.returncode == 1
    assert "not a valid token file" in result.stderr
    assert "Traceback" not in result.stderr
    assert (mirror / ".cas" / "tokens.json").read_text() == "{not json"


def test_token_cli_bad_input(mirror):
    for args, message in (
        (("token", "revoke", PRIVATE), "give token ids"),
        (("token", "revoke", PRIVATE, "abcd", "--all"), "give token ids"),
        (("token", "revoke", PRIVATE, "deadbeef"), "no token deadbeef"),
        (("token",), "add|list|revoke"),
        (("token", "add"), "CHANNEL"),
    ):
        result = cli(*args, "--root", str(mirror)) if args[1:] else cli(*args)
        assert result.returncode in (1, 2), args
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    missing = cli("token", "add", PRIVATE, "--root", str(mirror / "nope"))
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr


def test_token_add_for_a_public_channel_warns(mirror):
    result = cli("token", "add", "pkgs", "--root", str(mirror))
    assert result.returncode == 0
    assert "not in private_channels" in result.stderr
