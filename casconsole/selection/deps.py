"""Dependencies between records: what a `depends` spec matches, and closures.

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
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING

from casconsole.conda.repodata import Record

if TYPE_CHECKING:  # rattler is imported where a spec or version is first parsed: a sync whose
    # settings name no versions never loads it (a no-op sync's budget is 0.3 s, its import 0.03-0.04)
    from rattler import Version, VersionSpec

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
PARSED_SPECS: dict[str, DepSpec | None] = {}
_UNSEEN = object()


def _version_spec(text: str | None) -> VersionSpec | None:
    if text is None or text in ("", "*"):
        return None
    try:
        return _version_specs[text]
    except KeyError:
        pass
    from rattler import VersionSpec

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
    spec = PARSED_SPECS.get(text, _UNSEEN)  # (a KeyError raised per new spec cost a fifth)
    if spec is not _UNSEEN:
        return spec  # type: ignore[return-value]
    try:
        spec = _parse_fast(text) or _parse_matchspec(text)
    except Exception:  # rattler raises its own types for a spec it cannot read
        spec = None
    PARSED_SPECS[text] = spec
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
    from rattler import MatchSpec

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

    Built in one pass by name; a name's records are grouped by version, and the versions parsed
    and sorted, the first time they are asked (dependency specs name a quarter to a half of a
    conda-forge-shaped subdir's records: grouping all of them up front cost twice the pass).
    """

    def __init__(self, subdir: str, records: Sequence[Record]):
        self.subdir = subdir
        self.records = records
        by_name: dict[str, list[int]] = {}
        for i, rec in enumerate(records):
            found = by_name.get(rec.name)
            if found is None:
                by_name[rec.name] = [i]
            else:
                found.append(i)
        self._by_name = by_name
        self._nested: dict[str, dict[str, list[int]]] = {}  # name -> version -> indices, as asked
        self._groups: dict[str, list[tuple[Version | None, list[int]]]] = {}
        self._versions: dict[str, list[_VersionGroup]] = {}
        self._matching: dict[str, list[int]] = {}
        self._depends: list[list[str]] | None = None

    def __contains__(self, name: str) -> bool:
        return name in self._by_name

    @property
    def names(self) -> Iterable[str]:
        return self._by_name.keys()

    def _versions_of(self, name: str) -> dict[str, list[int]]:
        """The records called `name` by version string, in upstream's order."""
        found = self._nested.get(name)
        if found is None:
            found = self._nested[name] = {}
            records = self.records
            for i in self._by_name.get(name, ()):
                group = found.get(records[i].version)
                if group is None:
                    found[records[i].version] = [i]
                else:
                    group.append(i)
        return found

    def indices(self, name: str) -> list[int]:
        """The records called `name`."""
        return [i for group in self._versions_of(name).values() for i in group]

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
            versions = self._versions_of(name)
            found = self._groups[name] = [(_version(text), versions[text]) for text in reversed(versions)]
        return found

    def versions(self, name: str) -> list[_VersionGroup]:
        """The versions of `name` in this subdir, newest first (conda's order), with their records."""
        groups = self._versions.get(name)
        if groups is not None:
            return groups
        readable, unreadable = [], []
        for text, indices in self._versions_of(name).items():
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
        for name in self._by_name:
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
    from rattler import Version

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
