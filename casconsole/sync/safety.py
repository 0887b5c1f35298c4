"""The sync's safety checks: room on the disk before downloading, disk errors that stop a sync,
a subdir's files counted from its repodata, and secrets kept out of its events and log."""

from __future__ import annotations

import dataclasses
import errno
import os
from pathlib import Path
from typing import Any

import msgspec

from casconsole.errors import DiskError
from casconsole.events import Event
from casconsole.redact import redact_url
from casconsole.sync import report

# a write these refuse will be refused for every file: the sync stops instead of failing each
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
SPACE_MARGIN = 16 << 20  # bytes kept free beyond the plan's downloads and its new repodata


def check_space(folder: Path, download: int, repodata: int) -> None:
    """Refuse (DiskError, both figures named) a plan that the filesystem of `folder` has no
    room for: `download` bytes to fetch, `repodata` bytes of new repodata, and SPACE_MARGIN."""
    if not download:
        return
    try:
        st = os.statvfs(folder)
    except OSError:  # a filesystem that cannot tell: the downloads will find out
        return
    free = st.f_bavail * st.f_frsize
    need = download + repodata + SPACE_MARGIN
    if need > free:
        size = report.size
        raise DiskError(
            f"{folder}: not enough free space: {size(need)} needed ({size(download)} to download, "
            f"{size(repodata + SPACE_MARGIN)} for repodata and a margin), {size(free)} free"
        )


def storage_failure(folder: Path, fn: str, error: int) -> DiskError | None:
    """The error that stops a sync when the disk refused a file for a reason every other file
    would meet too (full, read-only, denied); None for a failure of that file alone."""
    if error not in STORAGE_ERRNOS:
        return None
    return DiskError(f"{folder}: {os.strerror(error)} (writing {fn})")


class _Tables(msgspec.Struct):
    packages: dict[str, msgspec.Raw] = {}
    packages_conda: dict[str, msgspec.Raw] = msgspec.field(default_factory=dict, name="packages.conda")


def count_records(path: Path) -> int:
    """How many records the repodata.json at `path` holds (0 when there is none)."""
    try:
        return count_records_in(path.read_bytes())
    except OSError:
        return 0


def count_records_in(data: bytes) -> int:
    """How many records the repodata.json `data` holds (0 when it cannot be read)."""
    try:
        tables = msgspec.json.decode(data, type=_Tables)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return 0
    return len(tables.packages) + len(tables.packages_conda)


def redacted(event: Event) -> Event:
    """`event` with the secrets of any URL in its text hidden (a token, a password)."""
    changes = {}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        shown = _scrub(value)
        if shown is not value:
            changes[f.name] = shown
    return dataclasses.replace(event, **changes) if changes else event


def _scrub(value: Any) -> Any:
    """`value` with its strings redacted; the same object when nothing needed hiding."""
    if isinstance(value, str):
        shown = redact_url(value)
        return value if shown == value else shown
    if isinstance(value, dict):
        items = {k: _scrub(v) for k, v in value.items()}
        return value if all(items[k] is value[k] for k in value) else items
    if isinstance(value, list):
        listed = [_scrub(v) for v in value]
        return value if all(a is b for a, b in zip(listed, value)) else listed
    return value
