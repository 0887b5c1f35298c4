"""Packages are hostile input: an archive that would write outside the prefix, link out of it,
make a device, or disagree with its record is refused by name, and no installer is written.
And the edit plans, checked against conda's own algorithm on many generated files."""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

import pytest
from test_installer_support import LEGACY_PH, PH, Pkg, cas_installer, conda_replace, write_channel

from casconsole.conda.archive import PackageSpec
from casconsole.installer.placeholders import entry_point_edit, plan_edit, render


def bad_channel(root: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    """A channel whose one package (`bad-1-0.tar.bz2`) holds `member` beside a good file."""
    spec = PackageSpec("bad", "1", "0", subdir="linux-64", files={"share/ok.txt": b"ok\n"})
    write_channel(root, [Pkg(spec, fmt=".tar.bz2")])
    path = root / "linux-64/bad-1-0.tar.bz2"
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:bz2") as tar:
        for m, d in [*members, (member, data)]:
            tar.addfile(m, io.BytesIO(d) if d is not None and m.isfile() else None)
    path.write_bytes(buf.getvalue())
    repodata = json.loads((root / "linux-64/repodata.json").read_text())
    record = repodata["packages"]["bad-1-0.tar.bz2"]
    import hashlib

    record.update(size=path.stat().st_size, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    record.pop("md5", None)
    (root / "linux-64/repodata.json").write_text(json.dumps(repodata))
    (root / "linux-64/repodata.json.zst").unlink()
    return root


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, size
    return info


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (member("../escape.txt", size=3), "refused member '../escape.txt': not a plain relative path"),
        (member("/etc/evil", size=3), "refused member '/etc/evil'"),
        (member("lib/a/../../../x", size=3), "refused member 'lib/a/../../../x': not a plain relative path"),
        (member("share/link", tarfile.SYMTYPE, "../../outside"), "refused link share/link -> ../../outside"),
        (member("share/abs", tarfile.SYMTYPE, "/etc/passwd"), "refused link share/abs -> '/etc/passwd'"),
        (member("dev/null", tarfile.CHRTYPE), "refused member 'dev/null': not a file, link or folder"),
        (member('share/"quoted"', size=3), "refused member 'share/\"quoted\"': not a plain relative path"),
        (member("share/ok.txt", size=3), "share/ok.txt is in the package twice"),
    ],
)
def test_a_hostile_archive_is_refused_by_name(tmp_path, bad, message):
    channel = bad_channel(tmp_path / "chan", bad, b"bad" if bad.isfile() else b"")
    (tmp_path / "a.yaml").write_text(f"name: a\nversion: 1\nchannels: [{channel}]\nspecs: [bad]\n")
    result = cas_installer("a.yaml", "--output", "out", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert f"cas-installer: error: bad-1-0.tar.bz2: {message}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_package_that_is_not_what_its_record_says_is_refused(tmp_path):
    pkg = Pkg(PackageSpec("a", "1", "0", subdir="linux-64"), fmt=".tar.bz2")
    channel = write_channel(tmp_path / "chan", [pkg])
    repodata = json.loads((channel / "linux-64/repodata.json").read_text())
    # the record now says b-1-0 lives in a's archive: the archive's index.json disagrees
    record = repodata["packages"].pop("a-1-0.tar.bz2")
    (channel / "linux-64/a-1-0.tar.bz2").rename(channel / "linux-64/b-1-0.tar.bz2")
    repodata["packages"]["b-1-0.tar.bz2"] = {**record, "name": "b"}
    (channel / "linux-64/repodata.json").write_text(json.dumps(repodata))
    (channel / "linux-64/repodata.json.zst").unlink()
    (tmp_path / "a.yaml").write_text(f"name: a\nversion: 1\nchannels: [{channel}]\nspecs: [b]\n")
    result = cas_installer("a.yaml", "--output", "out", cwd=tmp_path)
    assert result.returncode == 1
    assert "b-1-0.tar.bz2: its info/index.json says name 'a', its record 'b'" in result.stderr
    # and a file that is not the one the record describes
    (channel / "linux-64/b-1-0.tar.bz2").write_bytes(b"not a package at all")
    result = cas_installer("a.yaml", "--output", "out", cwd=tmp_path)
    assert result.returncode == 1 and "b-1-0.tar.bz2: 20 bytes, its record says" in result.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- the edit plans


def random_file(rng: random.Random, placeholder: str) -> bytes:
    pieces = [placeholder.encode(), b"\0", b"/lib", b":", b"\n", b"#!", b" -E", b"x" * rng.randint(0, 40)]
    parts = [
        rng.choice(pieces) if rng.random() < 0.8 else rng.randbytes(rng.randint(0, 9)) for _ in range(12)
    ]
    if rng.random() < 0.5:
        parts.insert(0, b"#!" + rng.choice([placeholder.encode(), b"/usr"]) + b"/bin/tool" + rng.choice(
            [b"", b" -E", b" -x " + placeholder.encode()]) + b"\n")  # fmt: skip
    return b"".join(parts[: rng.randint(0, 12)])


@pytest.mark.parametrize("placeholder", [PH, LEGACY_PH])
def test_edit_plans_do_what_conda_does(placeholder):
    """Thousands of generated files and prefixes: the planned operations write exactly what
    conda's replacement writes (text: with its long-#! rule; binary: padded C strings)."""
    rng = random.Random(15)
    for _ in range(3000):
        data = random_file(rng, placeholder)
        prefix = "/" + "p" * rng.choice([1, 10, 31, 60, 120, 200])
        for mode in ("text", "binary"):
            if mode == "binary" and len(prefix) > len(placeholder):
                continue
            edit = plan_edit("f", data, placeholder, mode == "binary", "linux-64")
            got = render(edit, data, prefix, "linux-64") if edit else data
            assert got == conda_replace(data, placeholder, prefix, mode), (data, prefix, mode)


def test_entry_points_are_conda_s_with_a_long_prefix_too():
    body = b"import sys\n"
    content, edit = entry_point_edit("bin/x", "python3.12", body, LEGACY_PH)
    short = "/opt/env"
    assert render(edit, content, short, "linux-64") == f"#!{short}/bin/python3.12\n".encode() + body
    long = "/opt/" + "e" * 120
    assert render(edit, content, long, "linux-64") == (
        f"#!/bin/sh\n'''exec' \"{long}/bin/python3.12\" \"$0\" \"$@\"\n' '''\n".encode() + body
    )
    assert render(edit, content, long, "osx-arm64").startswith(f"#!{long}/bin/".encode())  # 512 on osx
