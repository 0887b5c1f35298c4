"""cas-installer end to end: built by the command from a generated channel, run as a user runs
it (`env -i bash installer.sh -b -p PREFIX`: no PATH, no HOME, no Python), checked byte for byte
against conda's own replacement, read back by py-rattler, which then finds nothing to do."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import rattler
from test_installer_support import (
    LEGACY_PH,
    PH,
    cas_installer,
    conda_replace,
    demo_packages,
    rattler_install,
    rattler_would_do,
    run_installer,
    run_program,
    tree,
    write_channel,
)

SPECS = ["python", "conda", "my_package"]
LICENSE = "Use it well.\nThe second line of the license.\n"
POST_INSTALL = "#!/bin/sh\n" + (
    'echo "$INSTALLER_NAME $INSTALLER_VER $INSTALLER_PLAT $INSTALLER_UNATTENDED" > "$PREFIX/done"\n'
)
# what the solution holds
INSTALLED = {
    "libdemo-1.0-h1", "demo-data-1.0-0", "demo-tool-2.0-h2", "my_package-1.0-0",
    "python-3.12.1-h0_cpython", "conda-24.1.0-py_0",
}  # fmt: skip


@pytest.fixture(scope="module")
def channel(tmp_path_factory) -> Path:
    return write_channel(tmp_path_factory.mktemp("channel") / "chan", demo_packages())


def build(folder: Path, channel: Path, specs: list[str], version: str = "1.0", extra: str = "") -> Path:
    """Write my-installer.yaml into `folder`, run `cas-installer` on it, return the installer."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "my-license.txt").write_text(LICENSE)
    (folder / "post.sh").write_text(POST_INSTALL)
    head = f"name: my-installer\nversion: {version}\nchannels: [ {channel} ]\n"
    (folder / "my-installer.yaml").write_text(f"{head}specs: {json.dumps(specs)}\n{extra}")
    result = cas_installer("my-installer.yaml", "--output", "out", cwd=folder)
    assert result.returncode == 0, result.stderr
    installer = folder / "out" / f"my-installer-{version}-linux-64.sh"
    assert str(installer.relative_to(folder)) in result.stdout
    assert sorted(os.listdir(folder / "out")) == [installer.name]  # nothing else left behind
    return installer


@pytest.fixture(scope="module")
def installer(tmp_path_factory, channel) -> Path:
    extra = "license_file: my-license.txt\npost_install: post.sh\nwelcome: Hello from the tests\n"
    return build(tmp_path_factory.mktemp("build"), channel, SPECS, extra=extra)


def expected_files(prefix: Path) -> dict[str, bytes | str]:
    """The payload of every package of the solution, as conda would have installed it."""
    packages = {f"{p.spec.stem}": p for p in demo_packages()}
    out: dict[str, bytes | str] = {}
    for stem in INSTALLED:
        pkg = packages[stem]
        for path, data in pkg.spec.files.items():
            if pkg.spec.noarch == "python":
                path = path.replace("site-packages/", "lib/python3.12/site-packages/", 1)
                path = path.replace("python-scripts/", "bin/", 1)
            if path in pkg.placeholders:
                placeholder, mode = pkg.placeholders[path]
                data = conda_replace(data, placeholder, str(prefix), mode)
            out[path] = data
        for path, target in pkg.symlinks.items():
            out[path] = f"-> {target}"
    # conda's entry point for `conda = conda.cli:main`, with the prefix's python
    out["bin/conda"] = (
        f"#!{prefix}/bin/python3.12\n"
        "# -*- coding: utf-8 -*-\nimport re\nimport sys\n\nfrom conda.cli import main\n\n"
        "if __name__ == '__main__':\n"
        "    sys.argv[0] = re.sub(r'(-script\\.pyw?|\\.exe)?$', '', sys.argv[0])\n"
        "    sys.exit(main())\n"
    ).encode()
    return out


def installed_payload(prefix: Path) -> dict[str, bytes | str]:
    """The prefix's files but what the installer writes besides the packages' own."""
    skip = ("conda-meta/", ".messages.txt", "done", "share/demo-tool/post-linked")
    return {k: v for k, v in tree(prefix).items() if not k.startswith(skip)}


