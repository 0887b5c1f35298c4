"""The plan: per subdir, what the selection keeps, what to download, keep and delete.

A plan is built once from the upstream repodata and the files on disk, then kept up to date:
`Plan.update(settings, names)` re-decides only the records of the names a toggle touched and
adjusts the counts, so the console re-plans 500,000 records in milliseconds.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .archive import split_package_name
from .config import Settings
from .filters import Decision, Selector
from .repodata import Record, RepoData, http_client, load_repodata


@dataclass
class Funnel:
    """The counts of one subdir's selection, in the order the steps apply."""

    upstream: int = 0
    dropped_license: int = 0
    dropped_blacklist: int = 0
    added_whitelist: int = 0
    kept: int = 0
    download: int = 0
    download_bytes: int = 0
    present: int = 0
    delete: int = 0

    def add(self, other: Funnel, sign: int = 1) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + sign * getattr(other, f.name))


def _contribution(decision: Decision, present: bool, size: int) -> Funnel:
    """What one record adds to the funnel (the delete count is the subdir's, not a record's)."""
    f = Funnel(upstream=1)
    drop = decision if not decision.included else decision.overrides
    if drop is not None:
        if drop.step == "license_blacklist":
            f.dropped_license = 1
        else:
            f.dropped_blacklist = 1
        if decision.included:
            f.added_whitelist = 1
    if decision.included:
        f.kept = 1
        if present:
            f.present = 1
        else:
            f.download = 1
            f.download_bytes = size
    return f


def scan_local(subdir_dir: Path) -> dict[str, int]:
    """Package files in a mirrored subdir folder: name -> size. A missing folder is empty."""
    found: dict[str, int] = {}
    try:
        entries = os.scandir(subdir_dir)
    except FileNotFoundError:
        return found
    with entries:
        for entry in entries:
            if split_package_name(entry.name) and entry.is_file(follow_symlinks=False):
                found[entry.name] = entry.stat(follow_symlinks=False).st_size
    return found


@dataclass
class SubdirPlan:
    """One subdir: the upstream records, a decision for each, and what that means on disk."""

    subdir: str
    repodata: RepoData
    local: dict[str, int]  # package files present in the mirror: name -> size
    prune: bool = True
    decisions: list[Decision] = field(default_factory=list)
    funnel: Funnel = field(default_factory=Funnel)
    _by_name: dict[str, list[int]] | None = field(default=None, repr=False)
    _delete: set[str] = field(default_factory=set, repr=False)

    @property
    def records(self) -> list[Record]:
        return self.repodata.records

    def is_present(self, rec: Record) -> bool:
        return self.local.get(rec.fn) == rec.size

    def decide_all(self, selector: Selector) -> None:
        decide = selector.decide
        self.decisions = [decide(rec) for rec in self.records]
        self._tally()

    def _tally(self) -> None:
        funnel = Funnel(upstream=len(self.records))
        included: set[str] = set()
        local = self.local
        # one pass with plain integers: this loop runs over every record of the subdir
        lic = bl = wl = kept = dl = dl_bytes = present = 0
        for rec, decision in zip(self.records, self.decisions):
            drop = decision if not decision.included else decision.overrides
            if drop is not None:
                if drop.step == "license_blacklist":
                    lic += 1
                else:
                    bl += 1
                if decision.included:
                    wl += 1
            if decision.included:
                kept += 1
                included.add(rec.fn)
                if local.get(rec.fn) == rec.size:
                    present += 1
                else:
                    dl += 1
                    dl_bytes += rec.size
        funnel.dropped_license, funnel.dropped_blacklist, funnel.added_whitelist = lic, bl, wl
        funnel.kept, funnel.download, funnel.download_bytes, funnel.present = kept, dl, dl_bytes, present
        self._delete = {fn for fn in local if fn not in included} if self.prune else set()
        funnel.delete = len(self._delete)
        self.funnel = funnel

    def indices_of(self, names: Iterable[str]) -> list[int]:
        if self._by_name is None:
            by_name: dict[str, list[int]] = {}
            for i, rec in enumerate(self.records):
                by_name.setdefault(rec.name, []).append(i)
            self._by_name = by_name
        return [i for name in names for i in self._by_name.get(name, ())]

    def redecide(self, selector: Selector, names: Iterable[str]) -> None:
        """Re-decide the records of `names` only, adjusting the counts by the difference."""
        records, decisions = self.records, self.decisions
        for i in self.indices_of(names):
            rec, old = records[i], decisions[i]
            new = selector.decide(rec)
            if new is old:
                continue
            decisions[i] = new
            present = self.is_present(rec)
            self.funnel.add(_contribution(old, present, rec.size), -1)
            self.funnel.add(_contribution(new, present, rec.size))
            # file names are repodata keys, so one record per name: its decision is the file's
            if rec.fn in self.local and self.prune:
                if new.included:
                    self._delete.discard(rec.fn)
                else:
                    self._delete.add(rec.fn)
        self.funnel.delete = len(self._delete)

    # ---- views, computed on demand (the console reads the lists above directly)

    def included(self) -> list[Record]:
        return [rec for rec, d in zip(self.records, self.decisions) if d.included]

    def download(self) -> list[Record]:
        return [rec for rec in self.included() if not self.is_present(rec)]

    def present(self) -> list[Record]:
        return [rec for rec in self.included() if self.is_present(rec)]

    def delete(self) -> list[str]:
        return sorted(self._delete)

    def excluded(self) -> dict[str, str]:
        return {rec.fn: d.reason for rec, d in zip(self.records, self.decisions) if not d.included}

    def to_json(self) -> dict[str, Any]:
        download = self.download()
        return {
            "source": self.repodata.source,
            "funnel": dataclasses.asdict(self.funnel),
            "included": [rec.fn for rec in self.included()],
            "excluded": self.excluded(),
            "download": [rec.fn for rec in download],
            "delete": self.delete(),
            "download_bytes": sum(rec.size for rec in download),
        }


