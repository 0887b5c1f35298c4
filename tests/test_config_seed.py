"""The settings as the seed's administrators write them, through `cas-sync --show` as they run it:
the FAQ's config file verbatim, scalars where lists are expected (files, variables, flags),
max_prune, ssl_verify and remote_url checked with the settings (exit 2, file and line named),
secrets hidden wherever settings are shown, a config path that is a folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

# the FAQ's "fully working example", as it is printed there
FAQ_EXAMPLE = """\
mirror_dir: /home/cas-mirror
platforms:
  - linux-32
  - linux-64
license_blacklist: GPL
whitelist:
  - distribute
  - conda
blacklist:
  - flask
  - readline
"""


def cas_sync(*args, env=None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "casconsole.cli.sync", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    assert "Traceback" not in result.stdout + result.stderr
    return result


def show(*args, env=None) -> dict:
    result = cas_sync("--show", "--json", *args, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_faq_example_is_read_as_written(tmp_path):
    config = tmp_path / "cas-mirror"
    config.write_text(FAQ_EXAMPLE)
    data = show("--config", config)
    assert data["mirror_dir"]["value"] == "/home/cas-mirror"
    assert data["platforms"]["value"] == ["linux-32", "linux-64"]
    assert data["license_blacklist"] == {"value": ["GPL"], "layer": "file", "source": f"{config}:5"}
    assert data["whitelist"]["value"] == ["distribute", "conda"]
    assert data["blacklist"]["value"] == ["flask", "readline"]
    text = cas_sync("--show", "--config", config).stdout
    assert re.search(r"^license_blacklist +GPL$", text, re.M) and f"from file: {config}:5" in text


def test_a_scalar_where_a_list_is_expected_is_a_one_item_list(tmp_path, isolated_settings):
    (isolated_settings / "user.yaml").write_text(
        "platforms: linux-64\nblacklist: flask\nwhitelist: numpy >=1.20\n"
    )
    data = show()
    assert data["platforms"]["value"] == ["linux-64"]
    assert data["blacklist"]["value"] == ["flask"]
    assert data["whitelist"]["value"] == ["numpy >=1.20"]  # not split: a match spec may hold commas
    # variables and flags: one item, or comma-separated
    data = show(env={"CAS_MIRROR_LICENSE_BLACKLIST": "GPL", "CAS_MIRROR_PRIVATE_CHANNELS": "team"})
    assert data["license_blacklist"]["value"] == ["GPL"]
    assert data["private_channels"]["value"] == ["team"]
    data = show("--license-blacklist", "GPL", "--platform", "osx-arm64", "--set", "blacklist=readline")
    assert data["license_blacklist"]["value"] == ["GPL"]
    assert data["platforms"]["value"] == ["osx-arm64"]
    assert data["blacklist"] == {"value": ["readline"], "layer": "cli", "source": "--set blacklist"}


def test_a_scalar_of_the_wrong_kind_is_still_an_error_with_its_line(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("remote_url: http://x\nplatforms: 64\nblacklist: {a: 1}\n")
    result = cas_sync("--show", "--config", config)
    assert result.returncode == 2
    assert (
        f"{config}:2: platforms: expected a list of strings (or one string), got a number (64)"
        in result.stderr
    )
    assert f"{config}:3: blacklist: expected a list of strings (or one string)" in result.stderr


@pytest.mark.parametrize(("text", "share"), [("10%", 0.1), ("0.25", 0.25), ("2.5%", 0.025)])
def test_max_prune_is_a_fraction_or_a_percentage(tmp_path, text, share):
    config = tmp_path / "c.yaml"
    config.write_text(f"max_prune: {text if '%' not in text else repr(text)}\n")
    assert show("--config", config)["max_prune"]["value"] == share
    assert show("--max-prune", text)["max_prune"]["value"] == share
    assert show(env={"CAS_MIRROR_MAX_PRUNE": text})["max_prune"]["value"] == share


def test_max_prune_defaults_to_ten_percent_and_rejects_what_is_not_a_share(tmp_path):
    assert show()["max_prune"] == {"value": 0.1, "layer": "default", "source": "built-in"}
    config = tmp_path / "c.yaml"
    config.write_text("max_prune: 50\n")
    result = cas_sync("--show", "--config", config)
    assert result.returncode == 2
    assert f"{config}:1: max_prune: expected a share between 0 and 1" in result.stderr
    assert "(for a percentage write '50%')" in result.stderr
    result = cas_sync("--show", "--max-prune", "most")
    assert result.returncode == 2 and "expected a fraction (0.1) or a percentage (10%)" in result.stderr


def test_ssl_verify_is_true_false_or_an_existing_file(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    assert show("--ssl-verify", bundle)["ssl_verify"]["value"] == str(bundle)
    assert show("--ssl-verify", "false")["ssl_verify"]["value"] is False
    config = tmp_path / "c.yaml"
    for value, why in ((tmp_path / "nope.pem", "does not exist"), (tmp_path, "is not a file")):
        config.write_text(f"remote_url: http://x\nssl_verify: {value}\n")
        result = cas_sync("--show", "--config", config)
        assert result.returncode == 2
        assert result.stderr == (
            f"cas-sync: error: {config}:2: ssl_verify: expected true, false or the path of a CA bundle file;"
            f" '{value}' {why}\n"
        )
    result = cas_sync("--dry-run", "--ssl-verify", tmp_path / "nope.pem")  # before anything is fetched
    assert result.returncode == 2 and "--ssl-verify: ssl_verify:" in result.stderr


def test_an_unsupported_url_scheme_is_a_settings_error(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("platforms: [linux-64]\nremote_url: ftp://mirror.example.org/pkgs/main\n")
    for args in (("--show",), ("--dry-run",), ()):
        result = cas_sync(*args, "--config", config, "--mirror-dir", tmp_path / "m")
        assert result.returncode == 2
        assert result.stderr == (
            f"cas-sync: error: {config}:2: remote_url: unsupported URL scheme 'ftp' in "
            "'ftp://mirror.example.org/pkgs/main' (use http, https, file:// or a path)\n"
        )
    assert not (tmp_path / "m").exists()
    for url in ("https://x.example/ch", "http://x/ch", "file:///srv/ch", "/srv/ch", "relative/ch"):
        assert cas_sync("--show", "--remote-url", url).returncode == 0


def test_the_proxy_password_and_tokens_are_never_shown(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "remote_url: https://conda.example.org/t/tk-9f8e7d/private\nproxy: http://alice:s3cr%40t@proxy.lan:3128\n"
    )
    text = cas_sync("--show", "--config", config).stdout
    data = show("--config", config)
    for shown in (text, json.dumps(data)):
        assert "s3cr" not in shown and "tk-9f8e7d" not in shown
    assert data["proxy"]["value"] == "http://alice:<hidden>@proxy.lan:3128"
    assert data["remote_url"]["value"] == "https://conda.example.org/t/<hidden>/private"
    # in error messages too: a proxy the sync cannot use, named with its file and line
    config.write_text("proxy: socks5://alice:s3cret@proxy.lan:1080\n")
    result = cas_sync("--show", "--config", config)
    assert result.returncode == 2 and "s3cret" not in result.stderr
    assert (
        f"{config}:1: proxy: 'socks5://alice:<hidden>@proxy.lan:1080' is not an http://host:port URL"
        in result.stderr
    )


def test_a_config_path_that_is_a_folder_is_one_line_and_exit_2(tmp_path):
    folder = tmp_path / "cas-mirror.d"
    folder.mkdir()
    result = cas_sync("--show", "--config", folder)
    assert (result.returncode, result.stderr) == (
        2,
        f"cas-sync: error: {folder}: cannot read: Is a directory\n",
    )
    result = cas_sync("--show", env={"CAS_MIRROR_USER_CONFIG": str(folder)})
    assert (result.returncode, result.stderr) == (
        2,
        f"cas-sync: error: {folder}: cannot read: Is a directory\n",
    )


def test_the_console_saves_into_the_faq_file_keeping_its_scalars(tmp_path):
    from casconsole.settings import load_settings, write_settings

    config = tmp_path / "cas-mirror"
    config.write_text(FAQ_EXAMPLE.replace("blacklist:\n  - flask\n  - readline\n", "blacklist: flask\n"))
    write_settings(config, {"blacklist": ["flask", "readline"]})  # what a `b` toggle then ctrl+s does
    text = config.read_text()
    assert "license_blacklist: GPL\n" in text and "blacklist:\n  - flask\n  - readline\n" in text
    assert load_settings(config).blacklist == ["flask", "readline"]
