"""cas-installer's command line: the FAQ's three examples as written, and every way a build can be
refused (bad YAML, an unknown key, an unsolvable spec, an unreachable channel): one clear
message, exit status 2, and no installer, not even half of one."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from test_installer_support import cas_installer, demo_packages, run_installer, write_channel

from casconsole.installer.construct import read_spec

FAQ_FILE = Path("/work/shared/seed/anaconda-repository-faq.txt")

# the FAQ's cas-installer examples, as it prints them
FAQ_1 = """\
name: my-installer
version: 1.0
channels: [ http://repo.continuum.io/pkgs/free/ ]
specs: [python, conda]
"""
FAQ_2 = FAQ_1 + "license_file: my-license.txt\n"
FAQ_3 = """\
name: my-installer
version: 1.0
channels: [ http://repo.continuum.io/pkgs/free/, http://<mirror-directory.url>:8080 ]
specs: [python, conda, my_package]
"""


@pytest.fixture(scope="module")
def channel(tmp_path_factory) -> Path:
    return write_channel(tmp_path_factory.mktemp("channel") / "chan", demo_packages())


def test_the_faq_examples_read_as_written(tmp_path):
    if FAQ_FILE.is_file():  # the examples above are the FAQ's own text
        faq = FAQ_FILE.read_text()
        for example in (FAQ_1, FAQ_2.split("specs: [python, conda]\n")[1], FAQ_3):
            assert example.strip() in faq
    (tmp_path / "my-license.txt").write_text("the license\n")
    for n, text in enumerate((FAQ_1, FAQ_2, FAQ_3)):
        path = tmp_path / f"faq{n}.yaml"
        path.write_text(text)
        spec = read_spec(path, "linux-64")
        assert (spec.name, spec.version, spec.platform) == ("my-installer", "1.0", "linux-64")
        assert spec.file_name == "my-installer-1.0-linux-64.sh"  # the FAQ's file name
        assert spec.channels[0] == "http://repo.continuum.io/pkgs/free/"
        assert spec.specs[:2] == ["python", "conda"]
    assert read_spec(tmp_path / "faq1.yaml", "linux-64").license_text == "the license\n"
    assert read_spec(tmp_path / "faq2.yaml", "linux-64").channels[1] == "http://<mirror-directory.url>:8080"


def test_yaml_values_are_read_as_typed(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text("name: a\nversion: 1.10\nchannels: ./chan\nspecs: python 3.12\ndefault_prefix: /opt/a\n")
    spec = read_spec(path, "osx-arm64")
    assert spec.version == "1.10"  # the text, never the float 1.1
    assert spec.channels == ["./chan"] and spec.specs == ["python 3.12"]  # a plain string is a list of one
    assert spec.default_prefix == "/opt/a" and spec.file_name == "a-1.10-osx-arm64.sh"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: a\nversion: 1\nchannels: [x\nspecs: [python]\n", "a.yaml:4: YAML syntax error"),
        ("name: a\nversion: 1\nchanels: [x]\nspecs: [python]\n", "a.yaml:3: unknown key 'chanels'"),
        ("name: a\nversion: 1\nspecs: [python]\n", "a.yaml: channels is required"),
        ("name: a b\nversion: 1\nchannels: [x]\nspecs: [python]\n", "a.yaml:1: name: 'a b' must be"),
        ("name: a\nversion: [1]\nchannels: [x]\nspecs: [python]\n", "a.yaml:2: version: expected a value"),
        ("name: a\nversion: 1\nchannels: [x]\nspecs: [python >=<]\n", "a.yaml:4: specs: 'python >=<': not a"),
        ("name: a\nversion: 1\nchannels: []\nspecs: [python]\n", "a.yaml:3: channels: the list is empty"),
        (
            "name: a\nversion: 1\nchannels: [x]\nspecs: [python]\nlicense_file: no.txt\n",
            "a.yaml:5: license_file: ",
        ),
        ("- just a list\n", "a.yaml:1: expected a mapping"),
        (
            "name: a\nversion: 1\nchannels: [x]\nspecs: [python]\ndefault_prefix: /opt/my env\n",
            "a.yaml:5: default",
        ),
    ],
)
def test_bad_yaml_is_refused_with_its_line(tmp_path, text, message):
    (tmp_path / "a.yaml").write_text(text)
    result = cas_installer("a.yaml", "--output", "out", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"cas-installer: error: {message}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_an_unsolvable_spec_shows_the_solver_s_explanation(tmp_path, channel):
    (tmp_path / "a.yaml").write_text(
        f"name: a\nversion: 1\nchannels: [{channel}]\nspecs: [python >=4, conda]\n"
    )
    result = cas_installer("a.yaml", "--output", "out", cwd=tmp_path)
    assert result.returncode == 2
    assert "a.yaml:4: the specs cannot be solved for" in result.stderr
    assert "No candidates were found for python >=4" in result.stderr
    assert not (tmp_path / "out").exists()
    # with an output folder that exists: it is left as it was
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    assert cas_installer("a.yaml", "--output", "out", cwd=tmp_path).returncode == 2
    assert os.listdir(tmp_path / "out") == ["keep.txt"]


def test_an_unreachable_or_missing_channel_is_refused(tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "a.yaml").write_text(
        f"name: a\nversion: 1\nchannels: [http://127.0.0.1:{port}]\nspecs: [python]\n"
    )
    result = cas_installer("a.yaml", "--output", "out", cwd=tmp_path, env={"CAS_MIRROR_RETRIES": "0"})
    assert result.returncode == 2
    assert f"channel http://127.0.0.1:{port}: " in result.stderr and "cannot connect" in result.stderr
    (tmp_path / "b.yaml").write_text("name: a\nversion: 1\nchannels: [nowhere]\nspecs: [python]\n")
    result = cas_installer("b.yaml", "--output", "out", cwd=tmp_path)
    assert result.returncode == 2
    assert (
        f"channel nowhere: no repodata there: neither {tmp_path}/nowhere/linux-64/repodata.json"
        in result.stderr
    )
    assert f"nor {tmp_path}/nowhere/pkgs/linux-64/repodata.json" in result.stderr
    assert not (tmp_path / "out").exists()


def test_bad_arguments(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\nversion: 1\nchannels: [x]\nspecs: [python]\n")
    for platform, message in (("win-64", "for linux-* and osx-* only"), ("linux-65", "not a platform")):
        result = cas_installer("a.yaml", "--platform", platform, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr
    result = cas_installer("missing.yaml", cwd=tmp_path)
    assert result.returncode == 2 and "missing.yaml: cannot read" in result.stderr


def test_a_mirror_folder_means_its_mirrored_channel_and_progress_is_shown(tmp_path, channel):
    """A channel written as the mirror's folder is its `pkgs` channel (the settings' channel_name);
    FAQ example 3's shape: two channels, the first one's packages win."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "pkgs").symlink_to(channel, target_is_directory=True)
    text = FAQ_3.replace("http://repo.continuum.io/pkgs/free/", str(channel))
    (tmp_path / "my-installer.yaml").write_text(text.replace("http://<mirror-directory.url>:8080", "mirror"))
    result = cas_installer("my-installer.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "solved: 6 packages" in result.stderr and "[6/6]" in result.stderr
    installer = tmp_path / "my-installer-1.0-linux-64.sh"
    assert f"{installer.name}: 6 packages" in result.stdout
    assert run_installer(installer, "-b", "-p", str(tmp_path / "p")).returncode == 0
