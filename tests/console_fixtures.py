"""Fixtures of the console tests (a pytest plugin: `pytest_plugins = ["console_fixtures"]`).

Every console test runs in its own folder with relative paths only (the upstream as `upstream`,
the mirror as `mirror`, the user file as `user.yaml`), so what the screens show, and thus the
snapshots, is the same on every machine. The conftest's autouse fixture already hides the
developer's own settings; `console_dir` points the user file at the test folder on top of that.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from console_helpers import add_channel

USER_SETTINGS = """\
# settings of a console test
remote_url: {remote_url}
mirror_dir: mirror
platforms: [linux-64]
license_blacklist: [AGPL]
blacklist:
  - r-*
  - mkl
whitelist:
  - r-dplyr
"""


@pytest.fixture
def console_dir(tmp_path, monkeypatch, demo_channel) -> Path:
    """A folder holding `upstream` (the demo channel), `user.yaml` and an empty `mirror`."""
    (tmp_path / "upstream").symlink_to(demo_channel, target_is_directory=True)
    (tmp_path / "user.yaml").write_text(USER_SETTINGS.format(remote_url="upstream"))
    (tmp_path / "mirror").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CAS_MIRROR_USER_CONFIG", "user.yaml")
    monkeypatch.setenv("CAS_MIRROR_SYSTEM_CONFIG", "system.yaml")
    return tmp_path


@pytest.fixture
def http_console_dir(console_dir, demo_url) -> Path:
    """The same, with the upstream fetched over HTTP from the demo server on 127.0.0.1."""
    (console_dir / "user.yaml").write_text(USER_SETTINGS.format(remote_url=demo_url))
    return console_dir


@pytest.fixture
def internal_channel(console_dir, demo_channel) -> Path:
    """`mirror/internal-pkgs`, indexed: a few linux-64 and noarch packages of the demo."""
    return add_channel(
        console_dir / "mirror",
        "internal-pkgs",
        demo_channel,
        {"linux-64": ["curl-", "zlib-", "openssl-"], "noarch": ["six-", "flask-"]},
    )


@pytest.fixture
def frozen_ago(monkeypatch):
    """Times relative to now ("3 seconds ago") read the same in every run."""
    import casconsole.console.screens.base as base
    import casconsole.console.screens.index as index

    monkeypatch.setattr(base, "ago", lambda timestamp: "never" if timestamp is None else "a moment ago")
    monkeypatch.setattr(index, "ago", lambda timestamp: "never" if timestamp is None else "a moment ago")
