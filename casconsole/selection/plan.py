"""The plan: per subdir, what the selection keeps, what to download, keep and delete.

A plan is built once from the upstream repodata and the files on disk, then kept up to date:
`Plan.update(settings, names)` re-decides only the records of the names a toggle touched and
adjusts the counts, so the console re-plans 500,000 records in milliseconds.

Beyond the five steps: `newest_versions` (keep each name's newest N versions per subdir),
`whitelist_closure` (whitelist entries bring in every record their dependencies can resolve
to), `curated` (only whitelist entries and their closure), and the dependency check: kept
records whose `depends` no kept record satisfies, grouped by the entry that caused it.

What an administrator should hear before a sync is in `Plan.warnings()`: platforms upstream
does not carry (left out, the others planned as usual), blacklist and whitelist entries that
match no upstream record (a typo, or a name upstream never had), and subdirs where a sync would
hold its pruning back (`prune_withheld`: more than `max_prune` of the files would go).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress
from operator import attrgetter, ne
from pathlib import Path
from typing import Any

from casconsole.conda.repodata import Record, RepoData, gc_paused
from casconsole.layout import split_package_name
from casconsole.redact import redact_url
from casconsole.selection.check import BrokenGroup, DependencyCheck, Elsewhere
from casconsole.selection.deps import Closure, SubdirIndex
from casconsole.selection.filters import KEPT, Decision, EntryList, Selector
from casconsole.selection.funnel import ADDED_BY, DROPPED_BY, Funnel, contribution
from casconsole.selection.planjson import excluded_items, plan_json, subdir_json
from casconsole.selection.warnings import matching_nothing, percent, prune_exceeds
from casconsole.settings import Settings


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


_INCLUDED, _FN, _SIZE = attrgetter("included"), attrgetter("fn"), attrgetter("size")


def _missing(kept: Sequence[Record], local: Mapping[str, int]) -> list[bool]:
    """For each record, whether the mirror lacks its file (none of that size on disk)."""
    return list(map(ne, map(local.get, map(_FN, kept)), map(_SIZE, kept)))


CURATED = Decision(False, "curated")
_ENTRY_KEYS = ("blacklist", "whitelist")
_shared_decisions: dict[tuple, Decision] = {}


def _newest_drop(newest: int, newer: int) -> Decision:
    return _shared(False, "newest_versions", str(newest), f"{newer} newer version{'s' * (newer > 1)}")


def _shared(*fields: Any) -> Decision:
    """One Decision object per distinct reason of the dependency-aware steps."""
    decision = _shared_decisions.get(fields)
    if decision is None:
        decision = _shared_decisions[fields] = Decision(*fields)
    return decision


@dataclass
class SubdirPlan:
    """One subdir: the upstream records, a decision for each, and what that means on disk.

    Besides the selector's steps, a decision depends on `newest` (keep the newest N versions of
    each name; 0 keeps all), `curated` (only whitelist entries and their closure) and `closure`
    (record index -> the whitelist entry whose dependency closure holds it); the plan sets them.
    """

    subdir: str
    repodata: RepoData
    local: dict[str, int]  # package files present in the mirror: name -> size
    prune: bool = True
    max_prune: float = 1.0  # the prune guard's share (Plan.build sets the settings' max_prune)
    decisions: list[Decision] = field(default_factory=list)
    funnel: Funnel = field(default_factory=Funnel)
    newest: int = 0
    curated: bool = False
    closure: dict[int, str] = field(default_factory=dict, repr=False)
    _index: SubdirIndex | None = field(default=None, repr=False)
    _ranks: list[int] | None = field(default=None, repr=False)
    _delete: set[str] = field(default_factory=set, repr=False)
    _kept: list[Record] | None = field(default=None, repr=False)  # included(), kept from _tally
    _plan: Plan | None = field(default=None, repr=False, compare=False)  # set by Plan.build

    @property
    def records(self) -> list[Record]:
        return self.repodata.records

    @property
    def index(self) -> SubdirIndex:
        """The records by name, each name's versions in conda order (built on first use)."""
        if self._index is None:
            self._index = SubdirIndex(self.subdir, self.records)
        return self._index

    def is_present(self, rec: Record) -> bool:
        return self.local.get(rec.fn) == rec.size

    # ---- deciding

    def _decider(self, selector: Selector) -> Callable[[int, Record], Decision]:
        """The decision for record `i`: the selector's, then newest-N, curated and the closure."""
        decide = selector.decide
        newest, curated, closure = self.newest, self.curated, self.closure
        if not (newest or curated or closure):
            return lambda i, rec: decide(rec)
        if newest and self._ranks is None:
            self._ranks = self.index.ranks()
        ranks = self._ranks

        def final(i: int, rec: Record) -> Decision:
            base = decide(rec)
            if base.step == "whitelist":
                return base
            drop = None if base.included else base
            if drop is None and newest and ranks[i] >= newest:
                drop = _newest_drop(newest, ranks[i])
            entry = closure.get(i)
            if entry is not None:
                if drop is not None:
                    return _shared(True, "closure", entry, None, drop)
                return _shared(True, "closure", entry) if curated else base
            if drop is not None:
                return drop
            return CURATED if curated else base

        return final

    def decide_all(self, selector: Selector) -> None:
        """Decide every record; the same decisions as `_decider` gives one at a time, in passes
        that touch only what the dependency-aware steps change."""
        decisions = selector.decide_many(self.records)
        newest, curated = self.newest, self.curated
        if newest:
            if self._ranks is None:
                self._ranks = self.index.ranks()
            ranks = self._ranks
            older = [_newest_drop(newest, n) for n in range(max(ranks, default=0) + 1)]
            decisions = [older[r] if d is KEPT and r >= newest else d for d, r in zip(decisions, ranks)]
        if curated:
            decisions = [CURATED if d is KEPT else d for d in decisions]
        for i, entry in self.closure.items():
            d = decisions[i]
            if d is CURATED:
                decisions[i] = _shared(True, "closure", entry)
            elif not d.included:
                decisions[i] = _shared(True, "closure", entry, None, d)
        self.decisions = decisions
        self._tally()

    def _tally(self) -> None:
        """The funnel from the decisions, in passes in C: the steps counted per distinct
        decision (a few dozen objects shared by every record), the rest by masks."""
        funnel = Funnel(upstream=len(self.records))
        records, decisions, local = self.records, self.decisions, self.local
        distinct = dict(zip(map(id, decisions), decisions))
        for key, n in Counter(map(id, decisions)).items():
            decision = distinct[key]
            drop = decision if not decision.included else decision.overrides
            if drop is not None:
                name = DROPPED_BY.get(drop.step, "dropped_blacklist")
                setattr(funnel, name, getattr(funnel, name) + n)
                if decision.included:
                    name = ADDED_BY.get(decision.step, "added_whitelist")
                    setattr(funnel, name, getattr(funnel, name) + n)
        kept = self._kept = list(compress(records, map(_INCLUDED, decisions)))
        funnel.kept = len(kept)
        if local:
            missing = _missing(kept, local)
            funnel.download, funnel.download_bytes = sum(missing), sum(compress(map(_SIZE, kept), missing))
        else:
            funnel.download, funnel.download_bytes = len(kept), sum(map(_SIZE, kept))
        funnel.present = funnel.kept - funnel.download
        funnel.broken = self.funnel.broken
        if self.prune and local:
            included = set(map(_FN, kept))
            self._delete = {fn for fn in local if fn not in included}
        else:
            self._delete = set()
        funnel.delete = len(self._delete)
        self.funnel = funnel

    def indices_of(self, names: Iterable[str]) -> list[int]:
        index = self.index
        return [i for name in dict.fromkeys(names) for i in index.indices(name)]

    def redecide(self, selector: Selector, names: Iterable[str], indices: Iterable[int] = ()) -> list[int]:
        """Re-decide the records of `names` (and at `indices`) only, adjusting the counts.

        Returns the indices of the records that went from kept to dropped or back.
        """
        records, decisions = self.records, self.decisions
        final = self._decider(selector)
        flipped = []
        for i in dict.fromkeys([*self.indices_of(names), *indices]):
            rec, old = records[i], decisions[i]
            new = final(i, rec)
            if new is old:
                continue
            decisions[i] = new
            if new.included != old.included:
                flipped.append(i)
                self._kept = None
            present = self.is_present(rec)
            self.funnel.add(contribution(old, present, rec.size), -1)
            self.funnel.add(contribution(new, present, rec.size))
            # file names are repodata keys, so one record per name: its decision is the file's
            if rec.fn in self.local and self.prune:
                if new.included:
                    self._delete.discard(rec.fn)
                else:
                    self._delete.add(rec.fn)
        self.funnel.delete = len(self._delete)
        return flipped

    # ---- views, computed on demand (the console reads the lists above directly)

    def included(self) -> list[Record]:
        """The kept records, in upstream's order: one list, shared until a decision flips (read it,
        do not change it)."""
        if self._kept is None:
            self._kept = list(compress(self.records, map(_INCLUDED, self.decisions)))
        return self._kept

    def download(self, included: list[Record] | None = None) -> list[Record]:
        """The kept records not on disk yet (of `included`, when the caller already has it)."""
        kept = self.included() if included is None else included
        return list(compress(kept, _missing(kept, self.local))) if self.local else kept

    def delete(self) -> list[str]:
        return sorted(self._delete)

    @property
    def prune_withheld(self) -> bool:
        """A sync would keep this subdir's leaving files and its repodata: more than max_prune
        of the files on disk would be deleted (`cas-sync --force-prune` deletes them)."""
        return self.prune and prune_exceeds(len(self._delete), len(self.local), self.max_prune)

    def prune_warning(self) -> str | None:
        if not self.prune_withheld:
            return None
        return (
            f"{self.subdir}: {len(self._delete):,} of its {len(self.local):,} files on disk left the plan, "
            f"more than max_prune ({percent(self.max_prune)}): a sync keeps them and the subdir's "
            "repodata.json as they are (cas-sync --force-prune deletes them)"
        )

    def excluded(self) -> dict[str, str]:
        return dict(excluded_items(self.records, self.decisions))

    # ---- dependencies (empty when the plan was built with check=False)

    @property
    def _check(self) -> DependencyCheck | None:
        return self._plan.check if self._plan is not None else None

    def unmet(self, i: int) -> list[str]:
        """The `depends` specs of kept record `i` that no kept record satisfies."""
        check = self._check
        return list(check.broken(self.subdir).get(i, ())) if check is not None else []

    @property
    def broken(self) -> dict[str, list[str]]:
        """Kept records with unmet dependencies: file name -> the unmet specs, by file name."""
        check = self._check
        if check is None:
            return {}
        with gc_paused():  # tens of thousands of small lists: no cycles to look for
            return dict(check.broken(self.subdir).by_file(self.records))

    def broken_groups(self) -> list[BrokenGroup]:
        """The broken records grouped by the entry or step that caused them, largest first."""
        plan = self._plan
        if plan is None or plan.check is None:
            return []
        with gc_paused():
            return plan.check.groups(self.subdir, plan.decisions_by_subdir())

    def to_json(self) -> dict[str, Any]:
        return subdir_json(self)


