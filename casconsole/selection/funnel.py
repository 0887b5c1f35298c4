"""A subdir's funnel: how many records each step of the selection dropped or added back, and
what is left to download, keep and delete."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from casconsole.selection.filters import Decision


@dataclass
class Funnel:
    """The counts of one subdir's selection, in the order the steps apply.

    kept = upstream - dropped_license - dropped_blacklist - dropped_newest - dropped_curated
           + added_whitelist + added_closure
    A record counts under the first step that dropped it, and under the whitelist (or the
    closure) too when that added it back. `broken` counts kept records with unmet dependencies.
    """

    upstream: int = 0
    dropped_license: int = 0
    dropped_blacklist: int = 0
    added_whitelist: int = 0
    kept: int = 0
    download: int = 0
    download_bytes: int = 0
    present: int = 0
    delete: int = 0
    dropped_newest: int = 0
    dropped_curated: int = 0
    added_closure: int = 0
    broken: int = 0

    def add(self, other: Funnel, sign: int = 1) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + sign * getattr(other, f.name))


DROPPED_BY = {
    "license_blacklist": "dropped_license",
    "blacklist": "dropped_blacklist",
    "newest_versions": "dropped_newest",
    "curated": "dropped_curated",
}
ADDED_BY = {"whitelist": "added_whitelist", "closure": "added_closure"}


def contribution(decision: Decision, present: bool, size: int) -> Funnel:
    """What one record adds to the funnel (the delete count is the subdir's, not a record's)."""
    f = Funnel(upstream=1)
    drop = decision if not decision.included else decision.overrides
    if drop is not None:
        setattr(f, DROPPED_BY.get(drop.step, "dropped_blacklist"), 1)
        if decision.included:
            setattr(f, ADDED_BY.get(decision.step, "added_whitelist"), 1)
    if decision.included:
        f.kept = 1
        if present:
            f.present = 1
        else:
            f.download = 1
            f.download_bytes = size
    return f
