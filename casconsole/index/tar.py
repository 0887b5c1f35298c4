"""A fast path for the few `info/` members the indexer wants from an in-memory tarball.

`tarfile` spends more time parsing a package's handful of headers than zstd spends
decompressing them; for 5,000 small packages that is a good part of a cold index. This walker
reads ustar headers (with pax and GNU long names) straight from a buffer that may still be
growing (a `.tar.bz2` is decompressed a block at a time). Whenever it meets anything it does not
fully understand it raises `Unusual`, and the caller falls back to `tarfile`, which then decides
(and explains) what is wrong with the archive. It never decides that a package is bad.
"""

from __future__ import annotations

_BLOCK = 512
_ZERO = bytes(_BLOCK)
_REGULAR = (b"0", b"\0", b"7")
_SKIPPED = (b"1", b"2", b"3", b"4", b"5", b"6", b"g", b"K")  # links, devices, folders, ...


class Unusual(Exception):
    """The fast path declines this archive; `tarfile` should read it."""


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _number(field: bytes) -> int:
    if field[:1] in (b"\x80", b"\xff"):
        raise Unusual("base-256 number")
    digits = field.split(b"\0", 1)[0].strip()
    try:
        return int(digits, 8) if digits else 0
    except ValueError:
        raise Unusual("bad number") from None


def _pax(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            raise Unusual("bad pax record")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise Unusual("bad pax record") from None
        if length <= space - pos:
            raise Unusual("bad pax record")
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


class InfoScan:
    """Collects the `wanted` members of a tarball fed as a growing buffer.

    Stops, like the streaming reader, once `stop_after` is found and the `info/` block is over.
    """

    def __init__(self, wanted: frozenset[str], stop_after: str) -> None:
        self.wanted = wanted
        self.stop_after = stop_after
        self.found: dict[str, bytes] = {}
        self.done = False
        self._pos = 0
        self._in_info = False
        self._long_name: str | None = None
        self._pax: dict[str, str] = {}

    def feed(self, buf: bytes | bytearray, final: bool) -> bool:
        """Walk the complete entries in `buf` (everything decompressed so far). True when no
        more data is needed; `final` says no more will come."""
        while not self.done:
            pos = self._pos
            if pos + _BLOCK > len(buf):
                if final and pos != len(buf):
                    raise Unusual("truncated")
                self.done = final
                return final
            header = bytes(buf[pos : pos + _BLOCK])
            if header == _ZERO:
                self.done = True
                break
            stored = _number(header[148:156])
            if stored != sum(header) - sum(header[148:156]) + 8 * 32:
                raise Unusual("header checksum")
            kind = header[156:157]
            size = _number(header[124:136])
            start = pos + _BLOCK
            if kind in (b"x", b"L"):
                if start + size > len(buf):
                    return self._wait(final)
                data = bytes(buf[start : start + size])
                if kind == b"x":
                    self._pax = _pax(data)
                else:
                    self._long_name = _text(data)
                self._pos = start + -(-size // _BLOCK) * _BLOCK
                continue
            name = _text(header[0:100])
            if header[257:262] == b"ustar":
                prefix = _text(header[345:500])
                if prefix:
                    name = f"{prefix}/{name}"
            name = self._pax.get("path", self._long_name or name)
            if "size" in self._pax:
                size = int(self._pax["size"])
            is_info = name.startswith("info/")
            if not is_info and self._in_info and self.stop_after in self.found:
                self.done = True
                break
            if kind in _REGULAR:
                if name in self.wanted:
                    if start + size > len(buf):
                        return self._wait(final)
                    self.found[name] = bytes(buf[start : start + size])
            elif kind not in _SKIPPED:
                raise Unusual(f"member type {kind!r}")
            self._in_info = is_info
            self._pax, self._long_name = {}, None
            self._pos = start + -(-size // _BLOCK) * _BLOCK
            if len(self.found) == len(self.wanted):
                self.done = True
        return True

    def _wait(self, final: bool) -> bool:
        if final:
            raise Unusual("truncated")
        return False
