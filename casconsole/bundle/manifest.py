"""A bundle's `manifest.json`: what it carries, where in the volumes, what it deletes.

    {"format": "casconsole-bundle", "version": 1, "created": "...", "source": "/srv/conda",
     "base": "sha256:..." | null,      the state it was made against (null: the whole mirror)
     "target": "sha256:...",           the state of the mirror it was made from
     "volume_size": 4293918720,
     "volumes": [{"name": "bundle.001", "size": 4293918720}, ...],
     "files": [{"path": "pkgs/linux-64/x-1.0-0.conda", "size": 1, "sha256": "...",
                "kind": "file", "offset": 0}, ...],       in stream order, one a line
     "delete": ["pkgs/linux-64/old-1.0-0.conda", ...]}

A manifest comes from outside (a stick, a download): it is parsed strictly (unknown fields
refused), every path is checked by the rules of paths.py, and the layout must be exact: volumes
`bundle.001`... in order, each of the volume size but the last; files laid end to end from
offset 0, filling the volumes exactly; no path twice, none both carried and deleted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from casconsole.bundle.paths import PathProblem, check_path
from casconsole.bundle.signing import load_public_key, verify
from casconsole.bundle.state import BundleError, Digest, Sha256, Size, now_text
from casconsole.bundle.volumes import MAX_VOLUMES, MIN_VOLUME_SIZE, VOLUME_NAME, volume_name
from casconsole.errors import os_error_message

BUNDLE_FORMAT = "casconsole-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.sig"
MAX_MANIFEST = 1 << 30  # a manifest of a million files is about 200 MB


class Carried(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A file the bundle carries: its path under the mirror, size, sha256, kind, offset."""

    path: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    size: Size
    sha256: Sha256
    kind: Literal["file", "index"]
    offset: Size


class Volume(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    size: Annotated[int, msgspec.Meta(ge=1)]


class _ManifestFile(msgspec.Struct, forbid_unknown_fields=True):
    format: Literal["casconsole-bundle"]
    version: Literal[1]
    created: str
    source: str
    base: Digest | None
    target: Digest
    volume_size: Annotated[int, msgspec.Meta(ge=MIN_VOLUME_SIZE)]
    volumes: list[Volume]
    files: list[Carried]
    delete: list[str]


@dataclass
class Manifest:
    base: str | None
    target: str
    volume_size: int
    volumes: list[Volume] = field(default_factory=list)
    files: list[Carried] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    source: str = ""
    created: str = ""

    @property
    def bytes(self) -> int:
        return sum(v.size for v in self.volumes)

    def to_bytes(self) -> bytes:
        """The manifest's JSON: a line per file and deletion, so that it reads and diffs well."""
        encode = msgspec.json.encode
        head = {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "created": self.created or now_text(),
            "source": self.source,
            "base": self.base,
            "target": self.target,
            "volume_size": self.volume_size,
            "volumes": self.volumes,
        }

        def listing(items: list) -> bytes:
            return b"[\n" + b",\n".join(encode(i) for i in items) + b"\n]" if items else b"[]"

        return (
            encode(head)[:-1]
            + b',"files":'
            + listing(self.files)
            + b',"delete":'
            + listing(self.delete)
            + b"}\n"
        )

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> Manifest:
        try:
            parsed = msgspec.json.decode(data, type=_ManifestFile)
        except msgspec.ValidationError as exc:
            raise BundleError(f"{where}: not a bundle manifest of this version ({exc})") from None
        except msgspec.DecodeError as exc:
            raise BundleError(f"{where}: not valid JSON ({exc})") from None
        manifest = cls(
            parsed.base,
            parsed.target,
            parsed.volume_size,
            parsed.volumes,
            parsed.files,
            parsed.delete,
            parsed.source,
            parsed.created,
        )
        problem = manifest.problem()
        if problem:
            raise BundleError(f"{where}: {problem}")
        return manifest

    def problem(self) -> str | None:
        """What makes the manifest unusable, or None (see the module docstring)."""
        if len(self.volumes) > MAX_VOLUMES:
            return f"{len(self.volumes)} volumes, more than {MAX_VOLUMES}"
        for number, volume in enumerate(self.volumes, 1):
            if volume.name != volume_name(number) or not VOLUME_NAME.match(volume.name):
                return f"volume {number} is named {volume.name!r}, not {volume_name(number)!r}"
            last = number == len(self.volumes)
            if volume.size > self.volume_size or (not last and volume.size != self.volume_size):
                return f"{volume.name} holds {volume.size:,} bytes; volumes hold {self.volume_size:,}"
        seen: set[str] = set()
        offset = 0
        for f in self.files:
            try:
                check_path(f.path, f.kind)
            except PathProblem as exc:
                return str(exc)
            if f.path in seen:
                return f"{f.path!r} is carried twice"
            seen.add(f.path)
            if f.offset != offset:
                return f"{f.path!r} starts at {f.offset:,}, not at {offset:,} where the one before ends"
            offset += f.size
        if offset != self.bytes:
            return f"the files hold {offset:,} bytes, the volumes {self.bytes:,}"
        deleted: set[str] = set()
        for path in self.delete:
            try:
                check_path(path)
            except PathProblem as exc:
                return f"delete: {exc}"
            if path in seen or path in deleted:
                return f"delete: {path!r} is also carried, or listed twice"
            deleted.add(path)
        return None


@dataclass
class Bundle:
    """A bundle folder opened: its manifest parsed and checked, its signature (if any) checked."""

    folder: Path
    manifest: Manifest
    digest: str  # sha256 of manifest.json's bytes: names this bundle
    signed: bool
    verified_by: Path | None  # the trusted key that checked the signature


def open_bundle(folder: Path, trusted_key: Path | None = None) -> Bundle:
    """Read `folder`'s manifest; with a `trusted_key`, refuse it unless signed by that key.

    The signature is checked over the manifest's bytes before they are parsed."""
    folder = Path(folder)
    path = folder / MANIFEST
    if trusted_key is not None:
        load_public_key(trusted_key)  # a setting that cannot be used is told first
    if not folder.is_dir():
        raise BundleError(f"{folder}: no such folder")
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST:
            raise BundleError(f"{path}: {size:,} bytes, too large for a manifest")
        data = path.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{folder}: no {MANIFEST}: not a bundle, or its export did not finish") from None
    except OSError as exc:
        raise BundleError(f"cannot read the bundle: {os_error_message(exc)}") from None
    signature = folder / SIGNATURE
    signed = signature.exists()
    if trusted_key is not None:
        if not signed:
            raise BundleError(
                f"{folder}: the bundle is not signed (no {SIGNATURE}), and bundle_trusted_key "
                f"({trusted_key}) says bundles must be"
            )
        verify(trusted_key, data, signature)
    manifest = Manifest.from_bytes(data, str(path))
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return Bundle(folder, manifest, digest, signed, trusted_key)
