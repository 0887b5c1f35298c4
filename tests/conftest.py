"""Shared fixtures: hide the developer's real settings, the demo upstream, the real-data folder."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from casconsole.demo import DemoServer, generate_channel

# ../shared/realdata beside the checkout; tests that use it skip where it is absent
REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path_factory, monkeypatch):
    """No test reads /etc/cas-mirror, ~/.cas-mirror, the developer's CAS_MIRROR_* or AWS_*
    variables, or ~/.aws."""
    home = tmp_path_factory.mktemp("settings")
    for var in list(os.environ):
        if var.startswith(("CAS_MIRROR_", "AWS_")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("CAS_MIRROR_SYSTEM_CONFIG", str(home / "system.yaml"))
    monkeypatch.setenv("CAS_MIRROR_USER_CONFIG", str(home / "user.yaml"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "aws-config"))
    return home


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """A real S3 server (SeaweedFS) on 127.0.0.1 for the session (tests/seaweed.py)."""
    from seaweed import SeaweedFS

    with SeaweedFS(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def bucket(seaweed, monkeypatch, request):
    """This test's own prefix in the SeaweedFS bucket, its credentials in the AWS variables
    (so the commands a test runs find them as a user's would): `bucket.url`, `bucket.prefix`."""
    import re
    import uuid

    for name, value in seaweed.env.items():
        monkeypatch.setenv(name, value)
    prefix = f"{re.sub(r'[^A-Za-z0-9-]+', '-', request.node.name)[:40].strip('-')}-{uuid.uuid4().hex[:8]}"
    return _Bucket(seaweed, prefix)


class _Bucket:
    def __init__(self, server, prefix: str):
        self.server = server
        self.prefix = prefix
        self.url = server.url(prefix)
        self.endpoint = server.endpoint

    def settings_text(self) -> str:
        return self.server.settings_text(self.prefix)

    @property
    def view(self):
        """The bucket under this prefix, seen straight through obstore (tests/seaweed.py)."""
        from seaweed import BucketView

        return BucketView(self.server, self.prefix)


@pytest.fixture
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip("../shared/realdata is absent")
    return REALDATA


@pytest.fixture(scope="session")
def demo_channel(tmp_path_factory) -> Path:
    """The demo upstream channel on disk (small payloads), built once per test session."""
    return generate_channel(tmp_path_factory.mktemp("demo") / "upstream", size=0.02)


@pytest.fixture(scope="session")
def demo_url(demo_channel) -> str:
    """The demo upstream served on 127.0.0.1."""
    with DemoServer(demo_channel) as server:
        yield server.url


@pytest.fixture
def certificate(tmp_path):
    """A self-signed certificate for 127.0.0.1 (its own CA bundle) and its key, made by the test."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", str(key),
         "-out", str(cert), "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key
