"""The FAQ's example config, verbatim, against a real upstream on 127.0.0.1 that (like today's
repo.anaconda.com) no longer carries linux-32: the dry run (text and JSON), the sync, its log
and --status warn of the platform and of the whitelist entry that matches nothing, mirror the
rest and exit 0; a run where none of the platforms is left exits 1. And `cas-index
<channel>/<subdir>`, the FAQ's form of `conda index`, indexes that subdir."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_config_seed import FAQ_EXAMPLE
from upstream_server import Upstream, make_channel, mirror_problems, spec

from casconsole.conda.archive import PackageSpec, build_package


@pytest.fixture
def upstream(tmp_path):
    """linux-64 and noarch only; conda is GPL here, so only the whitelist keeps it."""
    root = tmp_path / "upstream"
    make_channel(
        root,
        {
            "linux-64": [
                spec("python", "3.12", "linux-64", license="PSF-2.0"),
                spec("readline", "8.2", "linux-64", license="GPL-3.0-only", license_family="GPL3"),
                spec("gsl", "2.7", "linux-64", license="GPL-3.0-or-later"),
                spec("conda", "24.5.0", "linux-64", license="GPL-3.0", license_family="GPL3"),
            ],
            "noarch": [spec("flask", "3.0.3", license="BSD-3-Clause"), spec("six", "1.16.0", license="MIT")],
        },
    )
    with Upstream(root) as server:
        yield server


@pytest.fixture
def faq_config(tmp_path):
    path = tmp_path / "cas-mirror"
    path.write_text(FAQ_EXAMPLE)
    return path


def cas_sync(config, upstream, mirror, *args) -> subprocess.CompletedProcess[str]:
    """The FAQ's file as it is; where upstream and the mirror are comes from the flags above it."""
    result = subprocess.run(
        [sys.executable, "-m", "casconsole.cli.sync", "--config", str(config), "--remote-url", upstream.url,
         "--mirror-dir", str(mirror), *map(str, args)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "Traceback" not in result.stdout + result.stderr
    return result


def test_dry_run_warns_of_the_missing_platform_and_the_unmatched_entry(faq_config, upstream, tmp_path):
    mirror = tmp_path / "mirror"
    result = cas_sync(faq_config, upstream, mirror, "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1] == (
        f"warning: platform linux-32: not carried by upstream, left out ({upstream.url}/linux-32/: no "
        "repodata.json there)"
    )
    assert lines[2] == "warning: whitelist entry 'distribute' matches no upstream record"
    assert (
        "\nlinux-64\n" in result.stdout
        and "\nnoarch\n" in result.stdout
        and "\nlinux-32" not in result.stdout
    )
    assert "  added back by whitelist         +1" in result.stdout  # conda, over license_blacklist: GPL

    data = json.loads(cas_sync(faq_config, upstream, mirror, "--dry-run", "--json").stdout)
    assert list(data["subdirs"]) == ["linux-64", "noarch"]
    assert data["missing_platforms"] == {"linux-32": f"{upstream.url}/linux-32/: no repodata.json there"}
    assert data["unmatched"] == {"blacklist": [], "whitelist": ["distribute"]}
    assert data["warnings"] == [line.removeprefix("warning: ") for line in lines[1:3]]
    linux = data["subdirs"]["linux-64"]
    assert sorted(linux["included"]) == ["conda-24.5.0-0.conda", "python-3.12-0.conda"]
    assert linux["excluded"]["readline-8.2-0.conda"] == "license_blacklist: GPL (license_family GPL3)"
    assert data["subdirs"]["noarch"]["excluded"] == {"flask-3.0.3-0.conda": "blacklist: flask"}
    assert not mirror.exists()  # a dry run writes nothing


def test_the_sync_mirrors_the_other_platforms_and_says_why_not_linux_32(faq_config, upstream, tmp_path):
    mirror = tmp_path / "mirror"
    result = cas_sync(faq_config, upstream, mirror)
    assert result.returncode == 0, result.stderr
    assert (
        f"warning: platform linux-32: not carried by upstream, left out ({upstream.url}/linux-32/: "
        "no repodata.json there)" in result.stdout
    )
    assert "warning: whitelist entry 'distribute' matches no upstream record" in result.stdout
    assert "cas-sync: platform linux-32 is not carried by upstream: left out" in result.stdout
    channel = mirror / "pkgs"
    assert sorted(p.name for p in (channel / "linux-64").glob("*.conda")) == [
        "conda-24.5.0-0.conda",
        "python-3.12-0.conda",
    ]
    assert sorted(p.name for p in (channel / "noarch").glob("*.conda")) == ["six-1.16.0-0.conda"]
    assert not (channel / "linux-32").exists()
    assert mirror_problems(channel, upstream.root, ["linux-64", "noarch"]) == []

    log = [json.loads(line) for line in (mirror / ".cas" / "sync.jsonl").read_text().splitlines()]
    assert {
        "subdir": "linux-32",
        "reason": f"{upstream.url}/linux-32/: no repodata.json there",
    }.items() <= next(e for e in log if e["event"] == "subdir_missing").items()
    assert any(
        e["event"] == "warning" and e["message"] == "whitelist entry 'distribute' matches no upstream record"
        for e in log
    )
    assert log[-1]["stats"]["missing"] == ["linux-32"]

    status = subprocess.run(
        [sys.executable, "-m", "casconsole.cli.sync", "--status", "--mirror-dir", str(mirror)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "  state     done" in status.stdout
    assert "files, 0 failed" in status.stdout and "  linux-32  " not in status.stdout  # not "not finished"
    assert "  warning   linux-32: not carried by upstream, left out" in status.stdout
    assert "  warning   whitelist entry 'distribute' matches no upstream record" in status.stdout


def test_blacklist_entries_that_match_nothing_are_reported(faq_config, upstream, tmp_path):
    mirror = tmp_path / "mirror"
    args = ("--blacklist", "flask,readlin,r-*,numpy >=2", "--whitelist", "six 9.*")
    data = json.loads(cas_sync(faq_config, upstream, mirror, "--dry-run", "--json", *args).stdout)
    assert data["unmatched"] == {"blacklist": ["readlin", "r-*", "numpy >=2"], "whitelist": ["six 9.*"]}
    result = cas_sync(faq_config, upstream, mirror, *args)
    assert result.returncode == 0, result.stderr
    for entry in ("blacklist entry 'readlin'", "blacklist entry 'r-*'", "whitelist entry 'six 9.*'"):
        assert f"warning: {entry} matches no upstream record" in result.stdout


def test_none_of_the_platforms_left_is_an_error(faq_config, upstream, tmp_path):
    mirror = tmp_path / "mirror"
    for args in (("--dry-run",), ()):
        result = cas_sync(faq_config, upstream, mirror, "--platform", "linux-32,osx-64", *args)
        assert result.returncode == 1, result.stderr
        assert (
            f"cas-sync: error: upstream {upstream.url} carries none of the platforms (linux-32, osx-64): "
            "nothing to mirror"
        ) in result.stderr
    assert not list((mirror / "pkgs").glob("*/*.conda")) if mirror.exists() else True


def test_cas_index_of_a_subdir_indexes_that_subdir(tmp_path):
    channel = tmp_path / "mirror" / "internal-pkgs"
    for subdir in ("linux-64", "osx-64"):
        build_package(channel / subdir, PackageSpec("tool", "1.0", subdir=subdir), ".conda")

    def cas_index(*args):
        result = subprocess.run(
            [sys.executable, "-m", "casconsole.cli.index", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "Traceback" not in result.stdout + result.stderr
        return result

    result = cas_index(channel / "linux-64")  # conda index /<mirror-directory>/internal-pkgs/linux-64
    assert result.returncode == 0, result.stderr
    assert "linux-64: 1 package (1 read), written" in result.stdout
    assert "noarch: 0 packages, written" in result.stdout  # clients need one; it had none
    assert "osx-64" not in result.stdout
    assert json.loads((channel / "linux-64" / "repodata.json").read_text())["packages.conda"]
    assert (channel / "noarch" / "repodata.json").is_file() and (channel / "channeldata.json").is_file()
    assert not (channel / "osx-64" / "repodata.json").exists()

    status = cas_index("--status", channel / "linux-64")
    assert status.stdout.splitlines()[1].startswith("  linux-64  fresh  1 packages")
    assert "osx-64" not in status.stdout and "noarch" not in status.stdout

    assert cas_index(channel / "osx-64").returncode == 0  # the other subdir, later
    channeldata = json.loads((channel / "channeldata.json").read_text())
    assert channeldata["subdirs"] == ["linux-64", "noarch", "osx-64"]
    whole = cas_index(channel)
    assert "up to date, 2 packages (0 read, 2 cached)" in whole.stdout


def test_tokens_and_passwords_stay_out_of_the_output_and_the_log(tmp_path):
    """An upstream reached with a token in its URL (`/t/<token>/`, as on anaconda.org) through a
    proxy with a password: neither is printed or logged, even when something fails."""
    from upstream_server import Fault, ForwardProxy

    root = tmp_path / "site"
    make_channel(root / "t" / "tk-5ecret" / "chan", {"linux-64": [spec("lib", "1.0", "linux-64")]})
    mirror = tmp_path / "mirror"
    with Upstream(root) as server, ForwardProxy() as proxy:
        url = f"{server.url}/t/tk-5ecret/chan"
        proxied = proxy.url.replace("http://", "http://alice:pa55word@")
        server.inject("t/tk-5ecret/chan/linux-64/repodata.json.zst", Fault.status(503))
        server.always("t/tk-5ecret/chan/linux-64/lib-1.0-0.conda", Fault.status(500))
        flags = ["--remote-url", url, "--mirror-dir", mirror, "--platform", "linux-64", "--retries", "1"]
        dead = proxied.replace(proxy.url.rsplit(":", 1)[1], "9")  # a proxy nobody listens on
        variants = [[], ["--json"], ["--dry-run"], ["--dry-run", "--json"], ["--status"], ["--show"]]
        variants += [["--proxy", proxied], ["--proxy", dead]]
        runs = [
            subprocess.run(
                [sys.executable, "-m", "casconsole.cli.sync", *map(str, flags), *args],
                capture_output=True,
                text=True,
                timeout=120,
            )
            for args in variants
        ]
        assert proxy.authorizations and all(a is not None for a in proxy.authorizations)  # it was used
    assert runs[0].returncode == 1  # the file failed, and is named
    assert "failed: linux-64/lib-1.0-0.conda: HTTP 500" in runs[0].stdout
    assert f"{server.url}/t/<hidden>/chan" in runs[0].stdout  # the retried repodata, named without its token
    assert runs[-1].returncode == 1 and "cannot connect to proxy 127.0.0.1:9" in runs[-1].stderr
    texts = [r.stdout + r.stderr for r in runs] + [(mirror / ".cas" / "sync.jsonl").read_text()]
    for text in texts:
        assert "tk-5ecret" not in text and "pa55word" not in text
