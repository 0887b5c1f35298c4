"""Dependencies between records: what a `depends` spec matches, closures, and the broken check.

A dependency spec names its package first, so resolving one is a dict lookup by name plus
version checks for that name's versions only. Versions are parsed once per distinct (name,
version) of a subdir and kept newest first in conda's order (py-rattler's `Version`); a spec's
version part is one py-rattler `VersionSpec`, cached by its text. No `PackageRecord` is built.

Where a record looks for its dependencies: a platform subdir's records in that subdir and
`noarch`; a `noarch` record in `noarch` and every platform subdir of the plan (it is usable
wherever its dependencies can be had). Virtual packages (`__glibc`, `__unix`, ...) are provided
by the client machine and always count as met.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain, compress
from operator import attrgetter, not_

from rattler import MatchSpec, Version, VersionSpec

from casconsole.conda.repodata import Record
from casconsole.selection.filters import Decision

# ---------------------------------------------------------------- dependency specs

# `name`, `name version`, `name version build`: the forms conda-build writes, read without rattler
_FAST = re.compile(r"([A-Za-z0-9_.\-]+)(?: +([^\s\[\]():'\"]+))?(?: +([^\s\[\]():'\"]+))?")
_OPERATOR_END = ("<", ">", "=", "!", "~", ",", "|")


class DepSpec:
    """A `depends` entry parsed once: the name it needs and what its versions and builds must be."""

    __slots__ = ("build", "name", "text", "version", "virtual")

    def __init__(
        self,
        text: str,
        name: str,
        version: VersionSpec | None,  # None: any version
        build: Callable[[str], object] | None,  # None: any build
        virtual: bool = False,  # a virtual package (`__glibc`): the client machine provides it
    ):
        self.text, self.name, self.version, self.build, self.virtual = text, name, version, build, virtual

    def __repr__(self) -> str:
        return f"DepSpec({self.text!r})"

    def accepts(self, version: Version | None) -> bool:
        return self.version is None or (version is not None and self.version.matches(version))


_version_specs: dict[str, VersionSpec | None] = {}
_build_matchers: dict[str, Callable[[str], object] | None] = {}
_specs: dict[str, DepSpec | None] = {}


def _version_spec(text: str | None) -> VersionSpec | None:
    if text is None or text in ("", "*"):
        return None
    try:
        return _version_specs[text]
    except KeyError:
        pass
    spec = _version_specs[text] = VersionSpec(text)  # raises for a bad spec: the caller decides
    return spec


def _build_matcher(text: str | None) -> Callable[[str], object] | None:
    """rattler's build matching: `^...$` a regex, `*` / `?` a glob, anything else exact."""
    if text is None or text in ("", "*"):
        return None
    try:
        return _build_matchers[text]
    except KeyError:
        pass
    if text.startswith("^") and text.endswith("$"):
        matcher: Callable[[str], object] = re.compile(text).match
    elif any(c in text for c in "*?["):
        matcher = re.compile(fnmatch.translate(text)).match
    else:
        matcher = text.__eq__
    _build_matchers[text] = matcher
    return matcher


def parse_dep(text: str) -> DepSpec | None:
    """The parsed form of a `depends` entry, or None when it is not a readable match spec."""
    try:
        return _specs[text]
    except KeyError:
        pass
    try:
        spec = _parse_fast(text) or _parse_matchspec(text)
    except Exception:  # rattler raises its own types for a spec it cannot read
        spec = None
    _specs[text] = spec
    return spec


def _parse_fast(text: str) -> DepSpec | None:
    match = _FAST.fullmatch(text)
    if match is None:
        return None  # brackets, channels, `python >= 3.8`: rattler reads those
    name, version, build = match.groups()
    if "::" in text:
        return None
    name = name.lower()
    if name.startswith("__"):
        return DepSpec(text, name, None, None, virtual=True)
    if version is not None and (version.endswith(_OPERATOR_END) or version[0] in ",|"):
        return None  # an operator split from its version
    if build is not None and (build[0] in "<>=!~,|" or build.endswith(_OPERATOR_END)):
        return None
    return DepSpec(text, name, _version_spec(version), _build_matcher(build))


