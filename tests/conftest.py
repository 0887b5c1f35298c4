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
    """No test reads /etc/cas-mirror, ~/.cas-mirror or the developer's CAS_MIRROR_* variables."""
    home = tmp_path_factory.mktemp("settings")
    for var in list(os.environ):
        if var.startswith("CAS_MIRROR_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("CAS_MIRROR_SYSTEM_CONFIG", str(home / "system.yaml"))
    monkeypatch.setenv("CAS_MIRROR_USER_CONFIG", str(home / "user.yaml"))
    return home


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