@dataclass
class Plan:
    """The plan of every subdir the settings name (noarch always).

    `check` holds the broken-dependency check (None when built with `check=False`): each
    subdir's `broken`, `unmet(i)` and `broken_groups()` read it, and `update` keeps it current.
    """

    settings: Settings
    subdirs: dict[str, SubdirPlan]
    selector: Selector
    check: DependencyCheck | None = field(default=None, repr=False)
    _closure: Closure | None = field(default=None, repr=False)
    # platforms of the settings that upstream does not carry: subdir -> why (left out of subdirs)
    missing: dict[str, str] = field(default_factory=dict)
    # blacklist / whitelist entries that match no upstream record: key -> entries
    unmatched: dict[str, list[str]] = field(default_factory=dict)
    # a plan split between two processes (sync/splitplan.py): the other half, and its warnings
    elsewhere: Elsewhere | None = field(default=None, repr=False)
    warnings_elsewhere: list[str] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        settings: Settings,
        upstream: Mapping[str, RepoData],
        check: bool = True,
        missing: Mapping[str, str] | None = None,
        local: Mapping[str, dict[str, int]] | None = None,
        elsewhere: Elsewhere | None = None,
    ) -> Plan:
        """Decide every record of `upstream` (subdir -> repodata) and compare with the disk.

        A subdir of the settings that `upstream` lacks is a platform upstream does not carry:
        it is left out and listed in `missing` (with the reason `missing` gives, if any).
        With `check`, the dependency check runs too (`check_dependencies` can run it later).
        `local` (subdir -> file name -> size) is what the mirror holds when it is not a folder
        to look at (a bucket: the caller lists it).
        With `elsewhere`, this is one half of a plan split between two processes: the subdirs
        the other half holds are neither planned nor missing here, and the check and the
        warnings ask it about its records (no whitelist closure: its walk crosses subdirs).
        """
        # the plan's lists and dicts form no cycles: collections during it would only re-walk
        # the records (measured: 0.1 s a full collection at 500,000 records)
        with gc_paused():
            return cls._build(settings, upstream, check, missing or {}, local, elsewhere)

    @classmethod
    def _build(
        cls,
        settings: Settings,
        upstream: Mapping[str, RepoData],
        check: bool,
        missing: Mapping[str, str],
        local: Mapping[str, dict[str, int]] | None,
        elsewhere: Elsewhere | None = None,
    ) -> Plan:
        selector = Selector.from_settings(settings)
        subdirs = {
            subdir: SubdirPlan(
                subdir,
                upstream[subdir],
                local.get(subdir, {}) if local is not None else scan_local(settings.channel_dir / subdir),
                settings.prune,
                settings.max_prune,
            )
            for subdir in settings.subdirs
            if subdir in upstream
        }
        plan = cls(settings, subdirs, selector, elsewhere=elsewhere)
        held_elsewhere = elsewhere.subdirs if elsewhere is not None else ()
        plan.missing = {
            subdir: missing.get(subdir, "upstream has no repodata for it")
            for subdir in settings.subdirs
            if subdir not in upstream and subdir not in held_elsewhere
        }
        maps = plan._closure_maps(settings)
        for subdir, sp in subdirs.items():
            sp._plan = plan
            sp.newest, sp.curated, sp.closure = settings.newest_versions, settings.curated, maps[subdir]
            sp.decide_all(selector)
        if check:
            plan.check_dependencies()
        plan._find_unmatched()  # after the check, which has made each subdir's index
        if elsewhere is not None:  # an entry is unmatched when neither half's records match it
            theirs, plan.warnings_elsewhere = elsewhere.swap([plan.unmatched, plan.prune_warnings()])
            plan.unmatched = {
                key: both
                for key, mine in plan.unmatched.items()
                if (both := [e for e in mine if e in theirs.get(key, ())])
            }
        return plan

    # ---- what to tell the administrator

    @property
    def platforms_left(self) -> list[str]:
        """The platforms of the settings that upstream carries (noarch aside)."""
        return [p for p in self.settings.platforms if p in self.subdirs and p != "noarch"]

    @property
    def nothing_left(self) -> bool:
        """Upstream carries none of the platforms asked for: there is nothing to mirror."""
        asked = [p for p in self.settings.platforms if p != "noarch"]
        return bool(asked) and not self.platforms_left

    def missing_warning(self, subdir: str) -> str:
        return f"platform {subdir}: not carried by upstream, left out ({redact_url(self.missing[subdir])})"

    def nothing_left_message(self) -> str:
        asked = ", ".join(p for p in self.settings.platforms if p != "noarch")
        upstream = redact_url(self.settings.remote_url)
        return f"upstream {upstream} carries none of the platforms ({asked}): nothing to mirror"

    def unmatched_warnings(self) -> list[str]:
        return [
            f"{key} entry {entry!r} matches no upstream record"
            for key, entries in self.unmatched.items()
            for entry in entries
        ]

    def warnings(self) -> list[str]:
        """Every warning of the plan, one line each: missing platforms, entries matching nothing,
        subdirs whose pruning a sync would hold back."""
        lines = [self.missing_warning(subdir) for subdir in self.missing]
        lines += self.unmatched_warnings()
        return lines + self.prune_warnings() + self.warnings_elsewhere

    def prune_warnings(self) -> list[str]:
        """The subdirs of this plan (this half's, when split) whose pruning a sync would hold back."""
        return [w for sp in self.subdirs.values() if (w := sp.prune_warning())]

    def _find_unmatched(self) -> None:
        """The blacklist and whitelist entries no upstream record of any subdir matches."""
        subdirs = [(sp.records, sp._index) for sp in self.subdirs.values()]  # an index if made already
        self.unmatched = matching_nothing({key: getattr(self.settings, key) for key in _ENTRY_KEYS}, subdirs)

    def check_dependencies(self) -> None:
        """Run the dependency check (kept up to date by `update` from then on)."""
        with gc_paused():
            indexes = {subdir: sp.index for subdir, sp in self.subdirs.items()}
            self.check = DependencyCheck(indexes, self.elsewhere)
            self._check_all()

    def decisions_by_subdir(self) -> dict[str, list[Decision]]:
        return {subdir: sp.decisions for subdir, sp in self.subdirs.items()}

    def prepare_updates(self) -> None:
        """Make later `update` calls faster: index every record's dependencies by spec (about
        half a second at 500,000 records; run it once, e.g. in a worker, after `build`)."""
        if self.check is not None:
            with gc_paused():
                self.check.index_dependents()

    def _check_all(self) -> None:
        if self.check is not None:
            self.check.run(self.decisions_by_subdir())
            self._count_broken()

    def _count_broken(self) -> None:
        if self.check is not None:
            for subdir, sp in self.subdirs.items():
                sp.funnel.broken = len(self.check.broken(subdir))

    # ---- the closure of the whitelist

    def _closure_maps(self, settings: Settings) -> dict[str, dict[int, str]]:
        """Per subdir, record index -> the first whitelist entry whose closure holds it."""
        if not (settings.whitelist_closure or settings.curated) or not settings.whitelist:
            return {subdir: {} for subdir in self.subdirs}
        walk = self._closure
        done = walk.entries if walk is not None else []
        if walk is None or settings.whitelist[: len(done)] != done:  # not an extension: walk anew
            walk = self._closure = Closure({subdir: sp.index for subdir, sp in self.subdirs.items()})
        for entry in settings.whitelist[len(walk.entries) :]:
            walk.add(entry, self._roots(entry))
        return walk.maps()

    def _roots(self, entry: str) -> dict[str, list[int]]:
        """The records one whitelist entry matches, per subdir."""
        entries = EntryList([entry])
        glob = entries.entries[0].is_glob
        roots: dict[str, list[int]] = {}
        for subdir, sp in self.subdirs.items():
            records, index = sp.records, sp.index
            names = (
                [name for name in index.names if entries.candidates(name)]
                if glob
                else [entries.entries[0].name]
            )
            roots[subdir] = [
                i for name in names for i in index.indices(name) if entries.match(records[i]) is not None
            ]
        return roots

    # ---- re-planning

    def update(self, settings: Settings, names: Iterable[str] | None = None) -> None:
        """Apply new settings; with `names`, only the records of those names are re-decided.

        Records whose place in the whitelist's closure changed are re-decided too, and the
        dependency check is brought up to date from the records that changed between kept and
        dropped. A change of `newest_versions` or `curated` re-decides everything.
        """
        with gc_paused():
            self._update(settings, names)

    def _update(self, settings: Settings, names: Iterable[str] | None) -> None:
        old = self.settings
        self.selector = Selector.from_settings(settings)
        self.settings = settings
        if (settings.blacklist, settings.whitelist) != (old.blacklist, old.whitelist):
            self._find_unmatched()
        names = None if names is None else list(names)
        full = (
            names is None
            or settings.newest_versions != old.newest_versions
            or settings.curated != old.curated
        )
        closure_changed = (settings.whitelist, settings.whitelist_closure, settings.curated) != (
            old.whitelist,
            old.whitelist_closure,
            old.curated,
        )
        maps = self._closure_maps(settings) if closure_changed else None
        flipped: dict[str, list[int]] = {}
        redecided = set(names or ())
        for subdir, sp in self.subdirs.items():
            sp.prune, sp.max_prune = settings.prune, settings.max_prune
            sp.newest, sp.curated = settings.newest_versions, settings.curated
            moved: list[int] = []
            if maps is not None:
                before, after = sp.closure, maps[subdir]
                moved = [i for i in before if i not in after]
                moved += [i for i, entry in after.items() if before.get(i) != entry]
                sp.closure = after
            if full:
                sp.decide_all(self.selector)
            else:
                flipped[subdir] = sp.redecide(self.selector, names or (), moved)
                redecided.update(sp.records[i].name for i in moved)
        if full:
            self._check_all()
        elif self.check is not None:
            self.check.update(self.decisions_by_subdir(), flipped, redecided)
            self._count_broken()

    def rescan(self) -> None:
        """Look at the disk again (after a sync) without re-deciding anything."""
        for subdir, sp in self.subdirs.items():
            sp.local = scan_local(self.settings.channel_dir / subdir)
            sp._tally()

    # ---- reports

    @property
    def total(self) -> Funnel:
        total = Funnel()
        for sp in self.subdirs.values():
            total.add(sp.funnel)
        return total

    def to_json(self) -> dict[str, Any]:
        """The plan as one object (`cas-sync --dry-run --json` writes the same, streamed)."""
        return plan_json(self)
