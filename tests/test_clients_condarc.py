"""What the mirror's users are told: the `public_url` and `client_*` settings, and the `.condarc`
that `cas-server --condarc` prints from them, run as an administrator runs it (subprocesses,
real settings files) and read back as conda reads it: a YAML parse, channel names resolved
through `channel_alias`, `defaults` through `default_channels`, then py-rattler solving and
installing from a cas-server started here on 127.0.0.1 through the URLs the file names.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
import rattler
import yaml
from ruamel.yaml import YAML
from test_server_support import Server, cli, server_env

from casconsole.conda.archive import PackageSpec, build_package

TIMESTAMP = 1_700_000_000_000
TOKEN_SECRET = "s3cr3t-anaconda-token"
PROXY_SECRET = "hunter2"

# the FAQ's order: a private channel, the mirror, a token channel on anaconda.org, a public
# anaconda.org channel, defaults
FAQ_CONFIG = f"""\
public_url: https://conda.example.org
private_channels: [private-channel]
client_channels:
  - private-channel
  - pkgs
  - https://conda.anaconda.org/t/{TOKEN_SECRET}/channel2
  - http://conda.anaconda.org/channel1
  - defaults
client_ssl_verify: false
client_proxy_servers:
  http: http://bob:{PROXY_SECRET}@proxy.example.org:3128
  https: http://bob:{PROXY_SECRET}@proxy.example.org:3128