def test_installs_every_package_byte_for_byte_in_a_clean_environment(installer, channel, tmp_path):
    prefix = tmp_path / "prefix"
    result = run_installer(installer, "-b", "-p", str(prefix))
    assert result.returncode == 0, result.stderr
    # every package, each after what it depends on
    order = [line.split()[1] for line in result.stdout.splitlines() if line.strip().startswith("installed")]
    assert set(order) == INSTALLED
    for before, after in [("libdemo", "demo-tool"), ("demo-data", "demo-tool"), ("demo-tool", "my_package"),
                          ("python", "conda")]:  # fmt: skip
        assert order.index(next(s for s in order if s.startswith(before + "-"))) < order.index(
            next(s for s in order if s.startswith(after + "-"))
        )
    assert f"6 of 6 packages installed into {prefix}" in result.stdout

    # text and binary placeholders replaced as conda replaces them, every other byte as packed
    assert installed_payload(prefix) == expected_files(prefix)
    binary = (prefix / "lib/libdemo.so.1.0").read_bytes()
    assert str(prefix).encode() + b"/lib\0" in binary and PH.encode() in binary  # the one with no NUL stays
    assert (prefix / "etc/my_package.conf").read_text() == f"home={prefix}\n"  # .tar.bz2, has_prefix only
    assert LEGACY_PH not in (prefix / "etc/my_package.conf").read_text()

    # scripts in bin/ run with the prefix, still in a clean environment
    tool = run_program(prefix / "bin/demo-tool")
    assert tool.stdout == f"demo-tool 2.0 in {prefix}\nhello from demo-data\n", tool.stderr
    entry = run_program(prefix / "bin/conda")
    assert entry.stdout == f"conda 24.1.0 from {prefix}/lib/python3.12/site-packages/conda\n", entry.stderr
    # the package's post-link script and the installer's post_install ran, with their variables
    assert (prefix / "share/demo-tool/post-linked").read_text() == "demo-tool 2.0 0\n"
    assert (prefix / "done").read_text() == "my-installer 1.0 linux-64 1\n"
    assert not [p for p in prefix.rglob("*") if ".cas-installer" in p.name or p.name.endswith(".cas-new")]


def test_conda_meta_is_read_back_by_rattler_which_finds_nothing_to_do(installer, channel, tmp_path):
    prefix = tmp_path / "prefix"
    assert run_installer(installer, "-b", "-p", str(prefix)).returncode == 0
    records = {p.stem: rattler.PrefixRecord.from_path(p) for p in (prefix / "conda-meta").glob("*.json")}
    assert set(records) == INSTALLED
    on_disk = tree(prefix)
    for stem, record in records.items():
        archive = next((channel / record.subdir).glob(f"{stem}.*"))
        data = archive.read_bytes()
        assert record.file_name == archive.name
        assert record.size == len(data)
        assert record.sha256.hex() == __import__("hashlib").sha256(data).hexdigest()
        assert str(record.url) == archive.as_uri()
        assert str(record.channel).rstrip("/") == channel.as_uri()
        files = {f.as_posix() for f in record.files}
        assert files and files <= set(on_disk), stem
        assert {p.relative_path.as_posix() for p in record.paths_data.paths} == files
        assert record.requested_specs == ([record.name.normalized] if record.name.normalized in SPECS else [])
    text = json.loads((prefix / "conda-meta/libdemo-1.0-h1.json").read_text())
    placeholders = {p["_path"]: (p["prefix_placeholder"], p["file_mode"]) for p in text["paths_data"]["paths"]
                    if "prefix_placeholder" in p}  # fmt: skip
    assert placeholders == {"lib/libdemo.so.1.0": (PH, "binary"), "lib/pkgconfig/libdemo.pc": (PH, "text")}
    for key in ("name", "version", "build", "build_number", "channel", "subdir", "fn", "url", "md5", "sha256",
                "size", "depends", "constrains", "files", "paths_data", "license"):  # fmt: skip
        assert key in text, key
    history = (prefix / "conda-meta/history").read_text()
    assert history.startswith("==> ") and f"+{channel.as_uri()}/linux-64::libdemo-1.0-h1" in history
    assert history.rstrip().endswith('# update specs: ["python", "conda", "my_package"]')

    cache = tmp_path / "rattler-cache"
    assert rattler_would_do(channel.as_uri(), SPECS, prefix, cache) == []
    # and the check can tell: asking for the other version of demo-tool is work to do
    assert rattler_would_do(channel.as_uri(), [*SPECS, "demo-tool ==1.0"], prefix, cache)


def test_runs_under_dash(installer, tmp_path):
    dash = tmp_path / "dash"
    assert run_installer(installer, "-b", "-p", str(dash), shell="dash").returncode == 0
    assert installed_payload(dash) == expected_files(dash)


