"""Layered settings: per-key replace across six layers, provenance, problems, writing one layer."""

from __future__ import annotations

from pathlib import Path

import pytest

from casconsole.layout import machine_subdir
from casconsole.settings import (
    SettingsError,
    load_settings,
    preview_write,
    read_layers,
    write_settings,
)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_when_no_file_exists(isolated_settings):
    s = load_settings()
    assert s.remote_url == "https://repo.anaconda.com/pkgs/main"
    assert s.platforms == [machine_subdir()]
    assert s.subdirs == [machine_subdir(), "noarch"]
    assert s.channel_name == "pkgs"
    assert s.channel_dir == s.mirror_dir / "pkgs"
    assert s.origins["remote_url"].layer == "default"
    assert s.origins["remote_url"].source == "built-in"


def test_each_layer_overrides_the_one_below_per_key(isolated_settings, monkeypatch, tmp_path):
    system = write(
        isolated_settings / "system.yaml", "remote_url: http://system/ch\nblacklist: [a, b]\nretries: 7\n"
    )
    user = write(isolated_settings / "user.yaml", "# user\nblacklist:\n  - c\nwhitelist: [w]\n")
    given = write(tmp_path / "given.yaml", "whitelist: [x, y]\nplatforms: [osx-arm64]\n")
    env = {
        "CAS_MIRROR_SYSTEM_CONFIG": str(system),
        "CAS_MIRROR_USER_CONFIG": str(user),
        "CAS_MIRROR_PLATFORMS": "linux-64, win-64",
        "CAS_MIRROR_PRUNE": "false",
    }
    s = load_settings(given, env=env, cli={"retries": (2, "--retries")})
    assert s.remote_url == "http://system/ch"
    assert s.origins["remote_url"].source == f"{system}:1"
    # a higher layer replaces a list as a whole: no merging
    assert s.blacklist == ["c"] and s.origins["blacklist"].source == f"{user}:2"
    assert s.whitelist == ["x", "y"] and s.origins["whitelist"].layer == "file"
    assert s.platforms == ["linux-64", "win-64"] and s.origins["platforms"].source == "CAS_MIRROR_PLATFORMS"
    assert s.prune is False and s.origins["prune"].layer == "env"
    assert (
        s.retries == 2 and s.origins["retries"].layer == "cli" and s.origins["retries"].source == "--retries"
    )
    assert s.to_json()["retries"] == {"value": 2, "layer": "cli", "source": "--retries"}


def test_problems_are_collected_with_file_and_line(isolated_settings):
    path = write(
        isolated_settings / "user.yaml",
        "remote_url: 5\nplatfroms: [linux-64]\nplatforms: [linux-65]\nblacklist: [numpy >>1]\nretries: -1\n",
    )
    with pytest.raises(SettingsError) as err:
        load_settings()
    lines = str(err.value).splitlines()
    assert lines == [
        f"{path}:1: remote_url: expected a non-empty string, got a number (5)",
        f"{path}:2: unknown key 'platfroms' (did you mean 'platforms'?)",
        f"{path}:3: platforms: unknown platform 'linux-65' (did you mean 'linux-64'?)",
        f"{path}:4: blacklist: 'numpy >>1' is not a valid match spec: unable to parse version spec: >>1",
        f"{path}:5: retries: expected a whole number >= 0, got a number (-1)",
    ]


def test_yaml_syntax_error_names_the_line(isolated_settings):
    path = write(isolated_settings / "user.yaml", "remote_url: http://a\nblacklist: [a, b\nwhitelist: []\n")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert str(err.value).startswith(f"{path}:3: YAML syntax error")


def test_not_a_mapping_and_missing_or_unreadable_files(isolated_settings, tmp_path):
    write(isolated_settings / "user.yaml", "- a\n- b\n")
    with pytest.raises(SettingsError, match="user.yaml:1: expected a mapping"):
        load_settings()
    write(isolated_settings / "user.yaml", "")
    assert load_settings().blacklist == []  # an empty file is fine
    with pytest.raises(SettingsError, match="nope.yaml: file not found"):
        load_settings(tmp_path / "nope.yaml")  # --config names a file that must exist
    folder = tmp_path / "dir.yaml"
    folder.mkdir()
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(folder)