"""


def cas_sync(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "casconsole.cli.sync", *map(str, args)],
        capture_output=True, text=True, env=env or server_env(), timeout=120,
    )  # fmt: skip


def condarc(*args, env=None):
    result = cli("--condarc", *map(str, args), env=env)
    assert result.returncode == 0, result.stderr
    return result


def as_conda_reads_it(text: str) -> dict:
    """The .condarc through conda's YAML parser (ruamel.yaml, YAML 1.2, round-trip as conda's
    configuration loads it), as plain values; PyYAML (YAML 1.1) must read the same."""
    loaded = YAML(typ="rt").load(text)
    plain = json.loads(json.dumps(loaded))
    assert plain == yaml.safe_load(text)
    return plain


# ---------------------------------------------------------------- the settings


def test_client_keys_are_read_from_files_variables_and_flags_with_their_origin(tmp_path):
    config = tmp_path / "cas.yaml"
    config.write_text(FAQ_CONFIG)
    env = server_env(CAS_MIRROR_CLIENT_CHANNEL_ALIAS="https://conda.example.org/alias")
    result = cas_sync("--config", config, "--show", "--json", "--set", "client_default_channels=pkgs,extra",
                      env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["public_url"] == {"value": "https://conda.example.org", "layer": "file",
                                  "source": f"{config}:1"}  # fmt: skip
    assert data["client_channels"]["source"] == f"{config}:3"
    assert data["client_channels"]["value"][1:2] == ["pkgs"]
    assert data["client_ssl_verify"]["value"] is False
    assert data["client_channel_alias"] == {"value": "https://conda.example.org/alias", "layer": "env",
                                            "source": "CAS_MIRROR_CLIENT_CHANNEL_ALIAS"}  # fmt: skip
    assert data["client_default_channels"] == {"value": ["pkgs", "extra"], "layer": "cli",
                                               "source": "--set client_default_channels"}  # fmt: skip
    # one URL for both schemes, from a variable
    env = server_env(CAS_MIRROR_CLIENT_PROXY_SERVERS="http://proxy.example.org:3128")
    data = json.loads(cas_sync("--show", "--json", env=env).stdout)
    assert data["client_proxy_servers"]["value"] == {
        "http": "http://proxy.example.org:3128", "https": "http://proxy.example.org:3128",
    }  # fmt: skip
    # the defaults: nothing set, so the .condarc follows server_host:server_port and the mirror
    data = json.loads(cas_sync("--show", "--json").stdout)
    assert [data[k]["value"] for k in ("public_url", "client_channels", "client_ssl_verify")] == [
        None,
        [],
        True,
    ]


def test_secrets_of_the_client_keys_are_never_shown_in_the_settings_views(tmp_path):
    config = tmp_path / "cas.yaml"
    config.write_text(FAQ_CONFIG)
    for args in (("--show",), ("--show", "--json")):
        result = cas_sync("--config", config, *args)
        assert result.returncode == 0, result.stderr
        assert TOKEN_SECRET not in result.stdout and PROXY_SECRET not in result.stdout
        assert "https://conda.anaconda.org/t/<hidden>/channel2" in result.stdout
        assert "http://bob:<hidden>@proxy.example.org:3128" in result.stdout
    # nor in the message about a bad value
    config.write_text(f"client_proxy_servers:\n  https: ftp://bob:{PROXY_SECRET}@proxy:21\n")
    result = cas_sync("--config", config, "--show")
    assert result.returncode == 2
    assert PROXY_SECRET not in result.stderr and "ftp://bob:<hidden>@proxy:21" in result.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("public_url: conda.example.org", "public_url: 'conda.example.org': expected a URL starting with"),
        ("public_url: https://u:pw@conda.example.org", "put no user or password in it"),
        ("public_url: https://conda.example.org/?x=1", "expected no query, fragment or space"),
        ("client_channels: [pkgs, ftp://host/channel]", "channel 'ftp://host/channel': expected a URL"),
        ("client_channels: [pkgs, pkgs]", "'pkgs' is listed twice"),
        ("client_channels: ['../etc']", "is neither a channel of the mirror"),
        ("client_default_channels: [defaults]", "'defaults' cannot be one of the default channels"),
        ("client_channel_alias: [a, b]", "expected a non-empty string"),
        ("client_ssl_verify: 3", "expected true, false or the path of a CA bundle on the clients"),
        ("client_proxy_servers: {'bad key': 'http://p:1'}", "'bad key' is not a scheme"),
        ("client_proxy_servers: [http=http://p:1, nonsense]", "expected KEY=URL"),
    ],
)
def test_a_bad_client_value_is_exit_2_naming_file_and_line(tmp_path, text, message):
    config = tmp_path / "cas.yaml"
    config.write_text("mirror_dir: m\n" + text + "\n")
    for command in (cas_sync, cli):
        result = command("--config", str(config), "--show" if command is cas_sync else "--condarc")
        assert result.returncode == 2, result.stdout
        assert f"{config}:2: " in result.stderr and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- cas-server --condarc


def test_condarc_follows_the_faq_order_with_public_url_and_the_extra_entries(tmp_path):
    config = tmp_path / "cas.yaml"
    config.write_text(FAQ_CONFIG + f"mirror_dir: {tmp_path / 'mirror'}\n")
    result = condarc("--config", config)
    text = result.stdout
    assert "127.0.0.1" not in text and result.stderr == ""
    data = as_conda_reads_it(text)
    assert data == {
        "channels": [
            "https://conda.example.org/t/<TOKEN>/private-channel",
            "https://conda.example.org/pkgs",
            f"https://conda.anaconda.org/t/{TOKEN_SECRET}/channel2",
            "http://conda.anaconda.org/channel1",
            "defaults",
        ],
        "default_channels": ["https://conda.example.org/pkgs"],
        "channel_alias": "https://conda.example.org",
        "ssl_verify": False,
        "proxy_servers": {
            "http": f"http://bob:{PROXY_SECRET}@proxy.example.org:3128",
            "https": f"http://bob:{PROXY_SECRET}@proxy.example.org:3128",
        },
    }
    assert "private-channel  # private: put your token in" in text


def test_condarc_without_public_url_names_the_server_address_and_says_so(tmp_path):
    mirror = tmp_path / "mirror"
    for channel in ("pkgs", "internal-pkgs", "team"):
        (mirror / channel / "noarch").mkdir(parents=True)
    env = server_env(CAS_MIRROR_PRIVATE_CHANNELS="team")
    result = condarc("--root", mirror, "--port", "9090", env=env)
    data = as_conda_reads_it(result.stdout)
    # the mirrored channel first, then every public channel found; the private one waits for a token
    assert data["channels"] == ["http://127.0.0.1:9090/pkgs", "http://127.0.0.1:9090/internal-pkgs"]
    assert data["default_channels"] == ["http://127.0.0.1:9090/pkgs"]
    assert data["channel_alias"] == "http://127.0.0.1:9090" and data["ssl_verify"] is True
    assert "public_url is not set" in result.stderr and "http://127.0.0.1:9090" in result.stderr
    # a wildcard address becomes this machine's name
    result = condarc("--root", mirror, "--host", "0.0.0.0", env=env)
    assert "0.0.0.0" not in result.stdout and ":8080/pkgs" in result.stdout


def test_condarc_quotes_what_yaml_would_read_otherwise(tmp_path):
    config = tmp_path / "cas.yaml"
    config.write_text(
        "public_url: http://conda.example.org:8080\n"
        "client_ssl_verify: '/etc/pki/ca: bundle #1.pem'\n"  # ': ' and ' #' mean something in YAML
        "client_proxy_servers: {'http://build.example.org': 'http://proxy:3128', https: 'http://proxy:3128'}\n"
    )
    data = as_conda_reads_it(condarc("--config", config).stdout)
    assert data["ssl_verify"] == "/etc/pki/ca: bundle #1.pem"
    assert data["proxy_servers"] == {
        "http://build.example.org": "http://proxy:3128",
        "https": "http://proxy:3128",
    }
    config.write_text("client_ssl_verify: 'no'\n")  # a file named no, not false
    assert as_conda_reads_it(condarc("--config", config).stdout)["ssl_verify"] == "no"


def test_condarc_on_a_terminal_hides_the_secrets(tmp_path):
    config = tmp_path / "cas.yaml"
    config.write_text(FAQ_CONFIG)
    main, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "casconsole.cli.server", "--config", str(config), "--condarc"],
        stdin=subprocess.DEVNULL, stdout=secondary, stderr=subprocess.PIPE, env=server_env(), text=True,
    )  # fmt: skip
    os.close(secondary)
    shown = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the writer is gone
            break
        if not chunk:
            break
        shown += chunk
    os.close(main)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    text = shown.decode()
    assert TOKEN_SECRET not in text and PROXY_SECRET not in text
    assert "https://conda.anaconda.org/t/<hidden>/channel2" in text
    assert "secrets hidden on a terminal" in err


# ---------------------------------------------------------------- a conda client uses it


def _channels() -> dict[str, list[PackageSpec]]:
    """Three channels: the mirrored `pkgs`, an internal one, a private one; dependencies across."""

    def spec(name, version, subdir="noarch", depends=()):
        return PackageSpec(name, version, subdir=subdir, depends=list(depends), timestamp=TIMESTAMP,
                           files={f"share/{name}/{version}.txt": f"{name} {version}\n".encode()})  # fmt: skip

    return {
        "pkgs": [spec("zlib", "1.3", "linux-64"), spec("baselib", "1.0"), spec("baselib", "2.0")],
        "internal-pkgs": [
            spec("teamtool", "0.5", "linux-64", ["baselib >=2", "zlib"]),
            spec("baselib", "9.0"),  # also in pkgs, which comes later in the clients' order
        ],
        "private-pkgs": [spec("secretapp", "1.0", depends=["teamtool"])],
    }


def _build(mirror: Path) -> None:
    for channel, specs in _channels().items():
        for s in specs:
            build_package(mirror / channel / s.subdir, s, ".conda")
        (mirror / channel / "linux-64").mkdir(parents=True, exist_ok=True)
        (mirror / channel / "noarch").mkdir(parents=True, exist_ok=True)
        indexed = subprocess.run(
            [sys.executable, "-m", "casconsole.cli.index", "--quiet", str(mirror / channel)],
            capture_output=True, text=True, env=server_env(), timeout=120,
        )  # fmt: skip
        assert indexed.returncode == 0 and indexed.stdout == "", indexed.stderr


def _resolve(data: dict, token: str) -> list[rattler.Channel]:
    """The channels of a .condarc as conda resolves them: `defaults` is `default_channels`, a bare
    name is looked up under `channel_alias`; the user puts their token in."""
    config = rattler.ChannelConfig(channel_alias=data["channel_alias"] + "/")
    urls: list[str] = []
    for entry in data["channels"]:
        urls += data["default_channels"] if entry == "defaults" else [entry]
    return [rattler.Channel(url.replace("<TOKEN>", token), config) for url in dict.fromkeys(urls)]


def test_rattler_solves_and_installs_through_the_printed_condarc(tmp_path):
    mirror = tmp_path / "mirror"
    _build(mirror)
    token = cli("token", "add", "private-pkgs", "--root", str(mirror)).stdout.strip()
    env = server_env(CAS_MIRROR_PRIVATE_CHANNELS="private-pkgs")
    with Server(mirror, private="private-pkgs") as srv:
        config = tmp_path / "cas.yaml"
        # the admin's order: the mirror's defaults last; a bare name resolved by the alias
        config.write_text(
            f"mirror_dir: {mirror}\npublic_url: {srv.url}\n"
            "client_channels: [private-pkgs, internal-pkgs, defaults]\n"
        )
        data = as_conda_reads_it(condarc("--config", config, env=env).stdout)
        assert data["channels"] == [
            f"{srv.url}/t/<TOKEN>/private-pkgs",
            f"{srv.url}/internal-pkgs",
            "defaults",
        ]
        assert data["default_channels"] == [f"{srv.url}/pkgs"] and data["channel_alias"] == srv.url
        channels = _resolve(data, token)
        assert [c.base_url.rstrip("/") for c in channels] == [
            f"{srv.url}/t/{token}/private-pkgs", f"{srv.url}/internal-pkgs", f"{srv.url}/pkgs",
        ]  # fmt: skip
        prefix = tmp_path / "env"
        records = solve_and_install_channels(channels, ["secretapp"], prefix, tmp_path / "cache")
        got = {r.name.normalized: (str(r.version), r.channel.rstrip("/")) for r in records}
        assert got == {
            "secretapp": ("1.0", f"{srv.url}/t/********/private-pkgs"),  # rattler hides it too
            "teamtool": ("0.5", f"{srv.url}/internal-pkgs"),
            # strict channel priority, as conda's default: the first channel with the name wins
            "baselib": ("9.0", f"{srv.url}/internal-pkgs"),
            "zlib": ("1.3", f"{srv.url}/pkgs"),
        }
        assert (prefix / "share" / "secretapp" / "1.0.txt").read_text() == "secretapp 1.0\n"
        assert (prefix / "share" / "zlib" / "1.3.txt").exists()

        # a bare channel name in the list means the mirror's channel of that name, via channel_alias
        alias = rattler.ChannelConfig(channel_alias=data["channel_alias"] + "/")
        assert rattler.Channel("internal-pkgs", alias).base_url.rstrip("/") == f"{srv.url}/internal-pkgs"


def solve_and_install_channels(channels, specs, prefix, cache):
    """py-rattler over several channels (tests/conda_client.py does one)."""

    async def run():
        records = await rattler.solve(
            channels, specs, gateway=rattler.Gateway(cache_dir=cache / "repodata"),
            platforms=["linux-64", "noarch"],
        )  # fmt: skip
        await rattler.install(records, prefix, cache_dir=cache / "pkgs", show_progress=False,
                              platform=rattler.Subdir("linux-64"))  # fmt: skip
        return records

    return asyncio.run(run())
