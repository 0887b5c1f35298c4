"""The dry run: the plan a sync would carry out, with nothing written to the mirror."""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING

from casconsole.settings import Settings
from casconsole.upstream.repodata import fetch_upstream

if TYPE_CHECKING:
    from casconsole.selection.check import Elsewhere
    from casconsole.selection.plan import Plan

# imported while the first repodata is fetched and decompressed (which release the GIL)
_SELECTION = ("casconsole.selection.plan", "rattler")


def make_plan(
    settings: Settings,
    check: bool = True,
    subdirs: list[str] | None = None,
    elsewhere: Elsewhere | None = None,
) -> Plan:
    """Fetch upstream (through the mirror's cache, as the sync does) and decide every record;
    the dependency check too, unless `check` is false. A platform upstream does not carry is
    left out of the plan and named in `plan.missing`, as the sync leaves it out.
    `subdirs` and `elsewhere`: one half of a plan split in two (sync/splitplan.py)."""
    loading = threading.Thread(target=_import_selection, daemon=True, name="import-selection")
    loading.start()
    missing: dict[str, str] = {}
    # no hashes: never shown
    upstream = fetch_upstream(settings, subdirs, missing=missing, plan_only=True)
    local = None
    if settings.in_bucket:  # what the bucket holds: listed here, the plan fetches nothing
        from casconsole.sync.target import bucket_sizes

        local = bucket_sizes(settings, list(upstream))
    loading.join()
    from casconsole.selection.plan import Plan

    return Plan.build(settings, upstream, check, missing, local=local, elsewhere=elsewhere)


def _import_selection() -> None:
    try:
        for name in _SELECTION:
            importlib.import_module(name)
    except Exception:  # raised again where the plan is made, in the caller's thread
        pass
