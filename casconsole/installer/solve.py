"""Solving the installer's specs with py-rattler's solver, against the channels' repodata.

The repodata comes from `channels.py` (fetched through our network policy) and is handed to the
solver as files, so rattler itself fetches nothing. Channel priority is strict: a name is taken
from the first channel that has it, as conda does by default.

Virtual packages: built for the running platform, the running machine's (`__glibc`, `__linux`,
`__osx`, `__archspec`, `__cuda`), with conda's `CONDA_OVERRIDE_*` variables honoured; built for
another platform, a fixed baseline (`__unix`, `__linux` or `__osx`, `__glibc 2.28` on linux,
`__osx 11.0` on osx, `__archspec` of the platform's architecture), overridden by the same
`CONDA_OVERRIDE_GLIBC` / `CONDA_OVERRIDE_OSX` variables. See docs/installer.md.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from casconsole.installer.channels import ChannelData
from casconsole.installer.construct import InstallerError, InstallerSpec
from casconsole.layout import machine_subdir

_BASELINE = {"linux": ("__glibc", "2.28"), "osx": ("__osx", "11.0")}
_ARCH = {
    "64": "x86_64", "32": "x86", "aarch64": "aarch64", "arm64": "arm64", "ppc64le": "ppc64le",
    "ppc64": "ppc64", "s390x": "s390x", "armv7l": "armv7l", "armv6l": "armv6l", "riscv64": "riscv64",
    "riscv32": "riscv32", "loongarch64": "loongarch64",
}  # fmt: skip


@dataclass(frozen=True)
class Chosen:
    """One package of the solution, in install order, with the channel it comes from."""

    channel: ChannelData
    subdir: str
    fn: str
    url: str  # where to fetch it (token included)
    name: str
    version: str
    build: str
    build_number: int
    size: int | None
    sha256: str | None
    md5: str | None

    @property
    def stem(self) -> str:
        return f"{self.name}-{self.version}-{self.build}"


def virtual_packages(platform: str, env: Mapping[str, str] | None = None) -> list:
    """The virtual packages the solver takes as present on the target."""
    import rattler

    env = os.environ if env is None else env
    if platform == machine_subdir():
        overrides = rattler.VirtualPackageOverrides.from_env()
        return [v.into_generic() for v in rattler.VirtualPackage.detect(overrides)]
    family, _, arch = platform.partition("-")
    pairs = [("__unix", "0", "0")]
    if family == "linux":
        pairs += [
            ("__linux", "0", "0"),
            ("__glibc", env.get("CONDA_OVERRIDE_GLIBC") or _BASELINE["linux"][1], "0"),
        ]
    else:
        pairs += [("__osx", env.get("CONDA_OVERRIDE_OSX") or _BASELINE["osx"][1], "0")]
    pairs.append(("__archspec", "1", _ARCH.get(arch, arch)))
    from rattler.exceptions import InvalidVersionError

    packages = []
    for name, version, build in pairs:
        try:
            parsed = rattler.Version(version)
        except InvalidVersionError:
            raise InstallerError(f"{name}: {version!r} is not a version (from CONDA_OVERRIDE_*)") from None
        packages.append(
            rattler.GenericVirtualPackage(rattler.PackageName(name), parsed, rattler.BuildString(build))
        )
    return packages


def solve(spec: InstallerSpec, channels: list[ChannelData], workdir: Path) -> list[Chosen]:
    """The packages that satisfy `spec.specs` on `spec.platform`, each after its dependencies."""
    import rattler
    from rattler.exceptions import SolverError

    sources = []
    channel_of: dict[tuple[str, str], ChannelData] = {}
    with tempfile.TemporaryDirectory(dir=workdir, prefix="repodata-") as tmp:
        for n, channel in enumerate(channels):
            rattler_channel = rattler.Channel(channel.url)
            for subdir in (spec.platform, "noarch"):
                path = Path(tmp) / f"{n}-{subdir}.json"
                path.write_bytes(channel.repodata[subdir])
                sources.append(rattler.SparseRepoData(rattler_channel, subdir, path))
                channel_of[(_base(str(rattler_channel.base_url)), subdir)] = channel
        try:
            records = asyncio.run(
                rattler.solve_with_sparse_repodata(
                    [rattler.MatchSpec(text) for text in spec.specs],  # conda's lenient reading
                    sources,
                    virtual_packages=virtual_packages(spec.platform),
                )
            )
        except SolverError as exc:
            raise InstallerError(
                f"{spec.where('specs')}: the specs cannot be solved for {spec.platform}:\n{str(exc).strip()}"
            ) from None
        finally:
            for source in sources:
                source.close()
    by_name = {record.name.normalized: record for record in records}
    ordered = [by_name[r.name.normalized] for r in rattler.PackageRecord.sort_topologically(records)]
    return [_chosen(record, channel_of) for record in ordered]


def _base(url: str) -> str:
    return url.rstrip("/")


def _chosen(record, channel_of: dict[tuple[str, str], ChannelData]) -> Chosen:
    url = str(record.url)
    subdir = record.subdir
    channel = channel_of.get((_base(str(record.channel or "")), subdir))
    if channel is None:  # match by URL prefix (a channel URL rattler spelled differently): the
        # longest, since a mirror's root URL is a prefix of its other channels' URLs
        matches = [
            (len(base), c)
            for (base, s), c in channel_of.items()
            if s == subdir and url.startswith(base + "/")
        ]
        channel = max(matches, key=lambda m: m[0])[1] if matches else None
    if channel is None:
        raise InstallerError(f"{record.file_name}: solved from a channel that was not given ({url})")
    raw = channel.raw_record(subdir, record.file_name)
    name, version, build = (raw.get(k) for k in ("name", "version", "build"))
    if not all(isinstance(v, str) and v for v in (name, version, build)):
        raise InstallerError(
            f"{channel.shown}/{subdir}/{record.file_name}: a record without name, version or build"
        )
    return Chosen(
        channel=channel,
        subdir=subdir,
        fn=record.file_name,
        url=url,
        name=name,
        version=version,
        build=build,
        build_number=record.build_number,
        size=record.size,
        sha256=record.sha256.hex() if record.sha256 else None,
        md5=record.md5.hex() if record.md5 else None,
    )