def test_unknown_environment_variable_and_bad_env_values(monkeypatch):
    monkeypatch.setenv("CAS_MIRROR_BLACKLST", "x")
    monkeypatch.setenv("CAS_MIRROR_CONCURRENCY", "many")
    with pytest.raises(SettingsError) as err:
        load_settings()
    text = str(err.value)
    assert "CAS_MIRROR_BLACKLST: unknown key 'blacklst' (did you mean 'blacklist'?)" in text
    assert "CAS_MIRROR_CONCURRENCY: concurrency: expected a whole number >= 1" in text


def test_env_value_parsing(monkeypatch, tmp_path):
    bundle = write(tmp_path / "ca.pem", "")
    monkeypatch.setenv("CAS_MIRROR_SSL_VERIFY", str(bundle))
    monkeypatch.setenv("CAS_MIRROR_TIMEOUT", "2.5")
    monkeypatch.setenv("CAS_MIRROR_WHITELIST", "numpy >=1.20, flask,,")
    s = load_settings()
    assert s.ssl_verify == str(bundle)
    assert s.timeout == 2.5
    assert s.whitelist == ["numpy >=1.20", "flask"]


def test_relative_mirror_dir_is_relative_to_its_file(isolated_settings):
    write(isolated_settings / "user.yaml", "mirror_dir: mirror-here\n")
    assert load_settings().mirror_dir == isolated_settings / "mirror-here"


def test_layers_are_inspectable_even_with_problems(isolated_settings):
    write(isolated_settings / "user.yaml", "blacklist: [flask]\nbogus: 1\n")
    layers = read_layers()
    assert [layer.name for layer in layers] == ["default", "system", "user", "file", "env", "cli"]
    user = layers[2]
    assert user.exists and user.values == {"blacklist": ["flask"]}
    assert [p.message for p in user.problems] == ["unknown key 'bogus'"]
    assert not layers[1].exists


def test_replace_checks_values_and_marks_origin():
    s = load_settings()
    t = s.replace(blacklist=["flask"])
    assert t.blacklist == ["flask"] and s.blacklist == []
    assert t.origins["blacklist"].layer == "cli"
    with pytest.raises(SettingsError):
        s.replace(platforms=["linux-65"])


def test_write_keeps_comments_other_keys_and_a_backup(tmp_path):
    path = write(
        tmp_path / "cas.yaml",
        "# our mirror\nremote_url: http://up/ch   # the upstream\n"
        "blacklist:\n  - flask\n  - r-*\nretries: 4\n",
    )
    old, new = preview_write(path, {"blacklist": ["flask", "r-*", "numpy"], "whitelist": ["conda"]})
    assert old == path.read_text()
    assert new == (
        "# our mirror\nremote_url: http://up/ch   # the upstream\n"
        "blacklist:\n  - flask\n  - r-*\n  - numpy\nretries: 4\nwhitelist:\n  - conda\n"
    )
    write_settings(path, {"blacklist": ["flask", "r-*", "numpy"], "whitelist": ["conda"]})
    assert path.read_text() == new
    assert (tmp_path / "cas.yaml.bak").read_text() == old
    reread = load_settings(path)
    assert reread.blacklist == ["flask", "r-*", "numpy"] and reread.retries == 4
    # removing a key, and emptying a list
    write_settings(path, {"whitelist": None, "blacklist": []})
    assert "whitelist" not in path.read_text() and "blacklist: []\n" in path.read_text()


def test_write_refuses_bad_values_and_changes_nothing(tmp_path):
    path = write(tmp_path / "cas.yaml", "retries: 4\n")
    with pytest.raises(SettingsError):
        write_settings(path, {"platforms": ["linux-65"]})
    assert path.read_text() == "retries: 4\n"
    assert not (tmp_path / "cas.yaml.bak").exists()


def test_write_follows_the_files_list_style(tmp_path):
    path = write(tmp_path / "cas.yaml", "blacklist:\n- flask\n")
    _, new = preview_write(path, {"blacklist": ["flask", "numpy"], "whitelist": ["conda"]})
    assert new == "blacklist:\n- flask\n- numpy\nwhitelist:\n- conda\n"


def test_write_creates_a_missing_file(tmp_path):
    path = tmp_path / "sub" / "new.yaml"
    write_settings(path, {"blacklist": ["flask"]})
    assert load_settings(path).blacklist == ["flask"]
