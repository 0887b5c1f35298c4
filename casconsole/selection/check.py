"""The broken-dependency check: kept records whose `depends` no kept record satisfies, grouped
by the entry (or step) that dropped what they need.

What it costs does not grow with the number of broken records beyond passes in C over the
records (`map`, `compress`, `set.isdisjoint`, `Counter`): each distinct spec is evaluated once per
set of subdirs, the broken records are a set of indices found in one pass, and the causes are
worked out once per distinct unmet spec, never per record. A record's unmet specs are listed
when asked (`unmet(i)`, a `BrokenRecords` view, the dry run's JSON).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain, compress, repeat
from operator import attrgetter, gt, not_
from typing import TYPE_CHECKING, Any, Protocol

from casconsole.conda.repodata import Record
from casconsole.selection.deps import PARSED_SPECS, DepSpec, SubdirIndex, contexts, parse_dep
from casconsole.selection.filters import Decision

if TYPE_CHECKING:
    from rattler import Version

UPSTREAM_CAUSE = "upstream (no record matches)"
UNREADABLE_CAUSE = "upstream (not a readable match spec)"

_INCLUDED = attrgetter("included")
_NAME = attrgetter("name")
_FN = attrgetter("fn")


@dataclass
class BrokenGroup:
    """Kept records of one subdir left with unmet dependencies by one cause (an entry or step).

    `files` (every record's file name, sorted) is listed when first asked: a report shows the
    count and a few `examples()`.
    """

    cause: str  # e.g. "blacklist: readline", "license_blacklist: GPL", or UPSTREAM_CAUSE
    records: int  # how many kept records it leaves with an unmet dependency
    specs: list[str]  # the unmet dependency specs, most needed first
    members: Callable[[], Iterable[str]] = field(repr=False, compare=False)  # the records' file names

    @cached_property
    def files(self) -> list[str]:
        """The file names of the records, sorted."""
        return sorted(self.members())

    def examples(self, n: int = 3) -> list[str]:
        """The first `n` file names in sorted order, without sorting them all."""
        return heapq.nsmallest(n, self.members())

    @property
    def summary(self) -> str:
        shown = ", ".join(self.specs[:4])
        if len(self.specs) > 4:
            shown += f", ... ({len(self.specs)} specs)"
        n = self.records
        return f"{self.cause} leaves {n:,} record{'s' if n != 1 else ''} with unmet dependencies: {shown}"

    def to_json(self) -> dict:
        return {"cause": self.cause, "records": self.records, "specs": self.specs, "files": self.files}


@dataclass
class _Context:
    """The specs needed within one set of subdirs, and whether a kept record there meets each."""

    subdirs: tuple[str, ...]
    sat: dict[str, bool] = field(default_factory=dict)  # spec text -> met by a kept record
    by_name: dict[str, list[str]] = field(default_factory=dict)  # dependency name -> its spec texts
    unmet: set[str] = field(default_factory=set)


Decisions = Mapping[str, Sequence[Decision]]


class Elsewhere(Protocol):
    """The other half of a plan split between two processes (sync/splitplan.py): the subdirs it
    holds, and an exchange. Both halves call `swap` at the same points, in the same order, each
    getting back what the other sent."""

    subdirs: tuple[str, ...]

    def swap(self, mine: Any) -> Any: ...


class BrokenRecords(Mapping[int, list[str]]):
    """One subdir's kept records with unmet dependencies: record index -> its unmet specs (in
    `depends` order), each list made when asked. A view: it follows the check's updates."""

    def __init__(self, indices: set[int], depends: Sequence[list[str]], unmet: set[str]):
        self._indices, self._depends, self._unmet = indices, depends, unmet

    def __contains__(self, i: object) -> bool:
        return i in self._indices

    def __len__(self) -> int:
        return len(self._indices)

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._indices))

    def __getitem__(self, i: int) -> list[str]:
        if i not in self._indices:
            raise KeyError(i)
        return [t for t in self._depends[i] if t in self._unmet]

    def by_record(self, records: Sequence[Record]) -> Iterator[tuple[str, list[str]]]:
        """(file name, unmet specs) of each record, in upstream's order; each list is made as
        the iterator reaches it (the dry run's JSON writes them a chunk at a time)."""
        members = sorted(self._indices)
        return zip(map(_FN, map(records.__getitem__, members)), self.lists(members))

    def by_file(self, records: Sequence[Record]) -> Iterator[tuple[str, list[str]]]:
        """(file name, unmet specs) of each record, in file-name order; each list is made as
        the iterator reaches it (the dry run's JSON writes them a chunk at a time)."""
        members = list(self._indices)
        files = list(map(_FN, map(records.__getitem__, members)))
        where = dict(zip(files, members))  # file names are unique in a subdir: sorting them is enough
        files.sort()
        return zip(files, self.lists(map(where.__getitem__, files)))

    def lists(self, indices: Iterable[int]) -> Iterator[list[str]]:
        """The unmet specs of each record of `indices`, all of them in C (no call per record)."""
        rows = map(self._depends.__getitem__, indices)
        return map(list, map(filter, repeat(self._unmet.__contains__), rows))


