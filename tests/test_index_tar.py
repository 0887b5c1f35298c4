"""The fast info/ walker agrees with tarfile, whatever tar dialect wrote the package."""

from __future__ import annotations

import io
import tarfile

import pytest

from casconsole.index.tar import InfoScan, Unusual

WANTED = frozenset({"info/index.json", "info/about.json", "info/recipe/meta.yaml"})
LONG = "info/test/" + "deep/" * 30 + "file.txt"  # over 100 characters: pax or GNU long name


def tarball(fmt: int, members: list[tuple[str, bytes | None, str]]) -> bytes:
    """members: (name, data, kind) with kind "file", "dir" or "link"."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000.25  # a float mtime makes pax write a header per member
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "link":
                info.type = tarfile.SYMTYPE
                info.linkname = "info/index.json"
                tar.addfile(info)
            else:
                assert data is not None
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def with_tarfile(data: bytes) -> dict[str, bytes]:
    """The reference: what tarfile finds, with the same early stop."""
    found: dict[str, bytes] = {}
    in_info = False
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        for member in tar:
            is_info = member.name.startswith("info/")
            if not is_info and in_info and "info/index.json" in found:
                break
            in_info = is_info
            if member.name in WANTED and member.isfile():
                found[member.name] = tar.extractfile(member).read()  # type: ignore[union-attr]
    return found


LAYOUTS = {
    "info first": [
        ("info", None, "dir"),
        ("info/about.json", b'{"summary": "x"}', "file"),
        (LONG, b"long", "file"),
        ("info/index.json", b'{"name": "a"}' * 50, "file"),
        ("info/recipe/meta.yaml", "n\u00e4me: ü\n".encode(), "file"),
        ("lib/payload.bin", b"\1" * 5000, "file"),
    ],
    "payload first": [
        ("bin/tool", b"#!/bin/sh\n", "file"),
        ("bin/alias", None, "link"),
        ("info/index.json", b"{}", "file"),
        ("lib/x", b"x", "file"),
    ],
    "long wanted name last": [
        (LONG, b"a", "file"),
        ("info/recipe/meta.yaml", b"b", "file"),
        ("info/index.json", b"c", "file"),
    ],
}


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_agrees_with_tarfile_fed_whole_or_in_pieces(fmt: int, layout: str) -> None:
    members = LAYOUTS[layout]
    if fmt == tarfile.USTAR_FORMAT:
        members = [m for m in members if m[0] != LONG]  # ustar cannot store it
    data = tarball(fmt, members)
    expected = with_tarfile(data)
    assert "info/index.json" in expected

    whole = InfoScan(WANTED, "info/index.json")
    assert whole.feed(data, final=True)
    assert whole.found == expected

    pieces = InfoScan(WANTED, "info/index.json")
    for end in range(0, len(data), 700):  # a growing buffer, as bzip2 blocks arrive
        if pieces.feed(data[:end], final=False):
            break
    else:
        assert pieces.feed(data, final=True)
    assert pieces.found == expected


def test_truncated_or_damaged_tarballs_are_declined() -> None:
    data = tarball(tarfile.PAX_FORMAT, LAYOUTS["long wanted name last"])
    with pytest.raises(Unusual):
        InfoScan(WANTED, "info/index.json").feed(data[:1200], final=True)
    damaged = bytearray(data)
    damaged[10] ^= 0xFF  # inside the first header: its checksum no longer matches
    with pytest.raises(Unusual):
        InfoScan(WANTED, "info/index.json").feed(bytes(damaged), final=True)
