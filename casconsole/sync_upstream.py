"""Upstream repodata for a sync: fetched conditionally, screened, and written back verbatim.

- `fetch_upstream_cached` asks upstream for a subdir's repodata with the ETag / Last-Modified
  of the copy kept from the last sync (`<mirror_dir>/.cas/upstream/<channel>/<subdir>`), so an
  unchanged upstream costs a 304.
- `screen` refuses records whose file name or subdir could write outside the mirror or into
  the wrong folder, each with a warning.
- `RawRepoData` holds the upstream JSON with every record as the exact bytes upstream wrote
  (patched metadata included) and writes the mirror's repodata restricted to given files.
"""

from __future__ import annotations

import re
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import msgspec
import zstandard

from .fsutil import atomic_write_bytes
from .repodata import (
    REPODATA_NAMES,
    RepoData,
    RepoDataError,
    RepoDataNotFound,
    channel_location,
    decode_repodata,
    decompress,
)
from .sync_fetch import Cancelled
from .sync_http import Connections, NetworkError, Response, TooManyRedirects

PACKAGE_SUFFIXES = (".conda", ".tar.bz2")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# ---------------------------------------------------------------- screening upstream names


def refuse_name(fn: object) -> str | None:
    """Why a file name from upstream cannot be written into a subdir folder, or None."""
    if not isinstance(fn, str) or not fn:
        return "empty file name"
    if "/" in fn or "\\" in fn:
        return "file name holds a path separator"
    if ".." in fn:
        return "file name holds '..'"
    if fn.startswith((".", "-")) or (len(fn) > 1 and fn[1] == ":"):
        return "file name starts with '.', '-' or a drive"
    if _CONTROL.search(fn) or ":" in fn:
        return "file name holds control characters or ':'"
    if not fn.endswith(PACKAGE_SUFFIXES) or fn in PACKAGE_SUFFIXES:
        return "not a .conda or .tar.bz2 file name"
    if len(fn.encode("utf-8", "replace")) > 250:
        return "file name too long"
    return None


def screen(repodata: RepoData, subdir: str) -> list[str]:
    """Drop records that must not be mirrored from `repodata.records`; returns the warnings."""
    kept, warnings = [], []
    for rec in repodata.records:
        reason = refuse_name(rec.fn)
        if reason is None and rec.subdir not in (None, "", subdir):
            reason = f"its subdir is {rec.subdir!r}, not {subdir!r}"
        if reason is None and (rec.size is None or rec.size < 0):
            reason = "no size"
        if reason is None and not (rec.sha256 or rec.md5):
            reason = "no sha256 or md5 to verify it by"
        if reason is not None:
            warnings.append(f"refused {rec.fn!r}: {reason}")
            continue
        kept.append(rec)
    info_subdir = repodata.info.get("subdir")
    if isinstance(info_subdir, str) and info_subdir not in ("", subdir):
        warnings.append(f"upstream repodata says its subdir is {info_subdir!r}, not {subdir!r}")
    repodata.records = kept
    return warnings


# ---------------------------------------------------------------- passing records through


_top = msgspec.json.Decoder(dict[str, msgspec.Raw])
_table = msgspec.json.Decoder(dict[str, msgspec.Raw])
_encode = msgspec.json.Encoder().encode


class RawRepoData:
    """Upstream repodata JSON, records kept as the bytes upstream wrote."""

    def __init__(self, data: bytes, source: str = ""):
        try:
            self.top = _top.decode(data)
            self.tables = {
                key: _table.decode(self.top[key]) if key in self.top and self.top[key] != b"null" else {}
                for key in ("packages", "packages.conda")
            }
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise RepoDataError(f"{source}: not a repodata object ({exc})") from exc

    def restricted(self, keep: set[str]) -> dict[str, msgspec.Raw | object]:
        """The repodata object with only the records named in `keep`, in upstream order.

        `info.base_url` is dropped: the mirror serves the files beside its repodata.
        """
        out: dict[str, msgspec.Raw | object] = {}
        for key, raw in self.top.items():
            if key in self.tables:
                out[key] = {fn: rec for fn, rec in self.tables[key].items() if fn in keep}
            elif key == "info":
                out[key] = _without_base_url(raw)
            else:
                out[key] = raw
        for key in ("packages", "packages.conda"):
            out.setdefault(key, {})
        return out

    def encode(self, keep: set[str]) -> bytes:
        return _encode(self.restricted(keep))


def _without_base_url(raw: msgspec.Raw) -> msgspec.Raw | object:
    if b"base_url" not in bytes(raw):
        return raw
    info = msgspec.json.decode(raw)
    if isinstance(info, dict):
        info.pop("base_url", None)
    return info


# ---------------------------------------------------------------- conditional fetching


@dataclass
class Fetched:
    """One subdir's upstream repodata: where it came from and its JSON bytes."""

    subdir: str
    url: str
    data: bytes  # decompressed JSON
    not_modified: bool = False  # the copy kept from the last sync was still current


class _CacheMeta(msgspec.Struct):
    url: str
    name: str
    etag: str | None = None
    last_modified: str | None = None


def _cache_path(cache_dir: Path, subdir: str) -> Path:
    return cache_dir / f"{subdir}.cache"


def _read_cache(path: Path) -> tuple[_CacheMeta, bytes] | None:
    """The kept copy: a JSON header line, then the body as upstream served it."""
    try:
        blob = path.read_bytes()
        header, _, body = blob.partition(b"\n")
        return msgspec.json.decode(header, type=_CacheMeta), body
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def _write_cache(path: Path, meta: _CacheMeta, body: bytes) -> None:
    # not synced to disk: after a crash a lost copy only makes the next request unconditional
    atomic_write_bytes(path, msgspec.json.encode(meta) + b"\n" + body, durable=False)


