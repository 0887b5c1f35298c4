"""Indexing a channel kept in a bucket (`cas-index s3://bucket/prefix/internal-pkgs`).

The same run as for a folder (index/files.py says what it asks), with the bucket's objects:
a package's stamp is its ETag, the cache is the object `.cache/index.msgpack` under the
channel, and packages to read are fetched into a temporary folder a batch at a time.

Two writers of one channel's index (two machines uploading packages and indexing, say) never
lose a record: at the start of each attempt the ETags of `channeldata.json` and of each
subdir's `repodata.json(.zst)` are read before its packages are listed, and every write is
conditional on them (If-Match, or If-None-Match: * where there was none). When another writer
wrote in between, the write is refused (WriteConflict) and `index_channel` starts again from
the fresh state: it lists again, so what the other one added is in what it writes. No lock is
needed, and none is held: a dead writer leaves nothing to clean up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec

from casconsole.conda.repodata import encode_repodata
from casconsole.index.cache import CACHE_DIR, CACHE_FILE, CACHE_VERSION, CHANNEL_FILES, OUTPUTS, Cache, Scan
from casconsole.index.events import ChannelError, Problem
from casconsole.index.files import CHANNELDATA, removed_of
from casconsole.index.pool import Todo, batches, read_all
from casconsole.index.read import ReadResult
from casconsole.layout import KNOWN_SUBDIRS, BucketURL, split_package_name

BATCH_FILES = 64  # packages fetched into the temporary folder at a time
BATCH_BYTES = 256 << 20
FETCHERS = 8  # packages fetched from the bucket at once


class BucketFiles:
    in_bucket = True

    def __init__(self, storage, channel: BucketURL):
        self.storage = storage  # rooted at the channel
        self.channel = channel
        self._seen: dict[str, dict[str, tuple[int, int | str]]] = {}  # subdir -> outputs as read
        self._channeldata: tuple[int, int | str] | None = None
        self._folders: list[str] | None = None

    @classmethod
    def open(cls, channel: BucketURL, settings=None) -> BucketFiles:
        """`settings`: anything with the s3_* keys (the caller's: the index reads none)."""
        from casconsole.storage import open_storage

        if settings is None:
            raise ChannelError(
                f"{channel}: a channel in a bucket needs the settings (its endpoint, credentials)"
            )
        files = cls(open_storage(settings, channel), channel)
        files._check()
        return files

    @property
    def where(self) -> str:
        return str(self.channel)

    def _check(self) -> None:
        folders, objects = self.storage.list_dir("")
        self._folders = folders
        if any(f in KNOWN_SUBDIRS for f in folders):
            return
        if self.channel.name in KNOWN_SUBDIRS:
            parent = str(self.channel).rpartition("/")[0]
            raise ChannelError(f"{self.channel}: this is a subdir; give its channel ({parent}) instead")
        if not folders and not objects:
            raise ChannelError(f"{self.channel}: nothing there (upload packages into its subdir folders)")

    def prepare(self) -> None:
        pass  # a bucket has no folders to make: noarch is there once its repodata is

    def begin(self) -> None:
        """Read what the writes will be conditional on, before anything is listed."""
        self._seen = {}
        info = self.storage.head(CHANNELDATA)
        self._channeldata = (info.size, info.etag) if info is not None else None

    def lock(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def load_cache(self) -> Cache:
        from casconsole.storage import ObjectNotFound

        try:
            data, _ = self.storage.get(f"{CACHE_DIR}/{CACHE_FILE}")
            cache = msgspec.msgpack.decode(data, type=Cache)
        except (ObjectNotFound, msgspec.DecodeError):
            return Cache()
        return cache if cache.version == CACHE_VERSION else Cache()

    def save_cache(self, cache: Cache) -> None:
        # unconditional: a cache lost to another writer's only costs reading those files again
        self.storage.put(f"{CACHE_DIR}/{CACHE_FILE}", msgspec.msgpack.encode(cache))

    def subdir_names(self) -> list[str]:
        if self._folders is None:
            self._folders = self.storage.list_dir("")[0]
        return sorted(f for f in self._folders if f in KNOWN_SUBDIRS)

    def has_index(self, subdir: str) -> bool:
        return self.storage.head(f"{subdir}/repodata.json") is not None

    def scan(self, subdir: str) -> Scan:
        seen: dict[str, tuple[int, int | str]] = {}
        for name in OUTPUTS:  # first: a write conditional on these covers what is listed next
            info = self.storage.head(f"{subdir}/{name}")
            if info is not None:
                seen[name] = (info.size, info.etag)
        self._seen[subdir] = seen
        files: dict[str, tuple[int, int | str]] = {}
        strays: set[Problem] = set()
        prefix = f"{subdir}/"
        for info in self.storage.list(subdir):
            rest = info.key[len(prefix) :]
            name, nested, _ = rest.partition("/")
            if name.startswith(".") or name.endswith(".part"):
                continue
            if nested:
                strays.add(Problem(subdir, name, "a folder that is not a conda package; ignored"))
            elif split_package_name(name):
                files[name] = (info.size, info.etag)
            elif name not in CHANNEL_FILES:
                strays.add(Problem(subdir, name, "a file that is not a conda package; ignored"))
        return Scan(subdir, Path(subdir), files, sorted(strays))

    def outputs(self, subdir: str) -> dict[str, tuple[int, int | str]]:
        if subdir not in self._seen:
            found = {}
            for name in OUTPUTS:
                info = self.storage.head(f"{subdir}/{name}")
                if info is not None:
                    found[name] = (info.size, info.etag)
            return found
        return self._seen[subdir]

    def channeldata_stamp(self) -> tuple[int, int | str] | None:
        return self._channeldata

    def existing_removed(self, subdir: str) -> list[str]:
        from casconsole.storage import ObjectNotFound

        try:
            return removed_of(self.storage.get(f"{subdir}/repodata.json")[0])
        except ObjectNotFound:
            return []

    def _put(self, key: str, data: bytes, seen: tuple[int, int | str] | None) -> tuple[int, int | str]:
        etag = seen[1] if seen is not None else None
        new = self.storage.put(key, data, if_match=etag, if_none_match=etag is None)  # type: ignore[arg-type]
        return (len(data), new)

    def write_repodata(self, subdir: str, repodata: dict) -> None:
        """`.zst` then `.json`, each only over the version read at the start (WriteConflict)."""
        data, zst = encode_repodata(repodata)
        seen = self._seen.setdefault(subdir, {})
        seen["repodata.json.zst"] = self._put(
            f"{subdir}/repodata.json.zst", zst, seen.get("repodata.json.zst")
        )
        seen["repodata.json"] = self._put(f"{subdir}/repodata.json", data, seen.get("repodata.json"))

    def write_channeldata(self, data: bytes) -> None:
        self._channeldata = self._put(CHANNELDATA, data, self._channeldata)

    def read(
        self, todo: list[Todo], workers: int, on_result: Callable[[Todo, ReadResult | None], None]
    ) -> None:
        """Fetch the packages into a temporary folder a batch at a time, and read them there;
        each result is keyed on the ETag of the version fetched."""
        from casconsole.storage import ObjectNotFound

        def fetch(item: Todo, folder: Path) -> str | None:
            subdir, fn, _ = item
            try:
                info, chunks = self.storage.open_read(f"{subdir}/{fn}")
                with open(folder / subdir / fn, "wb") as fh:
                    for chunk in chunks:
                        fh.write(chunk)
            except ObjectNotFound:
                return None  # deleted since the scan
            return info.etag

        for batch in batches(todo, BATCH_FILES, BATCH_BYTES):
            folder = Path(tempfile.mkdtemp(prefix="cas-index-"))
            try:
                for subdir in {item[0] for item in batch}:
                    (folder / subdir).mkdir()
                with ThreadPoolExecutor(FETCHERS) as pool:
                    etags = list(pool.map(lambda item, f=folder: fetch(item, f), batch))
                stamps = {item[:2]: etag for item, etag in zip(batch, etags)}
                present = [item for item in batch if stamps[item[:2]] is not None]
                for item in batch:
                    if stamps[item[:2]] is None:
                        on_result(item, None)

                def keyed(item: Todo, result: ReadResult | None, stamps=stamps) -> None:
                    if result is not None:
                        result = dataclasses.replace(result, mtime_ns=stamps[item[:2]])
                    on_result(item, result)

                read_all(folder, present, workers, keyed, fork=False)  # the client's threads run
            finally:
                shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        self.storage.close()
