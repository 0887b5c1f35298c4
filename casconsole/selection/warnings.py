"""What a plan warns the administrator of, before a sync: blacklist and whitelist entries that
match no upstream record, and the prune guard's rule (also the sync's)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from casconsole.conda.repodata import Record
from casconsole.conda.specs import EntryList
from casconsole.selection.deps import SubdirIndex


def prune_exceeds(deleting: int, on_disk: int, max_prune: float) -> bool:
    """Would deleting `deleting` of a subdir's `on_disk` files go past `max_prune` (a share)?
    The prune guard's one rule, for the dry run and the sync alike."""
    return deleting > 0 and deleting > max_prune * on_disk


def percent(share: float) -> str:
    return f"{share * 100:.3g}%"


Subdirs = Sequence[tuple[SubdirIndex, Sequence[Record]]]


def matching_nothing(texts: Iterable[str], subdirs: Subdirs) -> list[str]:
    """The entries of `texts` (a blacklist or whitelist) that match no record of any subdir,
    each subdir given as (its index by name, its records).

    A plain name is one dict lookup a subdir; a glob is compared with each distinct name; an
    entry with a version part stops at the first record it matches.
    """
    return [text for text in texts if not _matches_any(text, subdirs)]


def _matches_any(text: str, subdirs: Subdirs) -> bool:
    entries = EntryList([text])
    entry = entries.entries[0]
    for index, records in subdirs:
        if entry.is_glob:
            names = [name for name in index.names if entries.candidates(name)]
        else:
            names = [entry.name] if entry.name in index else []
        if any(entries.match(records[i]) is not None for name in names for i in index.indices(name)):
            return True
    return False