def _parse_matchspec(text: str) -> DepSpec:
    ms = MatchSpec(text)
    name = ms.name.normalized if ms.name is not None else text.split()[0].lower()
    if name.startswith("__"):
        return DepSpec(text, name, None, None, virtual=True)
    return DepSpec(text, name, _version_spec(ms.version), _build_matcher(ms.build))


# ---------------------------------------------------------------- one subdir's records by name


@dataclass(slots=True)
class _VersionGroup:
    version: Version | None  # None: a version string conda cannot read
    text: str
    indices: list[int]


class SubdirIndex:
    """The records of one upstream subdir by name and version; each name's versions newest first.

    Built in one pass; a name's versions are parsed and sorted the first time they are asked.
    """

    def __init__(self, subdir: str, records: Sequence[Record]):
        self.subdir = subdir
        self.records = records
        nested: dict[str, dict[str, list[int]]] = {}
        for i, rec in enumerate(records):
            versions = nested.get(rec.name)
            if versions is None:
                nested[rec.name] = {rec.version: [i]}
            else:
                group = versions.get(rec.version)
                if group is None:
                    versions[rec.version] = [i]
                else:
                    group.append(i)
        self._nested = nested
        self._groups: dict[str, list[tuple[Version | None, list[int]]]] = {}
        self._versions: dict[str, list[_VersionGroup]] = {}
        self._matching: dict[str, list[int]] = {}
        self._depends: list[list[str]] | None = None

    def __contains__(self, name: str) -> bool:
        return name in self._nested

    @property
    def names(self) -> Iterable[str]:
        return self._nested.keys()

    def indices(self, name: str) -> list[int]:
        """The records called `name`."""
        return [i for group in self._nested.get(name, {}).values() for i in group]

    @property
    def depends(self) -> list[list[str]]:
        """Each record's `depends`, in record order."""
        if self._depends is None:
            self._depends = [rec.depends or [] for rec in self.records]
        return self._depends

    def groups(self, name: str) -> list[tuple[Version | None, list[int]]]:
        """(version, record indices) of `name`, in reverse upstream order: mostly newest first.

        Upstream lists records by file name, so a `>=` spec usually matches the first version
        tried; the exact order only matters for speed. None stands for an unreadable version.
        """
        found = self._groups.get(name)
        if found is None:
            versions = self._nested.get(name, {})
            found = self._groups[name] = [(_version(text), versions[text]) for text in reversed(versions)]
        return found

    def versions(self, name: str) -> list[_VersionGroup]:
        """The versions of `name` in this subdir, newest first (conda's order), with their records."""
        groups = self._versions.get(name)
        if groups is not None:
            return groups
        readable, unreadable = [], []
        for text, indices in self._nested.get(name, {}).items():
            version = _version(text)
            (readable if version is not None else unreadable).append(_VersionGroup(version, text, indices))
        readable.sort(key=_group_version, reverse=True)
        groups = self._versions[name] = readable + unreadable
        return groups

    def matching(self, spec: DepSpec) -> list[int]:
        """Every record of this subdir that `spec` matches, whatever the selection said."""
        found = self._matching.get(spec.text)
        if found is not None:
            return found
        found = []
        records, build, version_spec = self.records, spec.build, spec.version
        for version, indices in self.groups(spec.name):
            if version_spec is not None and (version is None or not version_spec.matches(version)):
                continue
            if build is None:
                found.extend(indices)
            else:
                found.extend(i for i in indices if build(records[i].build))
        self._matching[spec.text] = found
        return found

    def ranks(self) -> list[int]:
        """For each record, how many distinct versions of its name this subdir has that are newer."""
        ranks = [0] * len(self.records)
        for name in self._nested:
            rank, previous = -1, None
            for group in self.versions(name):
                if group.version is None or previous is None or group.version != previous:
                    rank += 1
                previous = group.version
                for i in group.indices:
                    ranks[i] = rank
        return ranks


def _group_version(group: _VersionGroup) -> Version:
    return group.version  # type: ignore[return-value]  # only readable groups are sorted


_parsed_versions: dict[str, Version | None] = {}


