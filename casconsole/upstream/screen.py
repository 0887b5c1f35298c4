"""Upstream records are hostile input: refuse those that could write outside the mirror or
into the wrong folder, that cannot be verified, or whose names are not plain text, each with
a warning; and refuse an `info.base_url` that would send downloads anywhere but upstream."""

from __future__ import annotations

import re
import unicodedata
import urllib.parse
from collections.abc import Sequence

from casconsole.conda.repodata import RepoData
from casconsole.layout import PACKAGE_SUFFIXES

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL, C1


def refuse_name(fn: object) -> str | None:
    """Why a file name from upstream cannot be written into a subdir folder, or None.

    Conda file names are ASCII. One that is not is refused rather than guessed at: a
    non-ASCII letter can pass for an ASCII one (`pаndas`, with a Cyrillic a), bidi controls
    reorder what an administrator reads, and neither has a place in a URL as it stands.
    """
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
    if not fn.isascii():
        odd = next(c for c in fn if not c.isascii())
        kind = "a bidi control" if unicodedata.bidirectional(odd) in _BIDI_CONTROLS else "a non-ASCII"
        return f"file name holds {kind} character (U+{ord(odd):04X})"
    if not fn.endswith(PACKAGE_SUFFIXES) or fn in PACKAGE_SUFFIXES:
        return "not a .conda or .tar.bz2 file name"
    if len(fn.encode("utf-8", "replace")) > 250:
        return "file name too long"
    return None


_BIDI_CONTROLS = frozenset({"LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI"})


def screen(repodata: RepoData, subdir: str, base_url_origins: Sequence[str] = ()) -> list[str]:
    """Drop records that must not be mirrored from `repodata.records`, and a `base_url` that
    must not be followed from `repodata.info`; returns the warnings."""
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
    why = refuse_base_url(repodata, base_url_origins)
    if why:
        base = repodata.info.pop("base_url", None)
        warnings.append(f"info.base_url {base!r} refused ({why}); packages are fetched beside the repodata")
    return warnings


def origin(url: str) -> str:
    """`scheme://host[:port]` of a URL, the port left out where it is the scheme's default."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None or (scheme, port) in (("http", 80), ("https", 443)):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def refuse_base_url(repodata: RepoData, allowed: Sequence[str] = ()) -> str | None:
    """Why the repodata's `info.base_url` must not be followed, or None (none, or a good one).

    It is followed only to http(s), and only to the origin the repodata came from or one the
    `base_url_origins` setting names: otherwise a hostile upstream could have the sync copy a
    local file (`file:///etc/...`) or another site's file into a public channel.
    """
    if "base_url" not in repodata.info:
        return None
    base = repodata.base_url
    if base is None:
        return "not a URL"
    target = repodata.package_url("x.conda")
    scheme = urllib.parse.urlsplit(target).scheme.lower()
    if scheme not in ("http", "https"):
        return f"downloads go over http(s) only, not {scheme or 'a local path'}"
    if origin(target) == origin(repodata.source) or origin(target) in {origin(a) for a in allowed}:
        return None
    return f"{origin(target)} is not upstream's origin; the base_url_origins setting can allow it"