class DependencyCheck:
    """Which kept records have a `depends` entry that no kept record satisfies.

    `run` checks everything; `update` re-checks after records changed between kept and dropped,
    re-evaluating only the specs that name those records and, when a spec turns unmet, making
    one pass over the records of the subdirs that may depend on it. Subdirs whose records look
    for dependencies in the same set of subdirs (with one platform: linux-64 and noarch) share
    their spec evaluations.
    """

    def __init__(self, indexes: Mapping[str, SubdirIndex], elsewhere: Elsewhere | None = None):
        self.indexes = dict(indexes)
        # with `elsewhere`, a spec no kept record here meets is asked of the other half's records
        self.elsewhere = elsewhere
        every = [*self.indexes, *(elsewhere.subdirs if elsewhere is not None else ())]
        self.contexts = {s: ctx for s, ctx in contexts(every).items() if s in self.indexes}
        keys = {subdir: frozenset(ctx) for subdir, ctx in self.contexts.items()}
        self._ctx: dict[frozenset[str], _Context] = {}
        for subdir, key in keys.items():
            self._ctx.setdefault(key, _Context(self.contexts[subdir]))
        self._key = keys
        # per subdir, the kept records with an unmet spec: one set each, changed in place
        self._broken: dict[str, set[int]] = {s: set() for s in self.indexes}
        self._dropped: dict[str, set[str]] = {s: set() for s in self.indexes}
        self._dependents: dict[str, dict[str, list[int]]] = {}  # see index_dependents
        # (the subdirs looked in, spec) -> its causes: subdirs that look in the same subdirs
        # (linux-64 and noarch) share them
        self._causes: dict[tuple[frozenset[str], str], list[str]] = {}
        self._causes_elsewhere: dict[str, list[str]] = {}  # spec -> the other half's drops' causes
        # per subdir, spec -> how many kept records name it, counted by `run` (kept current by
        # `update`): for an unmet spec, how many broken records name it
        self._named: dict[str, Counter[str]] = {s: Counter() for s in self.indexes}

    # ---- the answers

    def broken(self, subdir: str) -> BrokenRecords:
        """Record index -> the specs of its `depends` that no kept record satisfies."""
        ctx = self._ctx[self._key[subdir]]
        return BrokenRecords(self._broken[subdir], self.indexes[subdir].depends, ctx.unmet)

    def met(self, subdir: str, spec_text: str) -> bool | None:
        """Whether a kept record meets `spec_text` for `subdir`'s records (None: never asked)."""
        return self._ctx[self._key[subdir]].sat.get(spec_text)

    def spec_counts(self, subdir: str) -> Counter[str]:
        """Unmet spec -> how many broken records of `subdir` name it: an unmet spec's kept
        dependents are all broken, so the count of kept records naming it (no pass)."""
        unmet = self._ctx[self._key[subdir]].unmet
        return Counter({t: n for t, n in self._named[subdir].items() if n > 0 and t in unmet})

    # ---- computing them

    def run(self, decisions: Decisions) -> None:
        self._causes.clear()
        self._dropped = self._dropped_names(decisions)
        needed: dict[frozenset[str], set[str]] = {key: set() for key in self._ctx}
        for subdir in self.indexes:  # the specs kept records name, counted: the pass a set of
            # them costs, and it spares the report a second one over the broken records
            counted = self._named[subdir] = self._count_named(subdir, decisions)
            needed[self._key[subdir]].update(counted)
        for key, ctx in self._ctx.items():
            ctx.sat, ctx.by_name = {}, {}
            ctx.unmet.clear()  # the same set object: BrokenRecords views read it
            self._evaluate(ctx, needed[key], decisions, self._dropped)
        if self.elsewhere is not None:
            self._trade_met(decisions)
        for subdir in self.indexes:
            broken = self._broken[subdir]
            broken.clear()
            unmet = self._ctx[self._key[subdir]].unmet
            if unmet:
                broken.update(self._scan(subdir, unmet, decisions))
        if self.elsewhere is not None:
            self._trade_causes(decisions)

    def _trade_met(self, decisions: Decisions) -> None:
        """Ask the other half which of the specs no kept record here meets its kept records meet,
        and answer its same question. Every context of a split plan holds the other half's
        subdirs (a platform looks in noarch, noarch in every platform), so one question covers all."""
        assert self.elsewhere is not None
        asked = sorted(set().union(*(ctx.unmet for ctx in self._ctx.values())))
        met_there = set(self.elsewhere.swap(self._met_here(self.elsewhere.swap(asked), decisions)))
        for ctx in self._ctx.values():
            for text in ctx.unmet.intersection(met_there):
                ctx.sat[text] = True
            ctx.unmet.difference_update(met_there)  # the same set object: BrokenRecords views read it

    def _met_here(self, texts: Iterable[str], decisions: Decisions) -> list[str]:
        """Which of `texts` a kept record of this half's subdirs meets."""
        scratch = _Context(tuple(self.indexes))
        self._evaluate(scratch, texts, decisions, self._dropped)
        return [text for text, ok in scratch.sat.items() if ok]

    def _trade_causes(self, decisions: Decisions) -> None:
        """Ask the other half what dropped its records matching each unmet spec named here, and
        answer its same question: `causes` joins both."""
        assert self.elsewhere is not None
        asked = sorted({text for subdir in self.indexes for text in self.spec_counts(subdir)})
        theirs = self.elsewhere.swap(asked)
        answers = {text: sorted(self._drop_causes(text, tuple(self.indexes), decisions)) for text in theirs}
        self._causes_elsewhere = self.elsewhere.swap(answers)

    def update(
        self, decisions: Decisions, flipped: Mapping[str, Iterable[int]], redecided: Iterable[str] = ()
    ) -> None:
        """Re-check after the records at `flipped` (subdir -> indices) went from kept to dropped
        or back; `redecided` names the records whose decision may have changed otherwise (a
        dropped record's cause), whose specs' causes are asked again."""
        flipped = {s: list(v) for s, v in flipped.items() if v}
        names = {self.indexes[s].records[i].name for s, indices in flipped.items() for i in indices}
        self._forget_causes(names.union(redecided))
        if not flipped:
            return
        for subdir, indices in flipped.items():  # the specs kept records name, counted
            own, depends, counted = decisions[subdir], self.indexes[subdir].depends, self._named[subdir]
            counted.update(chain.from_iterable(depends[i] for i in indices if own[i].included))
            counted.subtract(chain.from_iterable(depends[i] for i in indices if not own[i].included))
        for subdir, indices in flipped.items():  # keep the names-with-drops current
            records, own, dropped = self.indexes[subdir].records, decisions[subdir], self._dropped[subdir]
            for name in {records[i].name for i in indices}:
                if any(not own[i].included for i in self.indexes[subdir].indices(name)):
                    dropped.add(name)
                else:
                    dropped.discard(name)
        newly_met: dict[frozenset[str], set[str]] = {}
        newly_unmet: dict[frozenset[str], set[str]] = {}
        for key, ctx in self._ctx.items():
            if key.isdisjoint(flipped):
                continue
            texts = [t for name in names for t in ctx.by_name.get(name, ())]
            before = {t: ctx.sat[t] for t in texts}
            self._evaluate(ctx, texts, decisions, self._dropped)
            newly_met[key] = {t for t in texts if ctx.sat[t] and not before[t]}
            newly_unmet[key] = {t for t in texts if before[t] and not ctx.sat[t]}
        for subdir, index in self.indexes.items():
            key = self._key[subdir]
            ctx, broken = self._ctx[key], self._broken[subdir]
            own, depends = decisions[subdir], index.depends
            mine = flipped.get(subdir, ())
            if mine:  # records that changed: check their own dependencies
                new = {t for i in mine if own[i].included for t in depends[i] if t not in ctx.sat}
                self._evaluate(ctx, new, decisions, self._dropped)
                for i in mine:
                    if own[i].included and not ctx.unmet.isdisjoint(depends[i]):
                        broken.add(i)
                    else:
                        broken.discard(i)
            met = newly_met.get(key)
            if met and broken:  # broken records that named one of them may be whole again
                self._drop_whole(subdir, met, broken, ctx.unmet)
            unmet = newly_unmet.get(key)
            if unmet:
                broken.update(self._scan(subdir, unmet, decisions))

    def _suspects(self, subdir: str, specs: set[str], broken: set[int]) -> list[int]:
        """The broken records that may name one of `specs`: all of them, or through the index."""
        dependents = self._dependents.get(subdir)
        if dependents is None or len(specs) >= 1000:
            return list(broken)
        return list(broken.intersection(chain.from_iterable(map(dependents.get, specs, repeat(())))))

    def _drop_whole(self, subdir: str, met: set[str], broken: set[int], unmet: set[str]) -> None:
        """Take out of `broken` the records whole again now that the specs of `met` are met.

        Through the dependents index, whichever walks fewer entries: keep only the records that
        name a spec still unmet (un-blacklisting python under license_blacklist: GPL: 200,000
        suspects, 50,000 dependents of unmet specs), or test each broken record naming one of
        `met` (a leaf's toggle: a few). Without the index, a set test per broken record."""
        depends = self.indexes[subdir].depends
        dependents = self._dependents.get(subdir)
        if dependents is not None:
            suspects = sum(map(len, map(dependents.get, met, repeat(()))))
            named = sum(map(len, map(dependents.get, unmet, repeat(()))))
            if named < 2 * suspects:
                broken.intersection_update(chain.from_iterable(map(dependents.get, unmet, repeat(()))))
                return
        candidates = self._suspects(subdir, met, broken)
        whole = compress(candidates, map(unmet.isdisjoint, map(depends.__getitem__, candidates)))
        broken.difference_update(list(whole))

    def _evaluate(
        self, ctx: _Context, texts: Iterable[str], decisions: Decisions, dropped: Mapping[str, set[str]]
    ) -> None:
        """Decide for each spec in `texts` whether a kept record of the context meets it."""
        sat, by_name, unmet = ctx.sat, ctx.by_name, ctx.unmet
        per_name: dict[str, list[DepSpec]] = {}
        for text in texts:
            spec = PARSED_SPECS[text] if text in PARSED_SPECS else parse_dep(text)
            if spec is None or spec.virtual:
                self._set(ctx, spec.name if spec is not None else text, text, spec is not None)
                continue
            found = per_name.get(spec.name)
            if found is None:
                per_name[spec.name] = [spec]
            else:
                found.append(spec)
        for name, specs in per_name.items():
            kept_groups = self._kept_versions(ctx.subdirs, name, decisions, dropped)
            found_texts = by_name.get(name)
            if found_texts is None:
                found_texts = by_name[name] = []
            for spec in specs:
                text, version_spec, build = spec.text, spec.version, spec.build
                ok = False
                for version, kept, records in kept_groups:
                    if version_spec is not None and (version is None or not version_spec.matches(version)):
                        continue
                    if build is None or any(build(records[i].build) for i in kept):
                        ok = True
                        break
                if text not in sat:
                    found_texts.append(text)
                sat[text] = ok
                if ok:
                    unmet.discard(text)
                else:
                    unmet.add(text)

    @staticmethod
    def _set(ctx: _Context, name: str, text: str, ok: bool) -> None:
        if text not in ctx.sat:
            ctx.by_name.setdefault(name, []).append(text)
        ctx.sat[text] = ok
        if ok:
            ctx.unmet.discard(text)
        else:
            ctx.unmet.add(text)

    def _dropped_names(self, decisions: Decisions) -> dict[str, set[str]]:
        """Per subdir, the names with at least one dropped record (the others are kept whole)."""
        out = {}
        for subdir, index in self.indexes.items():
            dropped = map(not_, map(_INCLUDED, decisions[subdir]))
            out[subdir] = set(map(_NAME, compress(index.records, dropped)))
        return out

    def _kept_versions(
        self, subdirs: tuple[str, ...], name: str, decisions: Decisions, dropped: Mapping[str, set[str]]
    ) -> list[tuple[Version | None, list[int], Sequence[Record]]]:
        """(version, kept record indices, records) of `name` over `subdirs`, mostly newest first."""
        out = []
        for subdir in subdirs:
            index = self.indexes.get(subdir)
            if index is None or name not in index:  # not here, or held by the other half
                continue
            records = index.records
            if name in dropped[subdir]:
                pick = decisions[subdir].__getitem__
                for version, indices in index.groups(name):
                    kept = list(compress(indices, map(_INCLUDED, map(pick, indices))))
                    if kept:
                        out.append((version, kept, records))
            else:
                out.extend((version, indices, records) for version, indices in index.groups(name))
        return out

    def _scan(self, subdir: str, specs: set[str], decisions: Decisions) -> list[int]:
        """Kept records of `subdir` that name one of `specs`: through the dependents index for a
        few specs, else one pass over every record in C (a set test per record, nothing else)."""
        depends, own = self.indexes[subdir].depends, decisions[subdir]
        dependents = self._dependents.get(subdir)
        if dependents is not None and len(specs) < 1000:
            hits = list(set(chain.from_iterable(map(dependents.get, specs, repeat(())))))
            return list(compress(hits, map(_INCLUDED, map(own.__getitem__, hits))))
        # kept (True) and naming one of them (isdisjoint False): True > False
        named = map(gt, map(_INCLUDED, own), map(specs.isdisjoint, depends))
        return list(compress(range(len(depends)), named))

    def _count_named(self, subdir: str, decisions: Decisions) -> Counter[str]:
        kept = map(_INCLUDED, decisions[subdir])
        return Counter(chain.from_iterable(compress(self.indexes[subdir].depends, kept)))

    def index_dependents(self) -> None:
        """Index which records name each spec, so that `update` finds a newly unmet spec's
        dependents without a pass over every record (0.1 s at 500,000 records).
        Building it costs a few tenths of a second: for a console, worth doing once in the
        background; `update` keeps them current."""
        for subdir, index in self.indexes.items():
            if subdir in self._dependents:
                continue
            dependents: dict[str, list[int]] = {}
            for i, depends in enumerate(index.depends):
                for text in depends:
                    found = dependents.get(text)
                    if found is None:
                        dependents[text] = [i]
                    else:
                        found.append(i)
            self._dependents[subdir] = dependents

    # ---- why: grouped by the entry (or step) that dropped what a spec needs

    def _forget_causes(self, names: set[str]) -> None:
        """Drop the causes found for specs of `names` (the records a cause comes from are
        records of the spec's name): the others stay, so a toggle re-asks only its own."""
        if not names:
            return
        stale = [key for key in self._causes if (spec := parse_dep(key[1])) is None or spec.name in names]
        for key in stale:
            del self._causes[key]

    def causes(self, subdir: str, spec_text: str, decisions: Decisions) -> list[str]:
        """The causes of an unmet spec: the drops of every record it matches, or that none exists."""
        key = (self._key[subdir], spec_text)
        found = self._causes.get(key)
        if found is not None:
            return found
        if parse_dep(spec_text) is None:
            found = [UNREADABLE_CAUSE]
        else:
            causes = self._drop_causes(spec_text, self.contexts[subdir], decisions)
            causes.update(self._causes_elsewhere.get(spec_text, ()))
            found = sorted(causes) or [UPSTREAM_CAUSE]
        self._causes[key] = found
        return found

    def _drop_causes(self, spec_text: str, subdirs: Iterable[str], decisions: Decisions) -> set[str]:
        """What dropped the records of `subdirs` held here that `spec_text` matches."""
        spec = parse_dep(spec_text)
        if spec is None:
            return set()
        matched: dict[int, Decision] = {}  # a few shared objects: each one's cause is asked once
        for t in subdirs:
            index = self.indexes.get(t)
            if index is not None:
                picked = list(map(decisions[t].__getitem__, index.matching(spec)))
                matched.update(zip(map(id, picked), picked))
        return {d.cause for d in matched.values() if not d.included}

    def groups(self, subdir: str, decisions: Decisions) -> list[BrokenGroup]:
        """The broken records of `subdir` grouped by cause, the largest group first.

        The causes are found once per distinct unmet spec. With one cause, its group is every
        broken record; with several, one pass in C counts the records per set of unmet specs,
        and each group's files are listed only when asked.
        """
        broken = self._broken[subdir]
        if not broken:
            return []
        counts = self.spec_counts(subdir)
        specs_of: dict[str, list[str]] = {}
        for text in counts:
            for cause in self.causes(subdir, text, decisions):
                specs_of.setdefault(cause, []).append(text)
        records = self.indexes[subdir].records
        depends = self.indexes[subdir].depends
        members = sorted(broken)

        def files_of(specs: set[str] | None) -> Callable[[], Iterator[str]]:
            def files() -> Iterator[str]:
                if specs is None:  # every broken record
                    return map(_FN, map(records.__getitem__, members))
                named = map(not_, map(specs.isdisjoint, map(depends.__getitem__, members)))
                return map(_FN, map(records.__getitem__, compress(members, named)))

            return files

        if len(specs_of) == 1:
            sizes = dict.fromkeys(specs_of, len(members))
        else:  # records per cause: from the records per distinct tuple of unmet specs
            view = self.broken(subdir)
            shapes = Counter(map(tuple, view.lists(members)))
            sizes = dict.fromkeys(specs_of, 0)
            for shape, n in shapes.items():
                for cause in {c for text in shape for c in self.causes(subdir, text, decisions)}:
                    sizes[cause] += n
        groups = [
            BrokenGroup(
                cause,
                sizes[cause],
                sorted(texts, key=lambda t: (-counts[t], t)),
                files_of(None if sizes[cause] == len(members) else set(texts)),
            )
            for cause, texts in specs_of.items()
        ]
        groups.sort(key=lambda g: (-g.records, g.cause))
        return groups