@dataclass
class Plan:
    """The plan of every subdir the settings name (noarch always)."""

    settings: Settings
    subdirs: dict[str, SubdirPlan]
    selector: Selector

    @classmethod
    def build(cls, settings: Settings, upstream: Mapping[str, RepoData]) -> Plan:
        """Decide every record of `upstream` (subdir -> repodata) and compare with the disk."""
        selector = Selector.from_settings(settings)
        subdirs = {}
        for subdir in settings.subdirs:
            sp = SubdirPlan(
                subdir, upstream[subdir], scan_local(settings.channel_dir / subdir), settings.prune
            )
            sp.decide_all(selector)
            subdirs[subdir] = sp
        return cls(settings, subdirs, selector)

    def update(self, settings: Settings, names: Iterable[str] | None = None) -> None:
        """Apply new settings; with `names`, only the records of those names are re-decided."""
        self.selector = Selector.from_settings(settings)
        self.settings = settings
        for sp in self.subdirs.values():
            sp.prune = settings.prune
            if names is None:
                sp.decide_all(self.selector)
            else:
                sp.redecide(self.selector, names)

    def rescan(self) -> None:
        """Look at the disk again (after a sync) without re-deciding anything."""
        for subdir, sp in self.subdirs.items():
            sp.local = scan_local(self.settings.channel_dir / subdir)
            sp._tally()

    @property
    def total(self) -> Funnel:
        total = Funnel()
        for sp in self.subdirs.values():
            total.add(sp.funnel)
        return total

    def to_json(self) -> dict[str, Any]:
        return {
            "remote_url": self.settings.remote_url,
            "mirror_dir": str(self.settings.mirror_dir),
            "channel": self.settings.channel_name,
            "subdirs": {subdir: sp.to_json() for subdir, sp in self.subdirs.items()},
        }


def fetch_upstream(
    settings: Settings, client: httpx.Client | None = None, subdirs: Iterable[str] | None = None
) -> dict[str, RepoData]:
    """The upstream repodata of each subdir the settings name; RepoDataError names what failed."""
    own = client is None
    if client is None and settings.remote_url.startswith(("http://", "https://")):
        client = http_client(settings.timeout, settings.ssl_verify, settings.proxy)
    try:
        return {s: load_repodata(settings.remote_url, s, client) for s in (subdirs or settings.subdirs)}
    finally:
        if own and client is not None:
            client.close()


def make_plan(settings: Settings, client: httpx.Client | None = None) -> Plan:
    """Fetch upstream and build the plan: the dry run."""
    return Plan.build(settings, fetch_upstream(settings, client))
