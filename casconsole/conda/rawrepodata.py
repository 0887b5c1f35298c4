"""Upstream repodata kept as upstream wrote it: every record as its exact bytes (patched
metadata included), written back restricted to the files the mirror holds."""

from __future__ import annotations

import msgspec

from casconsole.errors import RepoDataError

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