def test_runs_on_a_busybox_only_system(installer, tmp_path):
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed")
    tools = tmp_path / "busybox-bin"  # every command the installer may call is busybox's own
    tools.mkdir()
    for applet in ("sh", "tar", "gzip", "cat", "chmod", "date", "head", "mkdir", "mv", "rm", "rmdir", "sort",
                   "tail", "wc", "sha256sum", "ls", "more"):  # fmt: skip
        (tools / applet).symlink_to(busybox)
    prefix = tmp_path / "busybox"
    result = run_installer(
        installer, "-b", "-p", str(prefix), shell=str(tools / "sh"), env={"PATH": str(tools)}
    )
    assert result.returncode == 0, result.stderr
    assert installed_payload(prefix) == expected_files(prefix)


def test_license_refused_leaves_nothing(installer, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    result = run_installer(installer, stdin="\nno\n", env={"HOME": str(home)})
    assert result.returncode == 2
    assert "Hello from the tests" in result.stdout and LICENSE in result.stdout
    assert "not accepted: nothing was installed" in result.stdout
    assert list(home.iterdir()) == []
    # given a prefix, the same: it is not even created
    result = run_installer(installer, "-p", str(tmp_path / "p"), stdin="\nno\n")
    assert result.returncode == 2 and not (tmp_path / "p").exists()
    # no answer at all (stdin closed) is no acceptance either
    result = run_installer(installer, "-p", str(tmp_path / "p"), stdin="")
    assert result.returncode == 2 and "no answer" in result.stderr and not (tmp_path / "p").exists()


def test_license_accepted_installs_into_the_default_prefix(installer, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    result = run_installer(installer, stdin="\nmaybe\nyes\n\n", env={"HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert "Please answer 'yes' or 'no'" in result.stdout
    prefix = home / "my-installer"
    assert installed_payload(prefix) == expected_files(prefix)
    assert (prefix / "done").read_text() == "my-installer 1.0 linux-64 0\n"  # not unattended


def test_a_truncated_or_altered_installer_fails_before_installing(installer, tmp_path):
    data = installer.read_bytes()
    skip = int(data.split(b"cas_skip=", 1)[1].split()[0])
    damaged = {
        "cut-in-payload": data[: len(data) - 1000],
        "cut-last-byte": data[:-1],
        "cut-in-script": data[: skip - 200],
        "payload-byte": data[: skip + 5000] + bytes([data[skip + 5000] ^ 1]) + data[skip + 5001 :],
        "last-byte": data[:-1] + bytes([data[-1] ^ 0x80]),
        "script-text": data.replace(b"Needs no network", b"Needs no netwerk", 1),
    }
    assert all(len(v) != len(data) or v != data for v in damaged.values())
    for name, content in damaged.items():
        copy = tmp_path / f"{name}.sh"
        copy.write_bytes(content)
        prefix = tmp_path / f"prefix-{name}"
        result = run_installer(copy, "-b", "-p", str(prefix))
        assert result.returncode == 1, (name, result.stdout, result.stderr)
        assert "is damaged" in result.stderr and "nothing was installed" in result.stderr, name
        assert not prefix.exists(), name


def test_a_prefix_longer_than_the_binary_placeholders_is_refused(installer, tmp_path):
    prefix = tmp_path / ("x" * (300 - len(str(tmp_path))))
    result = run_installer(installer, "-b", "-p", str(prefix))
    assert result.returncode == 2
    assert f"is {len(str(prefix))} bytes long" in result.stderr and "room for 255 at most" in result.stderr
    assert not prefix.exists()
    for bad, why in (
        (f"{tmp_path}/with space", "spaces"),
        ("/", "into /"),
        (f"{tmp_path}/a/../b", ". or .."),
    ):
        result = run_installer(installer, "-b", "-p", bad)
        assert result.returncode == 2 and why in result.stderr, (bad, result.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_long_prefix_gets_conda_s_short_shebangs(installer, tmp_path):
    prefix = tmp_path / ("long" * 60)[: 200 - len(str(tmp_path)) - 1]  # 200 bytes: #! lines pass 127
    result = run_installer(installer, "-b", "-p", str(prefix))
    assert result.returncode == 0, result.stderr
    assert installed_payload(prefix) == expected_files(prefix) | {
        "bin/conda": (
            "#!/bin/sh\n"
            f"'''exec' \"{prefix}/bin/python3.12\" \"$0\" \"$@\"\n' '''\n"
            + expected_files(prefix)["bin/conda"].decode().split("\n", 1)[1]
        ).encode()
    }
    assert (prefix / "bin/demo-tool").read_bytes().startswith(b"#!/usr/bin/env demo-sh\n")
    env = {"PATH": f"{prefix}/bin:/usr/bin:/bin"}
    assert run_program(prefix / "bin/demo-tool", env=env).stdout.startswith("demo-tool 2.0 in")
    entry = run_program(prefix / "bin/conda", env=env)
    assert entry.stdout.startswith("conda 24.1.0 from"), entry.stderr


def test_update_replaces_what_changed_and_keeps_the_rest(installer, channel, tmp_path):
    old = build(tmp_path / "old", channel, ["python", "demo-tool ==1.0"], version="0.9")
    prefix = tmp_path / "prefix"
    assert run_installer(old, "-b", "-p", str(prefix)).returncode == 0
    assert (prefix / "share/demo-tool/old.txt").is_file()
    (prefix / "lib/python3.12/site-packages").mkdir(parents=True, exist_ok=True)
    (prefix / "user-file.txt").write_text("mine")

    refused = run_installer(installer, "-b", "-p", str(prefix))
    assert refused.returncode == 2 and "use -u" in refused.stderr

    result = run_installer(installer, "-b", "-u", "-p", str(prefix))
    assert result.returncode == 0, result.stderr
    assert "  kept      python-3.12.1-h0_cpython (installed already)" in result.stdout
    assert "  removed   demo-tool-1.0-h2" in result.stdout and "  installed demo-tool-2.0-h2" in result.stdout
    assert not (prefix / "share/demo-tool/old.txt").exists()
    assert (prefix / "share/demo-tool/new.txt").read_text() == "new in 2.0\n"
    assert not (prefix / "conda-meta/demo-tool-1.0-h2.json").exists()
    assert (prefix / "user-file.txt").read_text() == "mine"
    assert installed_payload(prefix) == expected_files(prefix) | {"user-file.txt": b"mine"}
    history = (prefix / "conda-meta/history").read_text()
    assert history.count("==> ") == 2
    assert f"-{channel.as_uri()}/linux-64::demo-tool-1.0-h2" in history
    assert f"+{channel.as_uri()}/linux-64::demo-tool-2.0-h2" in history
    assert rattler_would_do(channel.as_uri(), SPECS, prefix, tmp_path / "cache") == []


def test_help_and_bad_options(installer):
    result = run_installer(installer, "-h")
    assert result.returncode == 0
    assert "usage: my-installer-1.0-linux-64.sh [-b] [-u] [-p PREFIX] [-h]" in result.stdout
    assert "my-installer 1.0 (6 packages, linux-64)" in result.stdout
    result = run_installer(installer, "-x")
    assert result.returncode == 2 and "usage:" in result.stderr
    result = run_installer(installer, "-b", "extra")
    assert result.returncode == 2 and "unexpected argument: extra" in result.stderr


def test_the_prefix_is_the_one_rattler_itself_installs(installer, channel, tmp_path):
    """py-rattler's own installer, from the same channel, into a prefix of the same length: the
    same files with the same bytes (but the prefix; rattler indents entry points with tabs)."""
    ours, theirs = tmp_path / "ours", tmp_path / "them"
    assert run_installer(installer, "-b", "-p", str(ours)).returncode == 0
    rattler_install([channel.as_uri()], SPECS, theirs, tmp_path / "cache", "linux-64")
    skip = ("CACHEDIR.TAG", ".messages.txt", "done", "share/demo-tool/post-linked")  # not packages' files
    mine = {k: v for k, v in installed_payload(ours).items() if not k.startswith(skip)}
    rattler_s = {
        k: v.replace(str(theirs).encode(), str(ours).encode()) if isinstance(v, bytes) else v
        for k, v in installed_payload(theirs).items()
        if not k.startswith(skip)
    }
    rattler_s["bin/conda"] = rattler_s["bin/conda"].replace(b"\n\t", b"\n    ")
    # one known difference: a placeholder with no NUL after it before the end of the file is
    # left as it is by conda (and by us), and replaced by rattler
    tail = mine["lib/libdemo.so.1.0"].rindex(b"tail ")
    assert mine["lib/libdemo.so.1.0"][tail:] == b"tail " + PH.encode()
    assert rattler_s["lib/libdemo.so.1.0"][tail:].rstrip(b"\0") == b"tail " + str(ours).encode()
    rattler_s["lib/libdemo.so.1.0"] = (
        rattler_s["lib/libdemo.so.1.0"][:tail] + mine["lib/libdemo.so.1.0"][tail:]
    )
    assert mine == rattler_s


def test_the_script_passes_shellcheck(installer):
    """shellcheck (where it is installed) finds nothing to warn of in the script, as sh, dash or bash."""
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed")
    data = installer.read_bytes()
    script = installer.with_name("script.sh")
    script.write_bytes(data[: int(data.split(b"cas_skip=", 1)[1].split()[0])])
    for shell in ("sh", "dash", "bash"):
        result = subprocess.run(
            [shellcheck, "-s", shell, "-S", "warning", str(script)], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout
