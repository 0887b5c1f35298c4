"""Reading one package for the indexer: its checksums, its repodata record, its channeldata facts.

This module runs inside the index's worker processes, so it imports little (a spawned worker
pays for every import) and never raises for a bad archive: a bad package is a result, not an
exception, so one broken file cannot take the pool down.
"""

from __future__ import annotations

import bz2
import fnmatch
import hashlib
import io
import json
import os
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

import msgspec
import zstandard
from conda_package_streaming import package_streaming

from casconsole.index.tar import InfoScan, Unusual

INDEX_JSON = "info/index.json"
ABOUT_JSON = "info/about.json"
PATHS_JSON = "info/paths.json"
RUN_EXPORTS_JSON = "info/run_exports.json"
META_YAML = "info/recipe/meta.yaml"
_WANTED = frozenset({INDEX_JSON, ABOUT_JSON, PATHS_JSON, RUN_EXPORTS_JSON, META_YAML})

# index.json keys that are not part of a repodata record (the set conda-index drops)
_NOT_IN_RECORD = frozenset(
    {
        "arch",
        "platform",
        "has_prefix",
        "mtime",
        "ucs",
        "requires_features",
        "binstar",
        "target-triplet",
        "machine",
        "operatingsystem",
    }
)
# about.json keys that channeldata.json carries
ABOUT_KEYS = (
    "description",
    "dev_url",
    "doc_url",
    "doc_source_url",
    "home",
    "license",
    "summary",
    "tags",
    "identifiers",
    "keywords",
    "icon_url",
    "icon_hash",
    "recipe_origin",
)
# flags from info/paths.json that channeldata.json reports as "any build has it"
POST_INSTALL_KEYS = (
    "binary_prefix",
    "text_prefix",
    "activate.d",
    "deactivate.d",
    "pre_link",
    "post_link",
    "pre_unlink",
)

_CHUNK = 1 << 20
_IN_MEMORY = 16 << 20  # packages up to this size are read once, into memory
_BZ2_STEP = 1 << 20  # about one bzip2 block of output at a time
_encode = msgspec.json.Encoder(order="sorted").encode


@dataclass(frozen=True)
class ReadResult:
    """What reading one package file gave.

    `record` (the repodata record, JSON with sorted keys) and `extra` (channeldata facts, JSON)
    are set for a good package; `problem` says why a bad one is left out. `size` and `mtime_ns`
    are those of the bytes actually read, which is what the cache is keyed on.
    """

    size: int
    mtime_ns: int | str  # the stamp the cache keys on (index/bucket.py puts an ETag here)
    record: bytes | None = None
    extra: bytes | None = None
    problem: str | None = None


def read_package(path: str, subdir: str) -> ReadResult | None:
    """Hash and read one package file of the subdir folder `subdir`; None if it vanished."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below, after fstat and hashing
    except FileNotFoundError:
        return None
    except OSError as exc:
        return ReadResult(0, 0, problem=f"cannot be read ({exc.strerror or exc})")
    with fh:
        st = os.fstat(fh.fileno())
        md5 = hashlib.md5(usedforsecurity=False)
        sha256 = hashlib.sha256()
        raw: bytes | None = None
        size = 0  # of the bytes hashed, so that size and checksums always agree
        try:
            if st.st_size <= _IN_MEMORY:  # read once, then parsed from memory
                raw = fh.read()
                md5.update(raw)
                sha256.update(raw)
                size = len(raw)
            else:  # streamed: hashed here, its info/ read again from the file
                while chunk := fh.read(_CHUNK):
                    md5.update(chunk)
                    sha256.update(chunk)
                    size += len(chunk)
        except OSError as exc:
            return ReadResult(st.st_size, st.st_mtime_ns, problem=f"cannot be read ({exc})")
    mtime_ns = st.st_mtime_ns
    try:
        members = _read_info_members(path, raw)
    except Exception as exc:  # any failure of a hostile archive is a bad package, nothing more
        detail = str(exc) or type(exc).__name__
        return ReadResult(size, mtime_ns, problem=f"not a readable conda package ({detail})")
    raw_index = members.get(INDEX_JSON)
    if raw_index is None:
        return ReadResult(size, mtime_ns, problem="no info/index.json")
    index, problem = _parse_index(raw_index, subdir)
    if problem:
        return ReadResult(size, mtime_ns, problem=problem)
    record = {k: v for k, v in index.items() if k not in _NOT_IN_RECORD}
    record.update(md5=md5.hexdigest(), sha256=sha256.hexdigest(), size=size)
    return ReadResult(size, mtime_ns, record=_encode(record), extra=_encode(_extra(members)))


def read_batch(items: list[tuple[str, str]]) -> list[ReadResult | None]:
    """`read_package` over (path, subdir) pairs: one pool task for several small files."""
    return [read_package(path, subdir) for path, subdir in items]


def _read_info_members(path: str, raw: bytes | None) -> dict[str, bytes]:
    """The wanted `info/` members of the package at `path` (whose bytes are `raw` if small)."""
    if raw is not None:
        try:
            return _info_in_memory(path, raw)
        except Exception:  # declined or broken: tarfile reads it again and gives the reason
            pass
    fileobj = io.BytesIO(raw) if raw is not None else open(path, "rb")  # noqa: SIM115
    with fileobj:
        return _collect(package_streaming.stream_conda_info(path, fileobj))


def _info_in_memory(path: str, raw: bytes) -> dict[str, bytes]:
    """The fast path: decompress in one go (a `.tar.bz2` block by block, only up to the end of
    `info/`) and walk the tar headers without `tarfile`; several times cheaper per package."""
    scan = InfoScan(_WANTED, stop_after=INDEX_JSON)
    if path.endswith(".conda"):
        stem = os.path.basename(path)[: -len(".conda")]
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            names = [n for n in zf.namelist() if n.startswith("info-") and n.endswith(".tar.zst")]
            # a renamed file keeps its old component names; a single one is still unambiguous
            chosen = [n for n in names if n == f"info-{stem}.tar.zst"] or names
            if len(chosen) != 1:
                raise Unusual(f"{len(names)} info components")
            compressed = zf.read(chosen[0])
        if not 0 <= zstandard.frame_content_size(compressed) <= _IN_MEMORY:
            raise Unusual("info size unknown or large")
        scan.feed(zstandard.ZstdDecompressor().decompress(compressed), final=True)
    else:
        decompressor = bz2.BZ2Decompressor()
        buf = bytearray(decompressor.decompress(raw, max_length=_BZ2_STEP))
        while not scan.feed(buf, final=decompressor.eof):
            if decompressor.needs_input or len(buf) > _IN_MEMORY:
                raise Unusual("truncated or large")
            buf += decompressor.decompress(b"", max_length=_BZ2_STEP)
    if INDEX_JSON not in scan.found:
        raise Unusual("no index.json seen")
    return scan.found


def _collect(stream: Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]) -> dict[str, bytes]:
    """The wanted members of a tar stream, stopping as early as the archive allows.

    A `.tar.bz2` is one tarball with the payload, but conda packages store `info/` first, so
    once index.json is in hand and the `info/` block is over, the (possibly large) payload is
    not decompressed.
    """
    found: dict[str, bytes] = {}
    in_info = False
    try:
        for tar, member in stream:
            is_info = member.name.startswith("info/")
            if not is_info and in_info and INDEX_JSON in found:
                break
            in_info = is_info
            if member.name in _WANTED and member.isfile():
                extracted = tar.extractfile(member)
                if extracted is not None:
                    found[member.name] = extracted.read()
                if len(found) == len(_WANTED):
                    break
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    return found


def _parse_index(raw: bytes, subdir: str) -> tuple[dict, str | None]:
    try:
        index = json.loads(raw)
    except ValueError as exc:
        return {}, f"info/index.json is not JSON ({exc})"
    if not isinstance(index, dict):
        return {}, "info/index.json is not a JSON object"
    for key in ("name", "version", "build"):
        if not isinstance(index.get(key), str) or not index[key]:
            return {}, f"info/index.json has no {key}"
    number = index.get("build_number")
    if not isinstance(number, int) or isinstance(number, bool):
        return {}, "info/index.json has no integer build_number"
    declared = index.setdefault("subdir", subdir)  # very old packages do not name theirs
    if declared != subdir:
        return {}, f"built for subdir {declared!r}, but it is in {subdir}/"
    return index, None


def _extra(members: dict[str, bytes]) -> dict:
    """The facts channeldata.json needs beyond the repodata record."""
    extra: dict = {}
    about = _json_object(members.get(ABOUT_JSON))
    for key in ABOUT_KEYS:
        if about.get(key):
            extra[key] = about[key]
    run_exports = _json_object(members.get(RUN_EXPORTS_JSON))
    if run_exports:
        extra["run_exports"] = run_exports
    source = _recipe_source(members.get(META_YAML))
    for key in ("url", "git_url"):
        if source.get(key):
            extra[f"source_{key}"] = source[key]
    extra.update(_post_install(members.get(PATHS_JSON)))
    return extra


def _json_object(raw: bytes | None) -> dict:
    if not raw:
        return {}
    try:
        obj = json.loads(raw)
    except ValueError:
        return {}  # optional metadata: a broken file only costs its channeldata fields
    return obj if isinstance(obj, dict) else {}


def _recipe_source(raw: bytes | None) -> dict:
    if not raw:
        return {}
    import yaml  # only packages that carry their recipe pay for the import

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        meta = yaml.load(raw, Loader=loader)  # a safe loader: recipes are data
    except yaml.YAMLError:
        return {}
    source = meta.get("source") if isinstance(meta, dict) else None
    return source if isinstance(source, dict) else {}


def _post_install(raw: bytes | None) -> dict[str, bool]:
    flags = dict.fromkeys(POST_INSTALL_KEYS, False)
    paths = _json_object(raw).get("paths")
    if not isinstance(paths, list):
        return flags
    for entry in paths:
        if not isinstance(entry, dict):
            continue
        path = str(entry.get("_path", ""))
        if entry.get("prefix_placeholder"):
            mode = entry.get("file_mode")
            if mode in ("binary", "text"):
                flags[f"{mode}_prefix"] = True
        for script_dir in ("activate.d", "deactivate.d"):
            if path.startswith(f"etc/conda/{script_dir}"):
                flags[script_dir] = True
        for script in ("pre-link", "post-link", "pre-unlink"):
            if fnmatch.fnmatch(path, f"*/.*-{script}.*"):
                flags[script.replace("-", "_")] = True
    return flags
