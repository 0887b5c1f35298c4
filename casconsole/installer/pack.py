"""One conda package made into what the shell installer can install with tar and gzip alone.

A `.conda` is a zip of zstd tarballs and a `.tar.bz2` needs bzip2: a target may have neither
zstd nor unzip, so each package's payload is written again as a gzip tarball. On the way:

- every member is checked (hostile archives): no absolute path, no `..`, no link out of the
  prefix, no device or fifo, no name the installer's manifest cannot carry;
- `noarch: python` packages are laid out for the installer's python (`site-packages/` into
  `lib/pythonX.Y/site-packages/`, `python-scripts/` into `bin/`) and their entry points are
  written, as conda does at link time;
- each file `info/paths.json` (or, for old packages, `info/has_prefix`) lists with a prefix
  placeholder gets its edit planned (`placeholders.py`);
- its `conda-meta/<name>-<version>-<build>.json` is written: the channel's record with the
  fields of an installed package (`files`, `paths_data`, `url`, `channel`, `requested_spec`).
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import posixpath
import re
import shlex
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from conda_package_streaming import package_streaming

# the zstd errors of the decompressor conda-package-streaming uses (the archive reader knows them)
from casconsole.conda.archive import _STREAM_ZSTD_ERRORS, ArchiveError, read_info_files
from casconsole.errors import Cancelled
from casconsole.installer.channels import mask_token
from casconsole.installer.fetch import PackageError, Taken
from casconsole.installer.placeholders import Edit, entry_point_edit, plan_edit
from casconsole.installer.solve import Chosen

EPOCH = 1_700_000_000  # member mtime: the same inputs give the same installer
GZIP_LEVEL = 6
LEGACY_PLACEHOLDER = "/opt/anaconda1anaconda2anaconda3"  # conda's, for has_prefix lines without one
# the installer's shell reads names line by line, and conda-meta's "files" as JSON lines
_BAD_NAME = re.compile(r'[\x00-\x1f\x7f"\\]')
_ENTRY_POINT = re.compile(r"\s*([A-Za-z0-9_][A-Za-z0-9_.+-]*)\s*=\s*([\w.]+)\s*:\s*([\w.]+)\s*")
_WORD = re.compile(r"[A-Za-z0-9_.+!-]+")
_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES}  # the work folder's
INFO_FILES = ("info/index.json", "info/paths.json", "info/has_prefix", "info/files", "info/link.json")


@dataclass(frozen=True)
class PythonInfo:
    """The installer's python, for laying out `noarch: python` packages."""

    version: str  # "3.12"
    site_packages: str  # "lib/python3.12/site-packages"


@dataclass
class Packed:
    """A package ready for the payload."""

    index: int
    chosen: Chosen
    tarball: Path
    edits: list[Edit]
    meta: bytes  # conda-meta JSON
    post_link: bool
    files: int
    installed_bytes: int
    literals: dict[str, bytes] = field(default_factory=dict)

    @property
    def min_binary_placeholder(self) -> int:
        """The shortest binary placeholder this package's files hold (0: none)."""
        return min((e.placeholder_len for e in self.edits if e.binary), default=0)


@dataclass
class _Placeholder:
    placeholder: str
    binary: bool


