"""Uploads (issue 19): cas-upload against a real cas-server; what lands, how it is indexed, and
py-rattler installing it at once. Hostile uploads are in tests/security/test_sec_uploads.py."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import time

import httpx
import pytest
from conda_client import installed_as_archived, solve_and_install
from test_server_support import PRIVATE, Server, cli, get
from upload_support import PUBLIC, add_token, cas_upload, package, put_raw, status_of, tree, upload_mirror

from casconsole.index.publish import problem_with_name
from casconsole.settings import SettingsError, load_settings


@pytest.fixture
def mirror(tmp_path):
    return upload_mirror(tmp_path / "mirror")


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def repodata(srv: Server, token: str, channel: str, subdir: str) -> dict:
    status, _, body = get(srv.port, f"/t/{token}/{channel}/{subdir}/repodata.json".encode())
    assert status == 200, status
    return json.loads(body)


def records(doc: dict) -> dict:
    return {**doc.get("packages", {}), **doc.get("packages.conda", {})}


def test_an_upload_token_publishes_packages_indexed_at_once(mirror, tmp_path):
    token = add_token(mirror, PRIVATE)
    reader = add_token(mirror, PRIVATE, upload=False)
    tool = package(tmp_path / "dist", "mytool", depends=["mylib >=2"])
    lib = package(tmp_path / "dist", "mylib", "2.1", "0", subdir="noarch", fmt=".tar.bz2", noarch="generic")
    with Server(mirror, workers=2) as srv:
        done = cas_upload(str(tool), str(lib), "--channel", PRIVATE, "--server", srv.url, "--token", token)
        assert done.returncode == 0, done.stderr
        assert "linux-64/mytool-1.0-h0_0.conda: created, indexed (1 package in linux-64" in done.stderr
        assert "noarch/mylib-2.1-0.tar.bz2: created, indexed" in done.stderr
        assert "2 of 2 uploaded" in done.stderr and token not in done.stderr + done.stdout

        # the index served right after: each record's checksums are the uploaded bytes'
        linux = repodata(srv, reader, PRIVATE, "linux-64")
        assert linux["packages.conda"]["mytool-1.0-h0_0.conda"]["sha256"] == sha256(tool)
        assert linux["packages.conda"]["mytool-1.0-h0_0.conda"]["depends"] == ["mylib >=2"]
        noarch = repodata(srv, reader, PRIVATE, "noarch")
        assert noarch["packages"]["mylib-2.1-0.tar.bz2"]["size"] == lib.stat().st_size
        status, _, body = get(srv.port, f"/t/{reader}/{PRIVATE}/linux-64/mytool-1.0-h0_0.conda".encode())
        assert (status, body) == (200, tool.read_bytes())
        channeldata = json.loads((mirror / PRIVATE / "channeldata.json").read_text())
        assert set(channeldata["packages"]) == {"mytool", "mylib"}
        # the server says what it did on stderr, with no token
        assert srv.next_line(10) is not None
        assert not any(token in line for line in srv.stderr)

    assert (mirror / PRIVATE / "linux-64" / tool.name).read_bytes() == tool.read_bytes()
    assert not [p for p in (mirror / PRIVATE).rglob("*") if p.name.startswith(".upload-")]
    listing = cli("token", "list", PRIVATE, "--root", str(mirror)).stdout
    assert "read, upload" in listing and listing.count(PRIVATE) == 2


def test_the_same_bytes_again_change_nothing_other_bytes_need_force_and_are_kept(mirror, tmp_path):
    token = add_token(mirror, PUBLIC)
    first = package(tmp_path / "v1", "mytool")
    rebuilt = package(tmp_path / "v2", "mytool", payload=b"rebuilt with other bytes\n")
    assert first.name == rebuilt.name and first.read_bytes() != rebuilt.read_bytes()
    placed = mirror / PUBLIC / "linux-64" / first.name
    index = mirror / PUBLIC / "linux-64" / "repodata.json"
    args = ("--channel", PUBLIC, "--token", token)
    with Server(mirror, workers=1) as srv:
        assert cas_upload(str(first), "--server", srv.url, *args).returncode == 0
        before = (placed.stat().st_mtime_ns, index.stat().st_mtime_ns)

        again = cas_upload(str(first), "--server", srv.url, *args)
        assert again.returncode == 0 and "unchanged" in again.stderr
        assert (placed.stat().st_mtime_ns, index.stat().st_mtime_ns) == before

        refused = cas_upload(str(rebuilt), "--server", srv.url, *args)
        assert refused.returncode == 1
        assert "409 Conflict: linux-64/mytool-1.0-h0_0.conda exists with other bytes" in refused.stderr
        assert placed.read_bytes() == first.read_bytes()
        assert (placed.stat().st_mtime_ns, index.stat().st_mtime_ns) == before

        forced = cas_upload(str(rebuilt), "--server", srv.url, *args, "--force")
        assert forced.returncode == 0 and "replaced, indexed" in forced.stderr, forced.stderr
        assert "the old file kept as .history/linux-64/" in forced.stderr
        assert placed.read_bytes() == rebuilt.read_bytes()
        doc = json.loads(httpx.get(f"{srv.url}/{PUBLIC}/linux-64/repodata.json").content)
        assert doc["packages.conda"][first.name]["sha256"] == sha256(rebuilt)
        kept = list((mirror / PUBLIC / ".history" / "linux-64").glob(f"*/{first.name}"))
        assert len(kept) == 1 and kept[0].read_bytes() == first.read_bytes()
        assert httpx.get(f"{srv.url}/{PUBLIC}/.history/linux-64/").status_code == 404  # never served

        # the flag is a query parameter, for curl too; nothing else is taken there
        answer = put_raw(
            srv.port, f"/t/{token}/{PUBLIC}/linux-64/{first.name}?force=maybe", first.read_bytes()
        )
        assert status_of(answer) == 400 and b"force=1" in answer
        answer = put_raw(srv.port, f"/t/{token}/{PUBLIC}/linux-64/{first.name}?force=1", first.read_bytes())
        assert status_of(answer) == 200 and b'"replaced"' in answer
        assert len(list((mirror / PUBLIC / ".history" / "linux-64").glob(f"*/{first.name}"))) == 2


def test_rattler_installs_an_uploaded_package_at_once(mirror, tmp_path):
    token = add_token(mirror, PRIVATE)
    lib = package(tmp_path / "dist", "mylib", "2.1", "0", subdir="noarch", noarch="generic")
    tool = package(tmp_path / "dist", "mytool", depends=["mylib >=2"])
    newer = package(tmp_path / "dist", "mytool", "1.1", depends=["mylib >=2"])
    with Server(mirror, workers=2) as srv:
        channel = f"{srv.url}/t/{token}/{PRIVATE}"
        assert (
            cas_upload(
                str(lib), str(tool), "--channel", PRIVATE, "--server", srv.url, "--token", token
            ).returncode
            == 0
        )
        prefix = tmp_path / "env"
        installed = solve_and_install(channel, ["mytool"], prefix, tmp_path / "cache1")
        assert {(r.name.normalized, str(r.version)) for r in installed} == {
            ("mytool", "1.0"),
            ("mylib", "2.1"),
        }
        assert installed_as_archived(prefix, tool) == 1 and installed_as_archived(prefix, lib) == 1

        # a newer build uploaded is what the next solve picks, with no step in between
        assert (
            cas_upload(str(newer), "--channel", PRIVATE, "--server", srv.url, "--token", token).returncode
            == 0
        )
        solved = solve_and_install(channel, ["mytool"], tmp_path / "env2", tmp_path / "cache2")
        assert ("mytool", "1.1") in {(r.name.normalized, str(r.version)) for r in solved}


@pytest.mark.slow
def test_a_refusal_whose_answer_is_lost_mid_body_is_still_told(mirror, tmp_path):
    """A large file refused at its head: the server answers, drops what follows for two seconds
    and closes, while the client still sends. The user is told the server's reason all the same
    (the answer read after the failed write, or else asked again with no body)."""
    token = add_token(mirror, PUBLIC)
    small = package(tmp_path / "dist", "huge")
    big = tmp_path / "sparse" / small.name  # 3 GB of zeros before the zip: read as the package
    big.parent.mkdir()
    with open(big, "wb") as fh:
        fh.truncate(3 << 30)
        fh.seek(3 << 30)
        fh.write(small.read_bytes())
    args = ("--channel", PUBLIC, str(big))
    with Server(mirror, "--upload-max-size", "1G", workers=1) as srv:
        wrong = cas_upload("--server", srv.url, "--token", "W" * 32, *args)
        assert wrong.returncode == 1 and "403 Forbidden: this token has no upload rights" in wrong.stderr
        large = cas_upload("--server", srv.url, "--token", token, *args)
        # (read as sent when the client's stack kept it, else told by the question with no body)
        assert large.returncode == 1 and "upload_max_size" in large.stderr
    assert not (mirror / PUBLIC / "linux-64" / small.name).exists()


def test_an_upload_arriving_at_sigterm_is_finished_within_the_grace(mirror, tmp_path):
    token = add_token(mirror, PUBLIC)
    pkg = package(tmp_path / "dist", "inflight", payload=os.urandom(200_000))
    body = pkg.read_bytes()
    srv = Server(mirror, workers=1)
    with srv, socket.create_connection(("127.0.0.1", srv.port), timeout=20) as s:
        s.sendall(
            f"PUT /t/{token}/{PUBLIC}/linux-64/{pkg.name} HTTP/1.1\r\nHost: t\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:100_000]
        )
        time.sleep(0.3)
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        s.sendall(body[100_000:])
        answer = s.recv(65536)
        assert status_of(answer) == 201 and b"Connection: close" in answer
        assert srv.proc.wait(timeout=20) == 0
    assert (mirror / PUBLIC / "linux-64" / pkg.name).read_bytes() == body


def test_cas_upload_checks_every_file_before_sending_any(mirror, tmp_path):
    good = package(tmp_path / "dist", "good")
    renamed = tmp_path / "dist" / "other-1.0-h0_0.conda"
    renamed.write_bytes(package(tmp_path / "x", "mytool").read_bytes())
    junk = tmp_path / "dist" / "junk-1.0-0.conda"
    junk.write_bytes(os.urandom(2000))
    text = tmp_path / "dist" / "notes.txt"
    text.write_text("hello")
    token = add_token(mirror, PUBLIC)
    before = tree(mirror)
    with Server(mirror, workers=1) as srv:
        done = cas_upload(
            str(good), str(renamed), str(junk), str(text), str(tmp_path / "missing-1.0-0.conda"),
            "--channel", PUBLIC, "--server", srv.url, "--token", token,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        lines = done.stderr.splitlines()
        assert any(
            "other-1.0-h0_0.conda: it was built as mytool-1.0-h0_0, not other-1.0-h0_0" in x for x in lines
        )
        assert any("junk-1.0-0.conda: not a readable conda package" in x for x in lines)
        assert any("notes.txt: not a conda package file name" in x for x in lines)
        assert any("missing-1.0-0.conda: no such file" in x for x in lines)
        assert all(line.startswith("cas-upload: error: ") for line in lines)
        assert tree(mirror) == before  # nothing sent, the good file neither
        # a wrong subdir forced by hand is found locally too
        wrong = cas_upload(
            str(good), "--subdir", "osx-64", "--channel", PUBLIC, "--server", srv.url, "--token", token
        )
        assert wrong.returncode == 2 and "built for linux-64, not osx-64" in wrong.stderr
        assert not [line for line in srv.log_lines(1, timeout=0.5) if "PUT" in line]


def test_cas_upload_over_https_with_the_sites_own_ca(mirror, tmp_path, certificate):
    cert, key = certificate
    token = add_token(mirror, PUBLIC)
    pkg = package(tmp_path / "dist", "secure")
    args = ("--channel", PUBLIC, "--token", token, str(pkg))
    with Server(mirror, "--tls-cert", str(cert), "--tls-key", str(key), workers=1) as srv:
        assert srv.url.startswith("https://")
        refused = cas_upload("--server", srv.url, *args)
        assert refused.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr
        assert "Traceback" not in refused.stderr and token not in refused.stderr
        done = cas_upload("--server", srv.url, "--ssl-verify", str(cert), *args)
        assert done.returncode == 0 and "created, indexed" in done.stderr, done.stderr
    bad = cas_upload("--server", "https://127.0.0.1:9", "--ssl-verify", str(tmp_path / "nope.pem"), *args)
    assert bad.returncode == 2 and "--ssl-verify" in bad.stderr and "not a CA bundle" in bad.stderr


def test_cas_upload_arguments_and_an_unreachable_server(tmp_path):
    good = package(tmp_path / "dist", "good")
    no_token = cas_upload(str(good), "--channel", PUBLIC, "--server", "http://127.0.0.1:9")
    assert no_token.returncode == 2 and "CAS_UPLOAD_TOKEN" in no_token.stderr
    bad_url = cas_upload(str(good), "--channel", PUBLIC, "--server", "ftp://x", "--token", "t")
    assert bad_url.returncode == 2 and "http:// or https://" in bad_url.stderr
    bad_channel = cas_upload(str(good), "--channel", ".cas", "--server", "http://x", "--token", "t")
    assert bad_channel.returncode == 2 and "starts with a dot" in bad_channel.stderr
    secret = "s3cr3t-token-value-that-must-never-show-up"
    down = cas_upload(
        str(good), "--channel", PUBLIC, "--server", "http://127.0.0.1:9", env={"CAS_UPLOAD_TOKEN": secret}
    )
    assert down.returncode == 1 and "http://127.0.0.1:9: cannot connect" in down.stderr
    assert secret not in down.stderr and "Traceback" not in down.stderr


def test_token_files_from_before_uploads_still_read(mirror, tmp_path):
    """Version 1 without rights: every record a read token; the server and the CLI take it, and
    adding an upload token leaves those records as they were."""
    token = "A" * 32
    digest = hashlib.sha256(token.encode()).hexdigest()
    old = {
        "version": 1,
        "tokens": [
            {"id": "0badc0de", "channel": PRIVATE, "sha256": digest, "created": "2024-01-01T00:00:00Z"}
        ],
    }
    (mirror / ".cas").mkdir(exist_ok=True)
    (mirror / ".cas" / "tokens.json").write_text(json.dumps(old))
    lib = package(tmp_path / "dist", "mylib", subdir="noarch")
    with Server(mirror, workers=1) as srv:
        assert get(srv.port, f"/t/{token}/{PRIVATE}/noarch/".encode())[0] == 200
        answer = put_raw(srv.port, f"/t/{token}/{PRIVATE}/noarch/{lib.name}", lib.read_bytes())
        assert status_of(answer) == 403 and b"no upload rights" in answer
    assert "0badc0de  internal-pkgs  read " in cli("token", "list", "--root", str(mirror)).stdout
    add_token(mirror, PRIVATE)
    records_now = json.loads((mirror / ".cas" / "tokens.json").read_text())["tokens"]
    assert records_now[0] == old["tokens"][0]
    assert records_now[1]["upload"] is True


def test_no_upload_token_for_the_mirrored_channel(mirror):
    result = cli("token", "add", "pkgs", "--upload", "--root", str(mirror))
    assert result.returncode == 2 and "the mirrored channel" in result.stderr
    assert "pkgs" not in cli("token", "list", "--root", str(mirror)).stdout


def test_upload_settings_and_the_faq_timeout_as_written(tmp_path):
    faq = tmp_path / "faq.yaml"
    faq.write_text("gunicorn:\n    timeout: 120\n")  # the FAQ's text, verbatim
    settings = load_settings(faq)
    assert settings.upload_timeout == 120.0
    assert str(faq) in settings.origins["upload_timeout"].source
    sized = tmp_path / "sized.yaml"
    sized.write_text("upload_max_size: 500M\nupload_timeout: 30\n")
    assert (load_settings(sized).upload_max_size, load_settings(sized).upload_timeout) == (500 << 20, 30.0)
    assert load_settings(sized, env={"CAS_MIRROR_UPLOAD_MAX_SIZE": "2 GiB"}).upload_max_size == 2 << 30
    bad = tmp_path / "bad.yaml"
    bad.write_text("platforms: [linux-64]\nupload_max_size: lots\ngunicorn:\n  workers: 4\n")
    with pytest.raises(SettingsError) as err:
        load_settings(bad)
    assert f"{bad}:2: upload_max_size: expected a size" in str(err.value)
    assert f"{bad}:3: gunicorn.workers: unknown key" in str(err.value)


@pytest.mark.realdata
def test_every_real_package_name_is_a_place_an_upload_may_take(realdata):
    """The file-name rule of uploads (plain conda names in ASCII) refuses no real package."""
    names = set()
    for path in realdata.glob("conda-subchannel-demo/*/repodata.json"):
        doc = json.loads(path.read_text())
        names |= set(doc.get("packages", {})) | set(doc.get("packages.conda", {}))
    doc = json.loads((realdata / "conda-conda/tests/data/repodata/r_linux-64.json").read_text())
    names |= set(doc["packages"])
    names |= {p.name for p in realdata.glob("JanCaha-conda-channel/*/*.conda")}
    assert len(names) > 13_000
    assert [fn for fn in names if problem_with_name("linux-64", fn)] == []
