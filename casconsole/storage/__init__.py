"""Where the mirror's files live: a folder, or an S3-compatible bucket (docs/scale-out.md).

    storage = open_storage(settings)                 # the mirror_dir of the settings
    storage = open_storage(settings, location)       # another folder or s3:// location
    data, info = storage.get("pkgs/linux-64/repodata.json")
    storage.put("pkgs/linux-64/repodata.json", data, if_match=info.etag)   # or WriteConflict

The interface is in base.py, the folder in folder.py, the bucket (obstore) in s3.py; the
bucket's lock with its lease in lease.py. This package stands on the base modules and the
settings only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from casconsole.layout import BucketURL
from casconsole.storage.base import (
    BadKey,
    BucketError,
    ObjectInfo,
    ObjectNotFound,
    Storage,
    WriteConflict,
    check_key,
    join,
)

__all__ = [
    "BadKey",
    "BucketError",
    "ObjectInfo",
    "ObjectNotFound",
    "Storage",
    "WriteConflict",
    "check_key",
    "join",
    "open_storage",
]


def open_storage(settings: Any, location: Path | BucketURL | None = None) -> Storage:
    """The storage at `location` (default: the settings' mirror_dir): a FolderStorage for a
    folder, an S3Storage for `s3://...` with the settings' endpoint, region and credentials."""
    where = settings.mirror_dir if location is None else location
    if isinstance(where, BucketURL):
        from casconsole.storage.s3 import S3Storage, config_of

        return S3Storage(config_of(settings, where))
    from casconsole.storage.folder import FolderStorage

    return FolderStorage(Path(where))
