"""The storage interface's contract, run against both backends: a folder, and a bucket of a real
SeaweedFS started by the tests (tests/seaweed.py). Then what only a bucket has: presigned URLs,
credentials from the usual places, failures told in one line."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest

from casconsole.errors import SettingsError, StorageError
from casconsole.layout import BucketURL
from casconsole.settings import load_settings
from casconsole.storage import BadKey, BucketError, ObjectNotFound, WriteConflict, open_storage


@pytest.fixture(params=["folder", "bucket"])
def storage(request, tmp_path):
    if request.param == "folder":
        store = open_storage(load_settings(cli={"mirror_dir": (str(tmp_path / "root"), "test")}))
    else:
        bucket = request.getfixturevalue("bucket")
        settings = load_settings(
            cli={"mirror_dir": (bucket.url, "test"), "s3_endpoint_url": (bucket.endpoint, "test")}
        )
        store = open_storage(settings)
    yield store
    store.close()


def test_put_get_head_and_delete(storage):
    assert storage.head("pkgs/noarch/a.txt") is None
    with pytest.raises(ObjectNotFound):
        storage.get("pkgs/noarch/a.txt")
    etag = storage.put("pkgs/noarch/a.txt", b"hello")
    data, info = storage.get("pkgs/noarch/a.txt")
    assert data == b"hello"
    assert (info.key, info.size, info.etag, info.name) == ("pkgs/noarch/a.txt", 5, etag, "a.txt")
    assert storage.head("pkgs/noarch/a.txt") == info
    assert info.modified > 0
    assert storage.delete("pkgs/noarch/a.txt")
    assert storage.head("pkgs/noarch/a.txt") is None


def test_if_none_match_creates_only_once(storage):
    storage.put("k/one", b"first", if_none_match=True)
    with pytest.raises(WriteConflict, match="k/one"):
        storage.put("k/one", b"second", if_none_match=True)
    assert storage.get("k/one")[0] == b"first"


def test_if_match_writes_only_over_the_version_read(storage):
    etag = storage.put("k/two", b"v1")
    newer = storage.put("k/two", b"v2", if_match=etag)
    assert newer != etag
    with pytest.raises(WriteConflict):
        storage.put("k/two", b"v3", if_match=etag)  # stale: v2 was written since
    assert storage.get("k/two")[0] == b"v2"
    with pytest.raises(WriteConflict):
        storage.put("k/absent", b"x", if_match=etag)
    assert storage.head("k/absent") is None


def test_of_two_writers_with_the_same_etag_exactly_one_wins(storage):
    def write(who: str, seen: str, start: threading.Barrier, results: list[str]) -> None:
        start.wait()
        try:
            storage.put("race/repodata.json", who.encode(), if_match=seen)
            results.append(who)
        except WriteConflict:
            results.append("lost")

    etag = storage.put("race/repodata.json", b"0")
    for round_ in range(8):
        results: list[str] = []
        start = threading.Barrier(2)
        threads = [
            threading.Thread(target=write, args=(f"w{round_}{i}", etag, start, results)) for i in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [r for r in results if r != "lost"]
        assert len(winners) == 1, results
        data, info = storage.get("race/repodata.json")
        assert data == winners[0].encode()
        etag = info.etag


def test_ranges_and_streams(storage):
    data = os.urandom(3 << 20)
    storage.put("big/blob", data)
    assert b"".join(storage.read("big/blob")) == data
    assert b"".join(storage.read("big/blob", 10, 20)) == data[10:20]
    assert b"".join(storage.read("big/blob", (3 << 20) - 5)) == data[-5:]
    with pytest.raises(ObjectNotFound):
        b"".join(storage.read("big/none"))


def test_put_file_in_parts(storage, tmp_path):
    path = tmp_path / "large.conda"
    with open(path, "wb") as fh:
        for _ in range(20):
            fh.write(os.urandom(1 << 20))
    etag = storage.put_file("pkgs/linux-64/large.conda", str(path))
    info = storage.head("pkgs/linux-64/large.conda")
    assert info is not None and info.size == 20 << 20 and info.etag == etag
    got = hashlib.sha256(b"".join(storage.read("pkgs/linux-64/large.conda"))).hexdigest()
    assert got == hashlib.sha256(path.read_bytes()).hexdigest()


def test_listing(storage):
    for key in ("c/linux-64/a.conda", "c/linux-64/b.conda", "c/noarch/n.conda", "c/channeldata.json"):
        storage.put(key, key.encode())
    assert sorted(o.key for o in storage.list("c/linux-64")) == ["c/linux-64/a.conda", "c/linux-64/b.conda"]
    assert sorted(o.key for o in storage.list("c")) == [
        "c/channeldata.json", "c/linux-64/a.conda", "c/linux-64/b.conda", "c/noarch/n.conda",
    ]  # fmt: skip
    folders, objects = storage.list_dir("c")
    assert folders == ["linux-64", "noarch"]
    assert [(o.key, o.size) for o in objects] == [("c/channeldata.json", len("c/channeldata.json"))]
    assert storage.list_dir("nothing-here") == ([], [])
    assert list(storage.list("nothing-here")) == []


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a"])
def test_keys_that_name_nothing_below_the_root(storage, key):
    with pytest.raises(BadKey):
        storage.put(key, b"x")


# ---------------------------------------------------------------- only a bucket


def bucket_settings(bucket, **more):
    cli = {"mirror_dir": (bucket.url, "test"), "s3_endpoint_url": (bucket.endpoint, "test")}
    cli.update({k: (v, "test") for k, v in more.items()})
    return load_settings(cli=cli)


def test_a_presigned_url_gets_the_object_without_credentials(bucket):
    store = open_storage(bucket_settings(bucket))
    store.put("pkgs/noarch/x.txt", b"signed bytes")
    url = store.sign("pkgs/noarch/x.txt", 60)
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"signed bytes"
    unsigned = url.split("?", 1)[0]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(unsigned, timeout=10)
    assert refused.value.code == 403


def test_a_folder_has_no_presigned_urls(tmp_path):
    store = open_storage(load_settings(cli={"mirror_dir": (str(tmp_path), "test")}))
    with pytest.raises(StorageError, match="presigned"):
        store.sign("a", 60)


def test_refused_credentials_are_one_line_naming_the_object(bucket, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    store = open_storage(bucket_settings(bucket, retries=0))
    with pytest.raises(BucketError) as refused:
        store.get("pkgs/noarch/repodata.json")
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{bucket.url}/pkgs/noarch/repodata.json: reading: ")
    assert "AWS_ACCESS_KEY_ID" in message  # where the refused credentials came from
    assert "not-the-secret" not in message
    assert refused.value.exit_status == 4


def test_an_endpoint_nobody_answers_is_one_line(bucket):
    store = open_storage(bucket_settings(bucket, retries=0, s3_endpoint_url="http://127.0.0.1:9"))
    with pytest.raises(BucketError) as failed:
        store.put("x", b"y")
    assert "connection refused" in str(failed.value)
    assert "\n" not in str(failed.value)


# ---------------------------------------------------------------- where credentials come from


def test_credentials_from_settings_then_variables_then_files(isolated_settings, monkeypatch):
    from casconsole.storage.credentials import resolve

    creds_file = isolated_settings / "aws-credentials"
    config_file = isolated_settings / "aws-config"
    creds_file.write_text(
        "[default]\naws_access_key_id = FILEKEY\naws_secret_access_key = FILESECRET\n"
        "[ops]\naws_access_key_id = OPSKEY\naws_secret_access_key = OPSSECRET\n"
    )
    config_file.write_text("[profile ops]\nregion = eu-west-3\nendpoint_url = http://seaweed.example:8333\n")
    settings = load_settings(cli={"mirror_dir": ("s3://bkt/p", "t")})
    got = resolve(settings)
    assert (got.access_key_id, got.region, got.endpoint) == ("FILEKEY", "us-east-1", None)
    assert str(creds_file) in got.source and "FILESECRET" not in repr(got)
    monkeypatch.setenv("AWS_PROFILE", "ops")
    got = resolve(settings)
    assert (got.access_key_id, got.region, got.endpoint) == (
        "OPSKEY",
        "eu-west-3",
        "http://seaweed.example:8333",
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ENVKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "ENVSECRET")
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    got = resolve(settings)
    assert (got.access_key_id, got.secret_access_key, got.region) == ("ENVKEY", "ENVSECRET", "ap-south-1")
    settings = load_settings(
        cli={"mirror_dir": ("s3://bkt/p", "t"), "s3_access_key_id": ("SETKEY", "t"),
             "s3_secret_access_key": ("SETSECRET", "t"), "s3_region": ("local", "t")}
    )  # fmt: skip
    got = resolve(settings)
    assert (got.access_key_id, got.secret_access_key, got.region, got.source) == (
        "SETKEY", "SETSECRET", "local", "settings",
    )  # fmt: skip


def test_a_profile_that_is_not_there_and_a_broken_file_are_named(isolated_settings, monkeypatch):
    from casconsole.storage.credentials import resolve

    settings = load_settings(cli={"mirror_dir": ("s3://bkt/p", "t"), "s3_profile": ("nosuch", "t")})
    with pytest.raises(SettingsError, match="no profile 'nosuch'"):
        resolve(settings)
    (isolated_settings / "aws-credentials").write_text(
        "[default]\naws_access_key_id = A\naws_access_key_id = B\n"
    )
    with pytest.raises(
        SettingsError,
        match=r"aws-credentials:3: not an AWS settings file \(option 'aws_access_key_id' in section "
        r"'default' already exists\)",
    ):
        resolve(load_settings(cli={"mirror_dir": ("s3://bkt/p", "t")}))


def test_show_never_prints_a_credential(tmp_path):
    config = tmp_path / "cas.yaml"
    config.write_text(
        "mirror_dir: s3://mirror-bucket/conda\ns3_endpoint_url: http://127.0.0.1:8333\n"
        "s3_access_key_id: AKIDSHOWN\ns3_secret_access_key: VERYSECRETVALUE\n"
    )
    env = {**os.environ, "CAS_MIRROR_S3_SESSION_TOKEN": "SESSIONTOKENVALUE"}
    for args in (["--show"], ["--show", "--json"]):
        done = subprocess.run(
            [sys.executable, "-m", "casconsole.cli.sync", "--config", str(config), *args],
            capture_output=True, text=True, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        for secret in ("AKIDSHOWN", "VERYSECRETVALUE", "SESSIONTOKENVALUE"):
            assert secret not in done.stdout + done.stderr
        assert "s3://mirror-bucket/conda" in done.stdout
        assert done.stdout.count("<hidden>") == 3


def test_mirror_dir_names_a_bucket_or_a_folder(tmp_path):
    assert load_settings(cli={"mirror_dir": ("s3://my-bucket/a/b/", "t")}).mirror_dir == BucketURL(
        "my-bucket", "a/b"
    )
    assert load_settings(cli={"mirror_dir": ("s3://my-bucket", "t")}).mirror_dir == BucketURL("my-bucket", "")
    for bad, why in (("s3://No_Such/x", "not a bucket name"), ("s3://bucket/a/../b", "'..'")):
        with pytest.raises(SettingsError, match=why):
            load_settings(cli={"mirror_dir": (bad, "--mirror-dir")})
    with pytest.raises(TypeError):
        os.fspath(load_settings(cli={"mirror_dir": ("s3://my-bucket/x", "t")}).mirror_dir)


def test_the_console_shows_a_credential_as_hidden():
    from casconsole.console.screens.config import short, show_value

    assert show_value("VERYSECRETVALUE", "s3_secret_access_key") == "<hidden>"
    assert short("AKIDSHOWN", 20, "s3_access_key_id") == "<hidden>"
    assert show_value(None, "s3_session_token") == "null"  # unset says so
    assert show_value("http://127.0.0.1:8333", "s3_endpoint_url") == "http://127.0.0.1:8333"
