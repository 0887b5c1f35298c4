"""Conda package archives: build real `.conda` / `.tar.bz2` files and read their `info/`.

Building is used by the demo upstream, the tests and the benchmarks; reading by the indexer.
Archives are deterministic (fixed mtimes, sorted members) so the same inputs give the same bytes.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import tarfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import zstandard
from conda_package_streaming import package_streaming

from casconsole.errors import CasError

# conda-package-streaming decompresses with the standard library's zstd (3.14+) or its backport,
# whose errors are not zstandard's
_STREAM_ZSTD_ERRORS: tuple[type[Exception], ...] = ()
for _module in ("compression.zstd", "backports.zstd"):
    try:
        _STREAM_ZSTD_ERRORS += (importlib.import_module(_module).ZstdError,)
    except ImportError:
        pass
_EPOCH = 1_700_000_000  # fixed member mtime keeps archives reproducible


class ArchiveError(CasError):
    """A package file that cannot be read as a conda package."""


@dataclass
class PackageSpec:
    """What goes into one generated package."""

    name: str
    version: str
    build: str = "0"
    build_number: int = 0
    subdir: str = "noarch"
    depends: list[str] = field(default_factory=list)
    constrains: list[str] = field(default_factory=list)
    license: str | None = None
    license_family: str | None = None
    timestamp: int | None = None  # milliseconds, as conda-build writes it
    noarch: str | None = None
    summary: str = ""
    # payload: path inside the prefix -> content
    files: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def stem(self) -> str:
        return f"{self.name}-{self.version}-{self.build}"

    def index_json(self) -> dict:
        arch, platform = _arch_platform(self.subdir)
        index: dict = {
            "name": self.name,
            "version": self.version,
            "build": self.build,
            "build_number": self.build_number,
            "depends": list(self.depends),
            "subdir": self.subdir,
            "arch": arch,
            "platform": platform,
        }
        if self.constrains:
            index["constrains"] = list(self.constrains)
        if self.license is not None:
            index["license"] = self.license
        if self.license_family is not None:
            index["license_family"] = self.license_family
        if self.timestamp is not None:
            index["timestamp"] = self.timestamp
        if self.noarch:
            index["noarch"] = self.noarch
        return index


def _arch_platform(subdir: str) -> tuple[str | None, str | None]:
    if subdir == "noarch" or "-" not in subdir:
        return None, None
    platform, arch = subdir.split("-", 1)
    arch = {"64": "x86_64", "32": "x86", "aarch64": "aarch64", "arm64": "arm64"}.get(arch, arch)
    return arch, platform


def _tar_bytes(members: Iterable[tuple[str, bytes]], mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(members):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = _EPOCH
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _info_members(spec: PackageSpec) -> dict[str, bytes]:
    paths = [
        {
            "_path": path,
            "path_type": "hardlink",
            "sha256": hashlib.sha256(data).hexdigest(),
            "size_in_bytes": len(data),
        }
        for path, data in sorted(spec.files.items())
    ]
    about = {"summary": spec.summary or f"The {spec.name} package", "license": spec.license or ""}
    return {
        "info/index.json": _json(spec.index_json()),
        "info/paths.json": _json({"paths": paths, "paths_version": 1}),
        "info/about.json": _json(about),
        "info/files": "".join(p + "\n" for p in sorted(spec.files)).encode(),
    }


def _json(obj: object) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True).encode()


def build_package(directory: Path, spec: PackageSpec, fmt: str = ".conda") -> Path:
    """Write one package archive of `spec` into `directory` and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    info = _info_members(spec)
    if fmt == ".tar.bz2":
        data = _tar_bytes([*info.items(), *spec.files.items()], "w:bz2")
    elif fmt == ".conda":
        cctx = zstandard.ZstdCompressor(level=3)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr(_zipinfo("metadata.json"), b'{"conda_pkg_format_version": 2}')
            pkg = cctx.compress(_tar_bytes(spec.files.items(), "w"))
            zf.writestr(_zipinfo(f"pkg-{spec.stem}.tar.zst"), pkg)
            zf.writestr(_zipinfo(f"info-{spec.stem}.tar.zst"), cctx.compress(_tar_bytes(info.items(), "w")))
        data = buf.getvalue()
    else:
        raise ValueError(f"unknown package format {fmt!r}")
    path = directory / (spec.stem + fmt)
    path.write_bytes(data)
    return path


def _zipinfo(name: str) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(name, date_time=(2023, 11, 14, 0, 0, 0))
    zi.compress_type = zipfile.ZIP_STORED
    return zi


def read_info_files(path: Path, wanted: Iterable[str] = ("info/index.json",)) -> dict[str, bytes]:
    """Read members of `info/` from a package without extracting its payload."""
    want = set(wanted)
    found: dict[str, bytes] = {}
    try:
        with open(path, "rb") as fileobj:
            for tar, member in package_streaming.stream_conda_info(str(path), fileobj):
                if member.name in want and member.isfile():
                    extracted = tar.extractfile(member)
                    if extracted is not None:
                        found[member.name] = extracted.read()
                    if len(found) == len(want):
                        break
    except (
        OSError,
        EOFError,
        ValueError,
        LookupError,
        tarfile.TarError,
        zipfile.BadZipFile,
        zstandard.ZstdError,
        *_STREAM_ZSTD_ERRORS,
    ) as exc:
        raise ArchiveError(f"{path.name}: not a readable conda package ({exc})") from exc
    return found


def read_index_json(path: Path) -> dict:
    """The package's `info/index.json` as a dict; ArchiveError when absent or unreadable."""
    raw = read_info_files(path).get("info/index.json")
    if raw is None:
        raise ArchiveError(f"{path.name}: no info/index.json")
    try:
        index = json.loads(raw)
    except ValueError as exc:
        raise ArchiveError(f"{path.name}: info/index.json is not JSON ({exc})") from exc
    if not isinstance(index, dict):
        raise ArchiveError(f"{path.name}: info/index.json is not an object")
    return index
