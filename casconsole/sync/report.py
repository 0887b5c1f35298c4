"""Sync events as text, in one place: the plain CLI, the rich CLI and the console's log pane
all show these lines, and the end-of-run summary comes from the stats the sync returns.

Events are read as mappings (a status-log line, or an event's fields), so a console following
another process's sync and the CLI watching its own say the same thing.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import humanize

from casconsole.events import Event
from casconsole.layout import PYPI_DIR
from casconsole.sync.events import SyncStats

INFO, WARNING, ERROR = "info", "warning", "error"


@dataclass(frozen=True)
class Line:
    level: str  # INFO, WARNING or ERROR: how a terminal may colour it
    text: str


def size(n: int | float | None) -> str:
    return humanize.naturalsize(n or 0)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    return humanize.precisedelta(datetime.timedelta(seconds=round(seconds)), minimum_unit="seconds")


def fields_of(event: Event) -> dict[str, Any]:
    """An event as the status log writes it (without the time): `event`, then its fields."""
    return {"event": event.kind, **event.__dict__}


def describe(event: Mapping[str, Any]) -> Line | None:
    """One line for a notable event; None for the frequent ones (progress, files done).

    The line of `started` says what is synced where; each view says who started it.
    """
    kind = event.get("event")
    sub = event.get("subdir", "")
    where = f"{sub}/{event.get('fn')}"
    if kind == "started":
        subdirs = ", ".join(event.get("subdirs", []))
        verify = ", verifying every file" if event.get("verify") else ""
        return Line(
            INFO,
            f"{event.get('remote_url')} -> {event.get('mirror_dir')}/{event.get('channel')}"
            f" ({subdirs}){verify}",
        )
    if kind == "planned":
        return Line(
            INFO,
            f"{sub}: {event.get('kept', 0):,} kept of {event.get('upstream', 0):,}; "
            f"{event.get('present', 0):,} in place, {event.get('files', 0):,} to download "
            f"({size(event.get('bytes'))}), {event.get('check', 0):,} to check, "
            f"{event.get('delete', 0):,} to remove",
        )
    if kind == "warning":
        return Line(WARNING, f"warning: {sub + ': ' if sub else ''}{event.get('message')}")
    if kind == "subdir_missing":
        return Line(
            WARNING,
            f"warning: platform {sub}: not carried by upstream, left out ({event.get('reason')})",
        )
    if kind == "file_retry":
        return Line(WARNING, f"retry: {where}: {event.get('reason')} (attempt {event.get('attempt')})")
    if kind == "file_failed":
        attempts = event.get("attempts", 0)
        plural = "s" if attempts != 1 else ""
        return Line(ERROR, f"failed: {where}: {event.get('reason')} (after {attempts} attempt{plural})")
    if kind == "file_removed":
        return Line(INFO, f"removed: {where} ({event.get('reason')})")
    if kind == "subdir_done":
        unchanged = "" if event.get("repodata_written", True) else " (unchanged)"
        if event.get("withheld"):
            unchanged = f" (kept as it was: prune withheld for {event.get('withheld'):,} files)"
        listed = "files in its pages" if sub == PYPI_DIR else "packages in repodata.json"
        return Line(
            INFO,
            f"{sub}: done, {event.get('packages', 0):,} {listed}{unchanged}; "
            f"{event.get('downloaded', 0):,} new, {event.get('failed', 0):,} failed, "
            f"{event.get('removed', 0):,} removed",
        )
    if kind == "finished":
        stats = event.get("stats") or {}
        if event.get("state") == "error":
            return Line(ERROR, f"sync stopped: {event.get('error')}")
        level = INFO if event.get("state") == "done" else WARNING
        return Line(
            level,
            f"sync {event.get('state')}: {stats.get('downloaded', 0):,} downloaded "
            f"({size(stats.get('fetched_bytes'))}), {stats.get('failed', 0):,} failed, "
            f"{stats.get('removed', 0):,} removed in {duration(stats.get('seconds'))}",
        )
    return None


def summary(stats: SyncStats, verify: bool = False) -> list[str]:
    """What a finished sync did, from its stats: the CLI's last lines."""
    if stats.state == "error":
        return [f"error: {stats.error}"]
    rate = stats.fetched_bytes / stats.seconds if stats.seconds else 0
    words = {"done": "done", "failed": "finished with failures", "cancelled": "cancelled"}[stats.state]
    if stats.state == "done" and stats.withheld:
        words = "done, prune withheld"
    lines = [
        f"{words} in {stats.seconds:.1f} s: {stats.downloaded:,} downloaded "
        f"({size(stats.fetched_bytes)}, {size(rate)}/s), "
        f"{stats.present:,} already verified, {stats.failed:,} failed, {stats.removed:,} removed; "
        f"{stats.packages:,} packages in repodata"
    ]
    if verify or stats.checked:
        files = "file" if stats.checked == 1 else "files"
        lines.append(f"hashed {stats.checked:,} {files} on disk: {stats.corrupt:,} bad")
    lines += [f"failed: {subdir}/{fn}: {reason}" for subdir, fn, reason in stats.failures]
    lines += [f"platform {subdir} is not carried by upstream: left out" for subdir in stats.missing]
    lines += [
        f"prune withheld in {subdir}: more than max_prune of its files left the plan; nothing removed, "
        "repodata.json kept as it was (see the warning above; --force-prune to remove them)"
        for subdir in stats.withheld
    ]
    return lines