def _version(text: str) -> Version | None:
    try:
        return _parsed_versions[text]
    except KeyError:
        pass
    try:
        version: Version | None = Version(text)
    except Exception:  # an unreadable version string sorts last and matches no version spec
        version = None
    _parsed_versions[text] = version
    return version


# ---------------------------------------------------------------- where dependencies are looked for


def contexts(subdirs: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """For each subdir, the subdirs its records' dependencies may come from (itself first)."""
    subdirs = list(subdirs)
    platforms = [s for s in subdirs if s != "noarch"]
    out = {s: (s, "noarch") if "noarch" in subdirs else (s,) for s in platforms}
    if "noarch" in subdirs:
        out["noarch"] = ("noarch", *platforms)
    return out


# ---------------------------------------------------------------- the closure


class Closure:
    """The dependency closure of whitelist entries, each record credited to the first entry
    (in whitelist order) whose closure holds it.

    All records a spec matches are taken (any of them may be what a client's solver picks). A
    platform's records are followed into that platform and `noarch`; `noarch` roots are
    followed once with each platform subdir. Entries are added in order and share one walk:
    what an earlier entry reached (and every spec it expanded) is not walked again, which gives
    the same credit as walking each entry alone at the cost of one walk. Adding an entry at the
    end (a console toggle) walks only what is new.
    """

    def __init__(self, indexes: Mapping[str, SubdirIndex]):
        self.indexes = indexes
        platforms = [s for s in indexes if s != "noarch"]
        self.pairs = [(p, "noarch") if "noarch" in indexes else (p,) for p in platforms] or [("noarch",)]
        self.entries: list[str] = []
        # per pair: subdir -> record index -> entry; and the specs already expanded
        self._seen = [{s: {} for s in pair} for pair in self.pairs]
        self._expanded: list[set[str]] = [set() for _ in self.pairs]

    def add(self, entry: str, roots: Mapping[str, Iterable[int]]) -> None:
        """Walk from `roots` (subdir -> record indices, the records `entry` matches)."""
        self.entries.append(entry)
        indexes = self.indexes
        for pair, seen, expanded in zip(self.pairs, self._seen, self._expanded):
            todo: dict[str, list[int]] = {}
            for s in pair:
                new = set(roots.get(s, ())).difference(seen[s])
                seen[s].update(dict.fromkeys(new, entry))
                todo[s] = list(new)
            while any(todo.values()):  # in waves: each wave's new specs, then their new matches
                for s in pair:
                    wave, todo[s] = todo[s], []
                    depends = indexes[s].depends
                    texts = set(chain.from_iterable(depends[i] for i in wave))
                    texts -= expanded
                    expanded |= texts
                    for text in texts:
                        spec = parse_dep(text)
                        if spec is None or spec.virtual:
                            continue
                        for t in pair:
                            matches = indexes[t].matching(spec)
                            if matches:
                                new = set(matches).difference(seen[t])
                                if new:
                                    seen[t].update(dict.fromkeys(new, entry))
                                    todo[t].extend(new)

    def maps(self) -> dict[str, dict[int, str]]:
        """Per subdir, record index -> the entry credited with it (the earliest over all pairs)."""
        order: dict[str, int] = {}
        for n, entry in enumerate(self.entries):
            order.setdefault(entry, n)
        out: dict[str, dict[int, str]] = {s: {} for s in self.indexes}
        for seen in self._seen:
            for s, credited in seen.items():
                taken = out[s]
                if not taken:
                    taken.update(credited)
                    continue
                for i, entry in credited.items():
                    have = taken.get(i)
                    if have is None or order[entry] < order[have]:
                        taken[i] = entry
        return out


def closure(indexes: Mapping[str, SubdirIndex], roots: Mapping[str, Iterable[int]]) -> dict[str, set[int]]:
    """Every record reachable from `roots` (subdir -> record indices) through `depends`."""
    walk = Closure(indexes)
    walk.add("", roots)
    return {s: set(credited) for s, credited in walk.maps().items()}


# ---------------------------------------------------------------- the broken-dependency check

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
            spec = _specs[text] if text in _specs else parse_dep(text)
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
