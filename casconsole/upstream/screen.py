"""Upstream records are hostile input: refuse those that could write outside the mirror or
into the wrong folder, or that cannot be verified, each with a warning."""

from __future__ import annotations

import re

from casconsole.conda.repodata import RepoData
from casconsole.layout import PACKAGE_SUFFIXES

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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
