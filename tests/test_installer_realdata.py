"""cas-installer on real packages (../shared/realdata): real archives with real binary and text
placeholders, installed by the shell and compared byte for byte with what py-rattler's own
installer puts into a prefix from the same channel (or, for osx binaries, which rattler cannot
link on linux, with conda's replacement of the archive's files)."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest
import rattler
from rattler.exceptions import InstallerError as RattlerInstallError
from test_installer_support import (
    Pkg,
    cas_installer,
    conda_replace,
    rattler_install,
    rattler_would_do,
    run_installer,
    tree,
    write_channel,
)

from casconsole.conda.archive import PackageSpec

pytestmark = pytest.mark.realdata


def payload(prefix: Path) -> dict:
    """The packages' files (rattler also leaves a CACHEDIR.TAG in the prefix: not a package's)."""
    return {k: v for k, v in tree(prefix).items() if not k.startswith(("conda-meta/", "CACHEDIR.TAG"))}


def build_and_install(tmp_path: Path, channels: list[Path], specs: list[str], platform: str) -> Path:
    listed = ", ".join(str(c) for c in channels)
    (tmp_path / "real.yaml").write_text(f"name: real\nversion: 1\nchannels: [{listed}]\nspecs: {specs}\n")
    result = cas_installer("real.yaml", "--platform", platform, "--output", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    prefix = tmp_path / "ours"
    installed = run_installer(tmp_path / f"out/real-1-{platform}.sh", "-b", "-p", str(prefix))
    assert installed.returncode == 0, installed.stderr
    return prefix


def without_conda_files(channel: Path, subdir: str) -> None:
    """Leave the `.tar.bz2` of each package: conda_format_repo's osx-64 `.conda` is broken."""
    data = json.loads((channel / subdir / "repodata.json").read_text())
    for fn in data.pop("packages.conda", {}):
        (channel / subdir / fn).unlink()
    (channel / subdir / "repodata.json").write_text(json.dumps(data))


def test_a_broken_real_archive_is_refused_as_rattler_refuses_it(realdata, tmp_path):
    """The real osx-64 zlib .conda of conda's test data holds symbolic links without a target
    (an old packing bug); rattler cannot unpack it either."""
    channel = tmp_path / "conda_format_repo"
    shutil.copytree(realdata / "conda-conda/tests/data/conda_format_repo", channel)
    (tmp_path / "real.yaml").write_text(f"name: real\nversion: 1\nchannels: [{channel}]\nspecs: [zlib]\n")
    result = cas_installer("real.yaml", "--platform", "osx-64", "--output", "out", cwd=tmp_path)
    assert result.returncode == 1
    assert "zlib-1.2.11-h1de35cc_3.conda: refused link lib/libz.1.dylib -> ''" in result.stderr
    assert not (tmp_path / "out").exists()
    with pytest.raises(RattlerInstallError, match="no link name"):
        rattler_install([channel.as_uri()], ["zlib"], tmp_path / "rattler", tmp_path / "cache", "osx-64")


def test_real_osx_zlib_with_binary_placeholders_matches_rattler(realdata, tmp_path):
    channel = tmp_path / "conda_format_repo"
    shutil.copytree(realdata / "conda-conda/tests/data/conda_format_repo", channel)
    without_conda_files(channel, "osx-64")
    prefix = build_and_install(tmp_path, [channel], ["zlib"], "osx-64")
    # rattler cannot link osx binaries here (it signs them with macOS's codesign): conda's
    # replacement, applied to the archive's own files, is the reference
    archive = channel / "osx-64/zlib-1.2.11-h1de35cc_3.tar.bz2"
    with tarfile.open(archive) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    placeholders = {
        p["_path"]: (p["prefix_placeholder"], p["file_mode"])
        for p in json.loads(files.pop("info/paths.json"))["paths"]
        if "prefix_placeholder" in p
    }
    expected = {}
    for path, data in files.items():
        if path.startswith("info/"):
            continue
        placeholder, mode = placeholders.get(path, (None, None))
        expected[path] = conda_replace(data, placeholder, str(prefix), mode) if placeholder else data
    ours = payload(prefix)
    assert ours == expected
    # the real dylibs held the 255-byte build placeholder: now the prefix, padded with NULs
    dylib = ours["lib/libz.1.2.11.dylib"]
    assert str(prefix).encode() + b"/lib" in dylib and b"placehold_placehold" not in dylib
    assert ours["lib/pkgconfig/zlib.pc"].startswith(f"prefix={prefix}\n".encode())
    record = rattler.PrefixRecord.from_path(prefix / "conda-meta/zlib-1.2.11-h1de35cc_3.json")
    assert record.file_name == "zlib-1.2.11-h1de35cc_3.tar.bz2"
    assert rattler_would_do(channel.as_uri(), ["zlib"], prefix, tmp_path / "cache", platform="osx-64") == []


def test_real_linux_package_with_its_dependencies_stubbed(realdata, tmp_path):
    """A real libsimplerasters (linux-64: a shared library, its symbolic link, cmake files listed
    with a placeholder) from the real channel, its dependencies from a channel of stand-ins."""
    real = realdata / "JanCaha-conda-channel"
    stubs = write_channel(
        tmp_path / "stubs",
        [Pkg(PackageSpec(name, version, "0", subdir="linux-64", files={f"share/{name}.txt": b"stub\n"}))
         for name, version in (("libgcc", "15.1.0"), ("libstdcxx", "15.1.0"), ("libgdal", "3.12.2"),
                               ("libgdal-core", "3.12.2"))],
    )  # fmt: skip
    prefix = build_and_install(tmp_path, [real, stubs], ["libsimplerasters"], "linux-64")
    theirs = tmp_path / "rattler"
    rattler_install(
        [real.as_uri(), stubs.as_uri()], ["libsimplerasters"], theirs, tmp_path / "cache", "linux-64"
    )
    ours = payload(prefix)
    assert ours == payload(theirs)
    assert ours["lib/libsimplerasters.so"] == "-> libsimplerasters.so.0.9.0"
    assert len(ours["lib/libsimplerasters.so.0.9.0"]) == 245432
    assert (prefix / "conda-meta/libsimplerasters-0.9.0-h29872b0_0.json").is_file()
    assert (
        rattler_would_do([real.as_uri(), stubs.as_uri()], ["libsimplerasters"], prefix, tmp_path / "cache")
        == []
    )