def pack_package(
    index: int,
    chosen: Chosen,
    taken: Taken,
    out_dir: Path,
    *,
    platform: str,
    python: PythonInfo | None,
    requested: str | None,
    cancel: threading.Event | None = None,
) -> Packed:
    """Write `out_dir/<index>.tar.gz` and return what the installer needs of the package."""
    info = _read_info(taken.path)
    _check_index(chosen, info)
    link = _json(info, "info/link.json") if "info/link.json" in info else {}
    noarch = link.get("noarch") if isinstance(link.get("noarch"), dict) else {}
    is_python = (
        noarch.get("type") == "python"
        or chosen.channel.raw_record(chosen.subdir, chosen.fn).get("noarch") == "python"
    )
    if is_python and python is None:
        raise PackageError(f"{chosen.fn}: a noarch: python package, and there is no python in the installer")
    relocate = _relocator(python if is_python else None)
    paths, placeholders = _paths_of(chosen, info)
    packer = _Packer(chosen, platform, relocate, placeholders, paths, cancel)
    tarball = out_dir / f"{index:04d}.tar.gz"
    try:
        # the gzip header's time fixed too: the same packages give the same installer, byte for byte
        with (
            gzip.GzipFile(tarball, "wb", compresslevel=GZIP_LEVEL, mtime=EPOCH) as compressed,
            tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as out,
        ):
            packer.copy_payload(taken.path, out)
            if is_python:
                packer.add_entry_points(out, noarch.get("entry_points") or [], python)  # type: ignore[arg-type]
    except (
        OSError, EOFError, tarfile.TarError, LookupError, ValueError, AssertionError, zipfile.BadZipFile,
        *_STREAM_ZSTD_ERRORS,
    ) as exc:  # fmt: skip
        if isinstance(exc, OSError) and (exc.filename == str(tarball) or exc.errno in _WRITE_ERRORS):
            raise PackageError(f"{tarball}: cannot write ({exc.strerror})") from None
        raise PackageError(f"{chosen.fn}: not a readable conda package ({exc})") from None
    meta = _conda_meta(chosen, taken, packer, requested)
    post_link = f"bin/.{chosen.name}-post-link.sh" in packer.kinds
    return Packed(
        index,
        chosen,
        tarball,
        packer.edits,
        meta,
        post_link,
        len(packer.entries),
        packer.size,
        packer.literals,
    )


def _read_info(path: Path) -> dict[str, bytes]:
    try:
        return read_info_files(path, INFO_FILES)
    except ArchiveError as exc:
        raise PackageError(str(exc)) from None


