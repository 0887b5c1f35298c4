"""Reading package archives: every kind of broken file is an ArchiveError naming it."""

from __future__ import annotations

import io
import zipfile

import pytest

from casconsole.conda.archive import ArchiveError, PackageSpec, build_package, read_index_json


def conda_with(members: dict[str, bytes], path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    path.write_bytes(buf.getvalue())
    return path


@pytest.mark.parametrize("fmt", [".conda", ".tar.bz2"])
def test_round_trip(tmp_path, fmt):
    spec = PackageSpec("foo", "1.0", "h1_0", 2, "linux-64", ["bar >=1"], license="MIT", files={"a": b"x"})
    index = read_index_json(build_package(tmp_path, spec, fmt))
    assert index == spec.index_json()


@pytest.mark.parametrize(
    ("name", "members"),
    [
        ("noinfo-1-0.conda", {"metadata.json": b"{}", "pkg-noinfo-1-0.tar.zst": b""}),
        ("badzstd-1-0.conda", {"metadata.json": b"{}", "info-badzstd-1-0.tar.zst": b"not zstd at all"}),
    ],
)
def test_broken_conda_archives(tmp_path, name, members):
    path = conda_with(members, tmp_path / name)
    with pytest.raises(ArchiveError, match=name):
        read_index_json(path)


@pytest.mark.parametrize("name", ["junk-1-0.conda", "junk-1-0.tar.bz2"])
def test_garbage_files(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ArchiveError, match=name):
        read_index_json(path)
