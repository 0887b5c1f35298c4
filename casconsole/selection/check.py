"""The broken-dependency check: kept records whose `depends` no kept record satisfies, grouped
by the entry (or step) that dropped what they need."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, compress
from operator import attrgetter, not_

from rattler import Version

from casconsole.conda.repodata import Record
from casconsole.selection.deps import PARSED_SPECS, DepSpec, SubdirIndex, contexts, parse_dep
from casconsole.selection.filters import Decision

UPSTREAM_CAUSE = "upstream (no record matches)"
UNREADABLE_CAUSE = "upstream (not a readable match spec)"


@dataclass
class BrokenGroup:
    """Kept records of one subdir left with unmet dependencies by one cause (an entry or step)."""

    cause: str  # e.g. "blacklist: readline", "license_blacklist: GPL", or UPSTREAM_CAUSE
    files: list[str]  # the kept records' file names, sorted
    specs: list[str]  # the unmet dependency specs, most needed first

    @property
    def summary(self) -> str:
        shown = ", ".join(self.specs[:4])
        if len(self.specs) > 4:
            shown += f", ... ({len(self.specs)} specs)"
        n = len(self.files)
        return f"{self.cause} leaves {n:,} record{'s' if n != 1 else ''} with unmet dependencies: {shown}"

    def to_json(self) -> dict:
        return {"cause": self.cause, "records": len(self.files), "specs": self.specs, "files": self.files}


@dataclass
class _Context:
    """The specs needed within one set of subdirs, and whether a kept record there meets each."""

    subdirs: tuple[str, ...]
    sat: dict[str, bool] = field(default_factory=dict)  # spec text -> met by a kept record
    by_name: dict[str, list[str]] = field(default_factory=dict)  # dependency name -> its spec texts
    unmet: set[str] = field(default_factory=set)


Decisions = Mapping[str, Sequence[Decision]]


def _included(decisions: Sequence[Decision]) -> Iterable[bool]:
    return map(_INCLUDED, decisions)


_INCLUDED = attrgetter("included")


class DependencyCheck:
    """Which kept records have a `depends` entry that no kept record satisfies.

    `run` checks everything; `update` re-checks after records changed between kept and dropped,
    re-evaluating only the specs that name those records and, when a spec turns unmet, making
    one pass over the records of the subdirs that may depend on it. Subdirs whose records look
    for dependencies in the same set of subdirs (with one platform: linux-64 and noarch) share
    their spec evaluations.
    """

    def __init__(self, indexes: Mapping[str, SubdirIndex]):
        self.indexes = dict(indexes)
        self.contexts = contexts(self.indexes)
        keys = {subdir: frozenset(ctx) for subdir, ctx in self.contexts.items()}
        self._ctx: dict[frozenset[str], _Context] = {}
        for subdir, key in keys.items():
            self._ctx.setdefault(key, _Context(self.contexts[subdir]))
        self._key = keys
        self.broken_by_subdir: dict[str, dict[int, list[str]]] = {s: {} for s in self.indexes}
        self._dropped: dict[str, set[str]] = {s: set() for s in self.indexes}
        self._dependents: dict[str, dict[str, list[int]]] = {}  # see index_dependents
        self._causes: dict[tuple[str, str], list[str]] = {}

    # ---- the answers

    def broken(self, subdir: str) -> dict[int, list[str]]:
        """Record index -> the specs of its `depends` that no kept record satisfies."""
        return self.broken_by_subdir[subdir]

    def met(self, subdir: str, spec_text: str) -> bool | None:
        """Whether a kept record meets `spec_text` for `subdir`'s records (None: never asked)."""
        return self._ctx[self._key[subdir]].sat.get(spec_text)

    # ---- computing them

    def run(self, decisions: Decisions) -> None:
        self._causes.clear()
        needed: dict[frozenset[str], set[str]] = {key: set() for key in self._ctx}
        for subdir, index in self.indexes.items():
            kept = _included(decisions[subdir])
            needed[self._key[subdir]].update(chain.from_iterable(compress(index.depends, kept)))
        self._dropped = self._dropped_names(decisions)
        for key, ctx in self._ctx.items():
            ctx.sat, ctx.by_name, ctx.unmet = {}, {}, set()
            self._evaluate(ctx, needed[key], decisions, self._dropped)
        for subdir in self.indexes:
            unmet = self._ctx[self._key[subdir]].unmet
            self.broken_by_subdir[subdir] = self._scan(subdir, unmet, unmet, decisions) if unmet else {}

    def update(self, decisions: Decisions, flipped: Mapping[str, Iterable[int]]) -> None:
        """Re-check after the records at `flipped` (subdir -> indices) went from kept to dropped or back."""
        flipped = {s: list(v) for s, v in flipped.items() if v}
        if not flipped:
            return
        self._causes.clear()
        names = {self.indexes[s].records[i].name for s, indices in flipped.items() for i in indices}
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
            ctx, broken = self._ctx[key], self.broken_by_subdir[subdir]
            own, depends = decisions[subdir], index.depends
            mine = flipped.get(subdir, ())
            if mine:  # records that changed: check their own dependencies
                new = {t for i in mine if own[i].included for t in depends[i] if t not in ctx.sat}
                self._evaluate(ctx, new, decisions, self._dropped)
                for i in mine:
                    unmet = [t for t in depends[i] if not ctx.sat[t]] if own[i].included else None
                    if unmet:
                        broken[i] = unmet
                    else:
                        broken.pop(i, None)
            met = newly_met.get(key)
            if met:
                for i, specs in list(broken.items()):
                    if not met.isdisjoint(specs):
                        left = [t for t in specs if t in ctx.unmet]
                        if left:
                            broken[i] = left
                        else:
                            del broken[i]
            unmet = newly_unmet.get(key)
            if unmet:
                broken.update(self._scan(subdir, unmet, ctx.unmet, decisions))

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
                    found_texts = by_name.get(name)
                    if found_texts is None:
                        by_name[name] = [text]
                    else:
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

    def _dropped_names(
        self, decisions: Decisions, subdirs: Iterable[str] | None = None
    ) -> dict[str, set[str]]:
        """Per subdir, the names with at least one dropped record (the others are kept whole)."""
        out = {}
        for subdir in self.indexes if subdirs is None else subdirs:
            records = self.indexes[subdir].records
            out[subdir] = {records[i].name for i, d in enumerate(decisions[subdir]) if not d.included}
        return out

    def _kept_versions(
        self, subdirs: tuple[str, ...], name: str, decisions: Decisions, dropped: Mapping[str, set[str]]
    ) -> list[tuple[Version | None, list[int], Sequence[Record]]]:
        """(version, kept record indices, records) of `name` over `subdirs`, mostly newest first."""
        out = []
        for subdir in subdirs:
            index = self.indexes[subdir]
            if name not in index:
                continue
            records = index.records
            if name in dropped[subdir]:
                own = decisions[subdir]
                for version, indices in index.groups(name):
                    kept = [i for i in indices if own[i].included]
                    if kept:
                        out.append((version, kept, records))
            else:
                out.extend((version, indices, records) for version, indices in index.groups(name))
        return out

    def _scan(
        self, subdir: str, specs: set[str], unmet: set[str], decisions: Decisions
    ) -> dict[int, list[str]]:
        """Kept records of `subdir` that depend on one of `specs`, with all their unmet specs."""
        depends, own = self.indexes[subdir].depends, decisions[subdir]
        dependents = self._dependents.get(subdir)
        if dependents is not None and len(specs) < 1000:
            hits: Iterable[int] = {i for t in specs for i in dependents.get(t, ())}
        else:  # one pass over every record, in C: a set test per record, nothing else
            hits = compress(range(len(depends)), map(not_, map(specs.isdisjoint, depends)))
        return {i: [t for t in depends[i] if t in unmet] for i in hits if own[i].included}

    def index_dependents(self) -> None:
        """Index which records name each spec, so that `update` finds a newly unmet spec's
        dependents without a pass over every record (0.1 s at 500,000 records). Building it
        costs a few tenths of a second: for a console, worth doing once in the background."""
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

    def causes(self, subdir: str, spec_text: str, decisions: Decisions) -> list[str]:
        """The causes of an unmet spec: the drops of every record it matches, or that none exists."""
        key = (subdir, spec_text)
        found = self._causes.get(key)
        if found is not None:
            return found
        spec = parse_dep(spec_text)
        if spec is None:
            found = [UNREADABLE_CAUSE]
        else:
            causes = {
                decisions[t][j].cause
                for t in self.contexts[subdir]
                for j in self.indexes[t].matching(spec)
                if not decisions[t][j].included
            }
            found = sorted(causes) or [UPSTREAM_CAUSE]
        self._causes[key] = found
        return found

    def groups(self, subdir: str, decisions: Decisions) -> list[BrokenGroup]:
        """The broken records of `subdir` grouped by cause, the largest group first."""
        files: dict[str, set[str]] = {}
        specs: dict[str, dict[str, int]] = {}
        records = self.indexes[subdir].records
        for i, unmet in self.broken_by_subdir[subdir].items():
            fn = records[i].fn
            for text in unmet:
                for cause in self.causes(subdir, text, decisions):
                    files.setdefault(cause, set()).add(fn)
                    counts = specs.setdefault(cause, {})
                    counts[text] = counts.get(text, 0) + 1
        groups = [
            BrokenGroup(cause, sorted(fns), sorted(specs[cause], key=lambda t: (-specs[cause][t], t)))
            for cause, fns in files.items()
        ]
        groups.sort(key=lambda g: (-len(g.files), g.cause))
        return groups
