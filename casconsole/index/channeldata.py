"""channeldata.json: per package name, the newest version's metadata across all subdirs.

Built from the index cache (records and the channeldata facts read with them), so it is always
the whole channel as it is now: a name whose last file was deleted leaves channeldata.json too.
The fields and their rules follow conda-index: newer versions win where they have a value,
older ones fill the gaps; the post-install flags are true if any build has them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from casconsole.index.read import ABOUT_KEYS, POST_INSTALL_KEYS

CHANNELDATA_VERSION = 1
# value fields: taken from the newest version that has one
_VALUE_KEYS = (*ABOUT_KEYS, "source_url", "source_git_url", "version")


class _Head(msgspec.Struct):
    """The few record fields channeldata needs; decoding skips the rest."""

    name: str
    version: str
    timestamp: int = 0
    license: str | None = None


_decode_head = msgspec.json.Decoder(_Head).decode
_decode_extra = msgspec.json.Decoder(dict).decode


def _seconds(timestamp: int) -> int:
    # conda-build has written both seconds and milliseconds
    return timestamp // 1000 if timestamp > 253402300799 else timestamp


def build_channeldata(subdirs: Mapping[str, Iterable[tuple[str, bytes, bytes]]]) -> dict[str, Any]:
    """channeldata.json for `subdirs`: subdir -> (file name, record JSON, extra JSON) of each
    package in it."""
    from rattler import Version  # conda's version order; imported only when channeldata changes

    def order(version: str) -> tuple:
        try:
            return (1, Version(version))
        except Exception:  # an unparsable version sorts below every valid one
            return (0, version)

    # per (name, version): the newest build of each subdir, preferring .conda over .tar.bz2
    candidates: dict[str, list[tuple[tuple, int, str, _Head, bytes]]] = {}
    for subdir, packages in subdirs.items():
        newest: dict[tuple[str, str], tuple[int, bool, _Head, bytes]] = {}
        for fn, record, extra in packages:
            head = _decode_head(record)
            key = (head.name, head.version)
            rank = (_seconds(head.timestamp), fn.endswith(".conda"))
            if key not in newest or rank > newest[key][:2]:
                newest[key] = (*rank, head, extra)
        for (name, version), (seconds, _, head, extra) in newest.items():
            candidates.setdefault(name, []).append((order(version), seconds, subdir, head, extra))

    packages: dict[str, dict[str, Any]] = {}
    for name in sorted(candidates):
        entry: dict[str, Any] = dict.fromkeys(_VALUE_KEYS)
        entry.update(dict.fromkeys(POST_INSTALL_KEYS, False))
        entry.update(run_exports={}, subdirs=set(), timestamp=0)
        for _, seconds, subdir, head, extra_raw in sorted(candidates[name], key=lambda c: (c[0], c[1], c[2])):
            data = _decode_extra(extra_raw)
            data["version"] = head.version
            if head.license:
                data["license"] = head.license  # index.json wins over about.json
            for key in _VALUE_KEYS:
                if data.get(key):
                    entry[key] = data[key]
            for key in POST_INSTALL_KEYS:
                entry[key] = entry[key] or bool(data.get(key))
            if data.get("run_exports"):
                entry["run_exports"][head.version] = data["run_exports"]
            entry["subdirs"].add(subdir)
            entry["timestamp"] = max(entry["timestamp"], seconds)
        entry["subdirs"] = sorted(entry["subdirs"])
        packages[name] = dict(sorted(entry.items()))
    return {
        "channeldata_version": CHANNELDATA_VERSION,
        "packages": packages,
        "subdirs": sorted(subdirs),
    }
