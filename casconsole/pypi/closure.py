"""Dependencies of kept files: core metadata read with `packaging.metadata`, markers evaluated
for the configured Pythons and platforms.

A file's metadata comes from the index's PEP 658 `.metadata` file when it offers one, else from
the wheel itself (`<name>-<version>.dist-info/METADATA`, read with the standard library's
zipfile) once it is on disk. A `Requires-Dist` is followed when its marker holds in at least one
target environment: each of `pypi.python_versions` (3.9 to 3.14 when none is set) on each
platform `pypi.platforms` names (Linux, Windows and macOS on x86_64 and arm64 when none is), with
the extras the requirement asked for.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from pathlib import Path

from packaging.markers import InvalidMarker, UndefinedComparison, UndefinedEnvironmentName
from packaging.metadata import parse_email
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name, canonicalize_version

DEFAULT_PYTHONS = ("3.9", "3.10", "3.11", "3.12", "3.13", "3.14")
MAX_METADATA = 8 << 20

# (sys_platform, platform_system, os_name, platform_machine) of the platforms a tag names
_SYSTEMS = {
    "linux": ("linux", "Linux", "posix"),
    "win": ("win32", "Windows", "nt"),
    "macosx": ("darwin", "Darwin", "posix"),
}
_DEFAULT_PLATFORMS = (
    ("linux", "x86_64"), ("linux", "aarch64"), ("win", "AMD64"), ("win", "ARM64"),
    ("macosx", "x86_64"), ("macosx", "arm64"),
)  # fmt: skip


class MetadataError(ValueError):
    """Core metadata that cannot be read; the message says why."""


def _platform_of(tag: str) -> tuple[str, str]:
    """(system, machine as platform.machine() says it) of a wheel platform tag."""
    if tag.startswith("win"):
        machine = {"win32": "x86", "win_amd64": "AMD64", "win_arm64": "ARM64"}.get(tag, "AMD64")
        return "win", machine
    if tag.startswith("macosx"):
        return "macosx", tag.rsplit("_", 1)[-1].replace("universal2", "arm64")
    arch = tag.split("_", 3)[-1] if tag.startswith(("manylinux_", "musllinux_")) else tag.split("_", 1)[-1]
    return "linux", arch


def environments(pythons: Iterable[str], platforms: Iterable[str]) -> list[dict[str, str]]:
    """The marker environments of every configured Python on every configured platform."""
    targets = sorted({_platform_of(t) for t in platforms}) or list(_DEFAULT_PLATFORMS)
    out = []
    for version in list(pythons) or list(DEFAULT_PYTHONS):
        for system, machine in targets:
            sys_platform, platform_system, os_name = _SYSTEMS[system]
            out.append(
                {
                    "python_version": version,
                    "python_full_version": f"{version}.0",
                    "implementation_name": "cpython",
                    "implementation_version": f"{version}.0",
                    "platform_python_implementation": "CPython",
                    "sys_platform": sys_platform,
                    "platform_system": platform_system,
                    "os_name": os_name,
                    "platform_machine": machine,
                    "platform_release": "",
                    "platform_version": "",
                    "extra": "",
                }
            )
    return out


def requirements_of(data: bytes) -> tuple[list[Requirement], list[str]]:
    """The `Requires-Dist` of core metadata, and the lines that could not be read."""
    try:
        raw, _ = parse_email(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MetadataError(f"not core metadata ({exc})") from None
    reqs, bad = [], []
    for text in raw.get("requires_dist", []):
        try:
            reqs.append(Requirement(text))
        except InvalidRequirement:
            bad.append(text)
    return reqs, bad


def needed(req: Requirement, extras: frozenset[str], envs: list[dict[str, str]]) -> bool:
    """Whether `req` applies in one of `envs`, with one of `extras` (or none) asked."""
    if req.marker is None:
        return True
    for env in envs:
        for extra in ("", *extras):
            try:
                if req.marker.evaluate({**env, "extra": extra}):
                    return True
            except (InvalidMarker, UndefinedComparison, UndefinedEnvironmentName):
                return True  # a marker we cannot evaluate: follow it rather than break the closure
    return False


def wheel_metadata(path: Path, name: str, version: str) -> bytes:
    """The METADATA of the wheel at `path` (`<name>-<version>.dist-info/METADATA`)."""
    try:
        with zipfile.ZipFile(path) as archive:
            member = _metadata_member(archive.namelist(), name, version)
            if member is None:
                raise MetadataError(f"{path.name}: no .dist-info/METADATA in the wheel")
            info = archive.getinfo(member)
            if info.file_size > MAX_METADATA:
                raise MetadataError(f"{path.name}: METADATA larger than 8 MiB")
            return archive.read(member)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise MetadataError(f"{path.name}: not a readable wheel ({exc})") from None


def _metadata_member(names: list[str], name: str, version: str) -> str | None:
    wanted = (canonicalize_name(name), canonicalize_version(version))
    for member in names:
        folder, _, rest = member.partition("/")
        if rest != "METADATA" or not folder.endswith(".dist-info"):
            continue
        dist, _, ver = folder[: -len(".dist-info")].rpartition("-")
        if (canonicalize_name(dist), canonicalize_version(ver)) == wanted:
            return member
    return None