def _decompress(where: str, name: str, raw: bytes) -> bytes:
    try:
        return decompress(name, raw)
    except (zstandard.ZstdError, OSError, ValueError, EOFError) as exc:
        raise RepoDataError(f"{where}: cannot decompress ({exc})") from exc


def fetch_upstream_cached(
    remote_url: str,
    subdir: str,
    client: Connections | None,
    cache_dir: Path,
    cancel: threading.Event | None = None,
) -> Fetched:
    """A subdir's upstream repodata, asking with the kept copy's validators first.

    Names are tried in REPODATA_NAMES order (`.zst` first); a missing `noarch` is an empty one.
    RepoDataError names the URL and the reason.
    """
    base, local = channel_location(remote_url)
    if local is not None:
        return _fetch_local(base, local, subdir)
    assert client is not None
    path = _cache_path(cache_dir, subdir)
    cached = _read_cache(path)
    if cached is not None and cached[0].url.startswith(f"{base}/{subdir}/"):
        meta, body = cached
        headers = {}
        if meta.etag:
            headers["If-None-Match"] = meta.etag
        if meta.last_modified:
            headers["If-Modified-Since"] = meta.last_modified
        if headers:
            response = _get(client, meta.url, headers, cancel)
            if response.status_code == 304:
                return Fetched(subdir, meta.url, _decompress(meta.url, meta.name, body), not_modified=True)
            if response.status_code < 300:
                return _keep(path, subdir, meta.url, meta.name, response)
            if response.status_code not in (403, 404):
                raise RepoDataError(f"{meta.url}: HTTP {response.status_code}")
    for name in REPODATA_NAMES:
        url = f"{base}/{subdir}/{name}"
        response = _get(client, url, {}, cancel)
        if response.status_code in (403, 404):
            continue
        if response.status_code >= 300:
            raise RepoDataError(f"{url}: HTTP {response.status_code}")
        return _keep(path, subdir, url, name, response)
    if subdir == "noarch":
        return Fetched(subdir, f"{base}/noarch/repodata.json", b'{"info":{"subdir":"noarch"},"packages":{}}')
    raise RepoDataNotFound(f"{base}/{subdir}/: no repodata.json there")


@dataclass
class _Reply:
    status_code: int
    headers: dict[str, str | None]
    content: bytes | bytearray = b""


def _get(client: Connections, url: str, headers: dict[str, str], cancel: threading.Event | None) -> _Reply:
    """GET `url`, the body read in full (checking `cancel` as it comes: repodata can be large)."""
    try:
        response = client.get(url, {"Accept-Encoding": "gzip", **headers})
        try:
            reply = _Reply(response.status, {k: response.header(k) for k in ("ETag", "Last-Modified")})
            if response.status < 300:
                body = _read_all(response, cancel)
                gzipped = (response.header("Content-Encoding") or "").lower() == "gzip"
                reply.content = zlib.decompress(body, wbits=31) if gzipped else body
            return reply
        finally:
            response.close()
    except TimeoutError:
        raise RepoDataError(f"{url}: timed out (no data for {client.timeout:g} s)") from None
    except (NetworkError, TooManyRedirects) as exc:
        raise RepoDataError(f"{url}: {exc}") from None
    except zlib.error as exc:
        raise RepoDataError(f"{url}: cannot decompress the gzip body ({exc})") from None


def _read_all(response: Response, cancel: threading.Event | None) -> bytearray:
    """The body, received straight into one buffer of its Content-Length when it has one
    (repodata can be hundreds of MB: no pieces held beside their join)."""
    length = response.header("Content-Length") or ""
    known = length.isdigit()
    body = bytearray(int(length) if known else 1 << 20)
    received = 0
    while True:
        if cancel is not None and cancel.is_set():
            raise Cancelled
        if received == len(body):
            if known:
                break  # http.client reads no further than Content-Length
            body.extend(bytes(len(body)))  # no length given: double the room
        with memoryview(body) as view:
            n = response.readinto(view[received : received + (1 << 20)])
        if not n:
            break
        received += n
    del body[received:]
    return body


def _keep(path: Path, subdir: str, url: str, name: str, response: _Reply) -> Fetched:
    body = response.content
    data = _decompress(url, name, body)
    meta = _CacheMeta(url, name, response.headers.get("ETag"), response.headers.get("Last-Modified"))
    if meta.etag or meta.last_modified:
        _write_cache(path, meta, body)
    return Fetched(subdir, url, data)


def _fetch_local(base: str, local: Path, subdir: str) -> Fetched:
    for name in REPODATA_NAMES:
        file = local / subdir / name
        try:
            raw = file.read_bytes()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise RepoDataError(f"{file}: cannot read ({exc.strerror})") from exc
        return Fetched(subdir, f"{base}/{subdir}/{name}", _decompress(str(file), name, raw))
    if subdir == "noarch":
        return Fetched(subdir, f"{base}/noarch/repodata.json", b'{"info":{"subdir":"noarch"},"packages":{}}')
    raise RepoDataNotFound(f"{local / subdir}: no repodata.json here")


def decode_fetched(fetched: Fetched) -> tuple[RepoData, RawRepoData]:
    """The typed records (for the plan) and the raw ones (for writing back) of one subdir."""
    return (
        decode_repodata(fetched.data, fetched.subdir, fetched.url),
        RawRepoData(fetched.data, fetched.url),
    )
