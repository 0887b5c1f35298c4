"""The dry run: the plan a sync would carry out, with nothing written to the mirror."""

from __future__ import annotations

from casconsole.selection.plan import Plan
from casconsole.settings import Settings
from casconsole.upstream.repodata import fetch_upstream


def make_plan(settings: Settings, check: bool = True) -> Plan:
    """Fetch upstream (through the mirror's cache, as the sync does) and decide every record;
    the dependency check too, unless `check` is false. A platform upstream does not carry is
    left out of the plan and named in `plan.missing`, as the sync leaves it out."""
    missing: dict[str, str] = {}
    upstream = fetch_upstream(settings, missing=missing)
    local = None
    if settings.in_bucket:  # what the bucket holds: listed here, the plan fetches nothing
        from casconsole.sync.target import bucket_sizes

        local = bucket_sizes(settings, list(upstream))
    return Plan.build(settings, upstream, check, missing, local=local)