def _json(info: dict[str, bytes], name: str) -> dict:
    try:
        value = json.loads(info[name])
    except ValueError as exc:
        raise PackageError(f"{name}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise PackageError(f"{name}: not a JSON object")
    return value


def _check_index(chosen: Chosen, info: dict[str, bytes]) -> None:
    if "info/index.json" not in info:
        raise PackageError(f"{chosen.fn}: no info/index.json")
    index = _json(info, "info/index.json")
    for key, want in (("name", chosen.name), ("version", chosen.version), ("build", chosen.build)):
        if str(index.get(key)) != want:
            raise PackageError(
                f"{chosen.fn}: its info/index.json says {key} {index.get(key)!r}, its record {want!r}"
            )
    for word in (chosen.name, chosen.version, chosen.build):
        if not _WORD.fullmatch(word):
            raise PackageError(
                f"{chosen.fn}: {word!r} cannot be an installed package's name, version or build"
            )


def _relocator(python: PythonInfo | None):
    """Where a payload path goes in the prefix (noarch: python packages move, others do not)."""
    if python is None:
        return lambda path: path

    def relocate(path: str) -> str:
        if path.startswith("site-packages/"):
            return f"{python.site_packages}/{path[len('site-packages/') :]}"
        if path.startswith("python-scripts/"):
            return f"bin/{path[len('python-scripts/') :]}"
        return path

    return relocate


def _paths_of(chosen: Chosen, info: dict[str, bytes]) -> tuple[dict[str, dict], dict[str, _Placeholder]]:
    """The package's paths.json entries by path, and the files holding a placeholder."""
    entries: dict[str, dict] = {}
    placeholders: dict[str, _Placeholder] = {}
    if "info/paths.json" in info:
        for entry in _json(info, "info/paths.json").get("paths") or []:
            if not isinstance(entry, dict) or not isinstance(entry.get("_path"), str):
                raise PackageError(f"{chosen.fn}: info/paths.json: an entry without _path")
            entries[entry["_path"]] = entry
            placeholder = entry.get("prefix_placeholder")
            if isinstance(placeholder, str) and placeholder:
                placeholders[entry["_path"]] = _Placeholder(placeholder, entry.get("file_mode") == "binary")
        return entries, placeholders
    for line in info.get("info/has_prefix", b"").decode("utf-8", "replace").splitlines():
        if not line.strip():
            continue
        try:
            parts = [p.strip("\"'") for p in shlex.split(line, posix=False)]
        except ValueError as exc:
            raise PackageError(f"{chosen.fn}: info/has_prefix: {line!r}: {exc}") from None
        if len(parts) == 1:
            placeholders[parts[0]] = _Placeholder(LEGACY_PLACEHOLDER, False)
        elif len(parts) == 3 and parts[1] in ("text", "binary"):
            placeholders[parts[2]] = _Placeholder(parts[0], parts[1] == "binary")
        else:
            raise PackageError(f"{chosen.fn}: info/has_prefix: cannot read {line!r}")
    return entries, placeholders


def _safe_name(fn: str, name: str) -> str:
    """A member name the prefix can take: relative, no `..`, nothing the manifest cannot carry."""
    path = name[2:] if name.startswith("./") else name
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or _BAD_NAME.search(path):
        raise PackageError(f"{fn}: refused member {name!r}: not a plain relative path")
    return path


def _safe_link(fn: str, path: str, target: str) -> None:
    if not target or target.startswith("/") or _BAD_NAME.search(target):
        raise PackageError(f"{fn}: refused link {path} -> {target!r}: absolute or odd target")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if resolved == ".." or resolved.startswith("../"):
        raise PackageError(f"{fn}: refused link {path} -> {target}: it points out of the prefix")


class _Packer:
    """Copies a payload into the gzip tarball, planning edits and recording what it wrote."""

    def __init__(self, chosen, platform, relocate, placeholders, paths, cancel):
        self.chosen: Chosen = chosen
        self.platform: str = platform
        self.relocate = relocate
        self.placeholders: dict[str, _Placeholder] = placeholders
        self.paths: dict[str, dict] = paths
        self.cancel: threading.Event | None = cancel
        self.edits: list[Edit] = []
        self.entries: dict[str, dict] = {}  # installed path -> paths_data entry
        self.kinds: dict[str, str] = {}  # installed path -> file | link | dir | hardlink
        self.held: dict[str, bytes] = {}  # contents of files with a placeholder (for hard links)
        self.literals: dict[str, bytes] = {}
        self.size = 0

    def copy_payload(self, archive: Path, out: tarfile.TarFile) -> None:
        fn = self.chosen.fn
        with archive.open("rb") as fh:
            for tar, member in package_streaming.stream_conda_component(str(archive), fh, "pkg"):
                if self.cancel is not None and self.cancel.is_set():
                    raise Cancelled
                if member.name.startswith("info/") or member.name == "info":
                    continue  # a .tar.bz2 holds info/ beside the payload
                original = _safe_name(fn, member.name)
                path = self.relocate(original)
                if path in self.kinds and not member.isdir():
                    raise PackageError(f"{fn}: {path} is in the package twice")
                info = tarfile.TarInfo(path)
                info.mtime, info.mode = EPOCH, member.mode & 0o777
                if member.isdir():
                    info.type = tarfile.DIRTYPE
                    out.addfile(info)
                    self.kinds.setdefault(path, "dir")
                elif member.issym():
                    _safe_link(fn, original, member.linkname)
                    info.type, info.linkname = tarfile.SYMTYPE, member.linkname
                    out.addfile(info)
                    self._record(path, original, "link", None)
                elif member.islnk():
                    self._hardlink(out, info, original, _safe_name(fn, member.linkname))
                elif member.isreg():
                    self._file(out, info, original, tar.extractfile(member), member.size)
                else:
                    raise PackageError(f"{fn}: refused member {member.name!r}: not a file, link or folder")

    def _file(self, out: tarfile.TarFile, info: tarfile.TarInfo, original: str, source, size: int) -> None:
        info.size = size
        placeholder = self.placeholders.get(original)
        if placeholder is None:
            hashing = _Hashing(source)
            out.addfile(info, hashing)
            self._record(info.name, original, "file", (size, hashing.sha256.hexdigest()))
            return
        data = source.read()
        out.addfile(info, io.BytesIO(data))
        self.held[original] = data
        self._plan(info.name, data, placeholder, info.mode)
        self._record(info.name, original, "file", (size, hashlib.sha256(data).hexdigest()))

    def _hardlink(self, out: tarfile.TarFile, info: tarfile.TarInfo, original: str, target: str) -> None:
        """A hard link becomes a copy when it needs an edit (conda links each file alone)."""
        placeholder = self.placeholders.get(original)
        if placeholder is None:
            if self.kinds.get(self.relocate(target)) != "file":
                raise PackageError(
                    f"{self.chosen.fn}: hard link {original} to {target}, not a file before it"
                )
            info.type, info.linkname = tarfile.LNKTYPE, self.relocate(target)
            out.addfile(info)
            self._record(info.name, original, "file", self.entries[self.relocate(target)].get("_size_sha"))
            return
        if target not in self.held:
            raise PackageError(f"{self.chosen.fn}: hard link {original} holds a placeholder: not supported")
        self._file(out, info, original, io.BytesIO(self.held[target]), len(self.held[target]))

    def _plan(self, path: str, data: bytes, placeholder: _Placeholder, mode: int) -> None:
        edit = plan_edit(path, data, placeholder.placeholder, placeholder.binary, self.platform, mode)
        if edit is not None:
            self.edits.append(edit)

    def _record(self, path: str, original: str, kind: str, size_sha: tuple[int, str] | None) -> None:
        self.kinds[path] = kind
        source = self.paths.get(original, {})
        entry: dict = {"_path": path, "path_type": "softlink" if kind == "link" else "hardlink"}
        if size_sha is not None:
            entry["size_in_bytes"], entry["sha256"] = size_sha
            entry["_size_sha"] = size_sha
            self.size += size_sha[0]
        elif isinstance(source.get("sha256"), str):
            entry["sha256"] = source["sha256"]
        placeholder = self.placeholders.get(original)
        if placeholder is not None:
            entry["prefix_placeholder"] = placeholder.placeholder
            entry["file_mode"] = "binary" if placeholder.binary else "text"
        if source.get("no_link") is True:
            entry["no_link"] = True
        self.entries[path] = entry

    def add_entry_points(self, out: tarfile.TarFile, entry_points: list, python: PythonInfo) -> None:
        """conda's entry point scripts of a noarch: python package, in bin/."""
        for text in entry_points:
            match = _ENTRY_POINT.fullmatch(text) if isinstance(text, str) else None
            if match is None:
                raise PackageError(f"{self.chosen.fn}: info/link.json: cannot read entry point {text!r}")
            name, module, func = match.groups()
            body = (
                "# -*- coding: utf-8 -*-\nimport re\nimport sys\n\n"
                f"from {module} import {func.split('.')[0]}\n\n"
                "if __name__ == '__main__':\n"
                "    sys.argv[0] = re.sub(r'(-script\\.pyw?|\\.exe)?$', '', sys.argv[0])\n"
                f"    sys.exit({func}())\n"
            ).encode()
            path = f"bin/{name}"
            content, edit = entry_point_edit(path, f"python{python.version}", body, LEGACY_PLACEHOLDER)
            info = tarfile.TarInfo(path)
            info.mtime, info.mode, info.size = EPOCH, 0o755, len(content)
            out.addfile(info, io.BytesIO(content))
            self.edits.append(edit)
            self.kinds[path] = "file"
            self.entries[path] = {"_path": path, "path_type": "unix_python_entry_point"}


class _Hashing(io.RawIOBase):
    """A reader that hashes what passes through it (tarfile reads a member's bytes through it)."""

    def __init__(self, source):
        self.source = source
        self.sha256 = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.source.read(n)
        self.sha256.update(data)
        return data


def _conda_meta(chosen: Chosen, taken: Taken, packer: _Packer, requested: str | None) -> bytes:
    """`conda-meta/<stem>.json`: the channel's record, with what conda and rattler read of an
    installed package. No path of the build machine or of the target is in it."""
    meta = chosen.channel.raw_record(chosen.subdir, chosen.fn)
    for key in ("link", "extracted_package_dir", "package_tarball_full_path", "files", "paths_data"):
        meta.pop(key, None)
    paths = []
    for path in sorted(packer.entries):
        entry = {k: v for k, v in packer.entries[path].items() if k != "_size_sha"}
        paths.append(entry)
    meta.update(
        fn=chosen.fn,
        url=mask_token(chosen.url),
        channel=chosen.channel.shown,
        subdir=meta.get("subdir") or chosen.subdir,
        md5=taken.md5,
        sha256=taken.sha256,
        size=taken.size,
        depends=meta.get("depends") or [],
        constrains=meta.get("constrains") or [],
        files=sorted(packer.entries),
        paths_data={"paths": paths, "paths_version": 1},
    )
    if requested is not None:
        meta["requested_spec"] = requested
        meta["requested_specs"] = [requested]
    return (json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
