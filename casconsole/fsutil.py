"""Atomic file writes: a reader sees the old file or the new one, never a partial one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import msgspec
import zstandard

_json = msgspec.json.Encoder()


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Write `data` to a temporary file beside `path`, fsync it (unless not `durable`: a
    cache, say, that may be lost in a crash but never half-written), then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# Measured on real repodata (2.3 MB and 1.3 MB of JSON): level 9 is within 2% of level 12's
# size in a third to a half of its time; above 12 the time grows five-fold for 5% less.
ZSTD_LEVEL = 9


def write_repodata(subdir_dir: Path, repodata: object, name: str = "repodata.json") -> bytes:
    """Write `repodata.json` and its `.zst` atomically, the `.zst` first.

    `repodata` is anything msgspec encodes (dicts, structs, `msgspec.Raw` values). The `.zst`
    goes first so that a client preferring it never gets a copy older than the plain file.
    Returns the JSON bytes written.
    """
    data = _json.encode(repodata)
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1)
    atomic_write_bytes(subdir_dir / (name + ".zst"), compressor.compress(data))
    atomic_write_bytes(subdir_dir / name, data)
    return data
