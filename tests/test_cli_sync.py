"""cas-sync --show and --dry-run as a user runs them: real processes, exit statuses, output."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run(*args, env=None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "casconsole.cli.sync", *args], capture_output=True, text=True, env=full_env
    )


def test_show_json_names_layer_and_source(isolated_settings, tmp_path):
    (isolated_settings / "user.yaml").write_text("blacklist:\n  - flask\n")
    given = tmp_path / "given.yaml"
    given.write_text("retries: 9\n")
    result = run("--show", "--json", "--config", str(given), "--whitelist", "conda", "--platform", "linux-64",
                 env={"CAS_MIRROR_TIMEOUT": "12"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["blacklist"] == {
        "value": ["flask"],
        "layer": "user",
        "source": f"{isolated_settings}/user.yaml:1",
    }
    assert data["retries"] == {"value": 9, "layer": "file", "source": f"{given}:1"}
    assert data["timeout"] == {"value": 12.0, "layer": "env", "source": "CAS_MIRROR_TIMEOUT"}
    assert data["whitelist"] == {"value": ["conda"], "layer": "cli", "source": "--whitelist"}
    assert data["channel_name"] == {"value": "pkgs", "layer": "default", "source": "built-in"}


def test_show_text(isolated_settings):
    (isolated_settings / "user.yaml").write_text("remote_url: http://127.0.0.1:1/ch\n")
    result = run("--show", "--set", "retries=5")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith("remote_url "))
    assert lines[i].split() == ["remote_url", "http://127.0.0.1:1/ch"]
    assert lines[i + 1].strip() == f"from user: {isolated_settings}/user.yaml:1"
    assert "from cli: --set retries" in result.stdout


def test_bad_settings_exit_2_with_file_and_line_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("platforms: [linux-65]\nblacklst: [a]\n")
    result = run("--dry-run", "--config", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{bad}:1: platforms: unknown platform 'linux-65' (did you mean 'linux-64'?)" in result.stderr
    assert f"{bad}:2: unknown key 'blacklst' (did you mean 'blacklist'?)" in result.stderr
    syntax = tmp_path / "syntax.yaml"
    syntax.write_text("blacklist: [a\n")
    result = run("--show", "--config", str(syntax))
    assert result.returncode == 2 and f"{syntax}:2: YAML syntax error" in result.stderr
    assert run("--show", "--set", "nokey").returncode == 2


def test_dry_run_text_and_json_write_nothing(demo_url, tmp_path):
    mirror = tmp_path / "mirror"
    common = ["--remote-url", demo_url, "--mirror-dir", str(mirror), "--platform", "linux-64",
              "--license-blacklist", "GPL", "--blacklist", "r-*", "--whitelist", "readline"]  # fmt: skip
    text = run("--dry-run", *common)
    assert text.returncode == 0, text.stderr
    assert "linux-64" in text.stdout and "noarch" in text.stdout
    for label in ("upstream", "dropped by license", "dropped by blacklist", "added back by whitelist", "kept",
                  "to download", "already present", "to delete"):  # fmt: skip
        assert label in text.stdout
    as_json = run("--dry-run", "--json", *common)
    data = json.loads(as_json.stdout)
    assert data["channel"] == "pkgs" and data["mirror_dir"] == str(mirror)
    linux = data["subdirs"]["linux-64"]
    assert linux["download"] == linux["included"] and linux["delete"] == []
    assert any(reason.startswith("license_blacklist: GPL") for reason in linux["excluded"].values())
    assert linux["download_bytes"] > 0
    assert not mirror.exists()


def test_unreachable_upstream_exits_1_with_the_url(tmp_path):
    result = run("--dry-run", "--remote-url", "http://127.0.0.1:9/none", "--mirror-dir", str(tmp_path))
    assert result.returncode == 1
    assert "http://127.0.0.1:9/none" in result.stderr and "Traceback" not in result.stderr
