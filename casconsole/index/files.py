"""Where the indexer reads a channel and writes its index: a folder (FolderFiles), or a prefix of
a bucket (index/bucket.py, BucketFiles). `index_channel` asks both the same things:

- `begin()` before each attempt: a bucket reads the ETags its writes will be conditional on;
- `lock()` one run at a time (a folder's flock; a bucket needs none: its writes are conditional);
- `load_cache()` / `save_cache()`, `subdir_names()`, `has_index(subdir)`;
- `scan(subdir)` the package files with their (size, stamp) and the stray files;
- `outputs(subdir)`, `channeldata_stamp()` what the index files are now;
- `existing_removed(subdir)`, `write_repodata(subdir, repodata)`, `write_channeldata(data)`;
- `read(todo, workers, on_result)` reading the packages to index.

A stamp is a file's mtime in nanoseconds, or an object's ETag: what the cache is keyed on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import msgspec

from casconsole.conda.repodata import write_repodata
from casconsole.fsutil import atomic_write_bytes
from casconsole.index.cache import (
    CACHE_DIR,
    OUTPUTS,
    Cache,
    Scan,
    channel_lock,
    channeldata_fingerprint,
    check_channel,
    fingerprint,
    load_cache,
    save_cache,
    scan_subdir,
    subdir_names,
)
from casconsole.index.events import ChannelError
from casconsole.index.pool import Todo, read_all
from casconsole.index.read import ReadResult

CHANNELDATA = "channeldata.json"


class _Removed(msgspec.Struct):
    removed: list[str] = []


def removed_of(data: bytes) -> list[str]:
    """The `removed` list of a repodata.json, which re-indexing keeps."""
    try:
        return msgspec.json.decode(data, type=_Removed).removed
    except msgspec.DecodeError:
        return []


class FolderFiles:
    in_bucket = False

    def __init__(self, channel: Path):
        self.channel = check_channel(channel)

    @property
    def where(self) -> str:
        return str(self.channel)

    def prepare(self) -> None:
        try:
            (self.channel / "noarch").mkdir(exist_ok=True)
            (self.channel / CACHE_DIR).mkdir(exist_ok=True)
        except OSError as exc:
            raise ChannelError(f"{self.channel}: cannot write into it ({exc.strerror or exc})") from exc

    def begin(self) -> None:
        pass

    def lock(self) -> contextlib.AbstractContextManager:
        return channel_lock(self.channel)

    def load_cache(self) -> Cache:
        return load_cache(self.channel)

    def save_cache(self, cache: Cache) -> None:
        save_cache(self.channel, cache)

    def subdir_names(self) -> list[str]:
        return subdir_names(self.channel)

    def has_index(self, subdir: str) -> bool:
        return (self.channel / subdir / "repodata.json").exists()

    def scan(self, subdir: str) -> Scan:
        return scan_subdir(self.channel, subdir)

    def outputs(self, subdir: str) -> dict[str, tuple[int, int | str]]:
        return fingerprint(self.channel / subdir, OUTPUTS)

    def channeldata_stamp(self) -> tuple[int, int | str] | None:
        return channeldata_fingerprint(self.channel)

    def existing_removed(self, subdir: str) -> list[str]:
        try:
            return removed_of((self.channel / subdir / "repodata.json").read_bytes())
        except OSError:
            return []

    def write_repodata(self, subdir: str, repodata: dict) -> None:
        write_repodata(self.channel / subdir, repodata)

    def write_channeldata(self, data: bytes) -> None:
        atomic_write_bytes(self.channel / CHANNELDATA, data)

    def read(
        self, todo: list[Todo], workers: int, on_result: Callable[[Todo, ReadResult | None], None]
    ) -> None:
        read_all(self.channel, todo, workers, on_result)
