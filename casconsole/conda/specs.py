"""Blacklist and whitelist entries: package names (`flask`), name globs (`r-*`) or conda match
specs (`numpy <1.20`), parsed once and matched against repodata records.

Names are looked up in a dict and globs resolved once per distinct name, so an entry costs
nothing for the records it cannot match; conda's version semantics (py-rattler) are only
consulted for records whose name an entry with a version or build part names.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from casconsole.conda.repodata import Record

if TYPE_CHECKING:  # imported where an entry's version part is parsed: most entries are names
    from rattler import MatchSpec, PackageRecord

_NAME_PART = re.compile(r"^\s*([A-Za-z0-9_.\-*?\[\]]+)\s*(.*)$")


class EntryError(ValueError):
    """A blacklist or whitelist entry that is not a name, glob or match spec."""


@dataclass(frozen=True)
class Entry:
    """One blacklist or whitelist entry, parsed once."""

    text: str
    name: str  # exact name, or a glob when `is_glob`
    is_glob: bool
    rest: str  # version and build part, empty for a plain name or glob

    @classmethod
    def parse(cls, text: str) -> Entry:
        match = _NAME_PART.match(text)
        if not match:
            raise EntryError(f"{text!r} is not a package name, glob or match spec")
        name, rest = match.group(1), match.group(2).strip()
        is_glob = any(c in name for c in "*?[")
        entry = cls(text.strip(), name.lower(), is_glob, rest)
        if rest:
            # parse now so that a bad spec is reported with the settings, not mid-plan
            entry.spec_for("x" if is_glob else entry.name)
        return entry

    def spec_for(self, name: str) -> MatchSpec:
        """The match spec for records called `name` (a glob entry is applied per name)."""
        from rattler import MatchSpec
        from rattler.exceptions import InvalidMatchSpecError

        try:
            return MatchSpec(f"{name} {self.rest}")
        except InvalidMatchSpecError as exc:
            raise EntryError(f"{self.text!r} is not a valid match spec: {exc}") from exc


def _package_record(rec: Record) -> PackageRecord | None:
    from rattler import BuildString, PackageRecord

    try:
        return PackageRecord(
            rec.name, rec.version, BuildString(rec.build), rec.build_number, rec.subdir or "noarch"
        )
    except Exception:  # rattler raises its own exception types for an unparsable version
        return None


class EntryList:
    """Entries of one list, asked one question: which entry (if any) matches this record?"""

    def __init__(self, texts: Iterable[str]):
        self.entries = [Entry.parse(t) for t in texts]
        self._exact: dict[str, list[Entry]] = {}
        self._globs: list[tuple[re.Pattern[str], Entry]] = []
        for entry in self.entries:
            if entry.is_glob:
                self._globs.append((re.compile(fnmatch.translate(entry.name)), entry))
            else:
                self._exact.setdefault(entry.name, []).append(entry)
        self._per_name: dict[str, tuple[Entry, ...]] = {}
        self._specs: dict[tuple[str, str], MatchSpec] = {}

    def __bool__(self) -> bool:
        return bool(self.entries)

    def candidates(self, name: str) -> tuple[Entry, ...]:
        """Entries whose name part matches `name`, resolved once per distinct name."""
        found = self._per_name.get(name)
        if found is None:
            found = tuple(self._exact.get(name, ())) + tuple(
                entry for pattern, entry in self._globs if pattern.match(name)
            )
            self._per_name[name] = found
        return found

    def match(self, rec: Record) -> Entry | None:
        candidates = self.candidates(rec.name)
        if not candidates:
            return None
        prec: PackageRecord | None = None
        for entry in candidates:
            if not entry.rest:
                return entry
            key = (entry.text, rec.name)
            spec = self._specs.get(key)
            if spec is None:
                spec = self._specs[key] = entry.spec_for(rec.name)
            if prec is None:
                prec = _package_record(rec)
                if prec is None:
                    return None
            if spec.matches(prec):
                return entry
        return None
