"""cas-sync's PyPI half: the pypi section's plan in the dry run, shown like a channel's funnel."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

import humanize

from casconsole.cli.common import fail
from casconsole.redact import redact_url
from casconsole.settings import Settings

if TYPE_CHECKING:
    from casconsole.pypi.plan import PypiPlan

WARNINGS_SHOWN = 20


def make_plan(settings: Settings, pypi_only: bool) -> PypiPlan | None:
    """The pypi section's plan (None when it names no project; with --pypi-only, an error)."""
    if not settings.pypi.enabled:
        if pypi_only:
            fail("--pypi-only: the pypi section names no projects (pypi.projects or pypi.requirements)")
        return None
    from casconsole.pypi.client import IndexClient
    from casconsole.pypi.plan import PypiPlan

    with IndexClient(settings) as client:
        return PypiPlan.build(settings, client)


def print_plan(plan: PypiPlan, out: TextIO | None = None, blank: bool = False) -> None:
    out = out or sys.stdout
    p, f = plan.pypi, plan.funnel
    if blank:
        print(file=out)
    print(f"plan for {redact_url(p.index_url or '')} -> {plan.settings.mirror_dir / 'pypi'}", file=out)
    warnings = plan.warnings()
    for warning in warnings[:WARNINGS_SHOWN]:
        print(f"warning: {warning}", file=out)
    if len(warnings) > WARNINGS_SHOWN:
        print(f"warning: ... and {len(warnings) - WARNINGS_SHOWN} more (all in --json)", file=out)
    pythons = ", ".join(p.python_versions) or "all"
    platforms = ", ".join(p.platforms) or "all"
    rows = [
        ("upstream", f"{f.upstream:,}", f"files of {len(plan.projects):,} projects"),
        ("dropped by specifier", f"-{f.dropped_specifier:,}", ""),
        (
            "dropped as pre-release",
            f"-{f.dropped_prerelease:,}",
            "" if not p.prereleases else "prereleases: true",
        ),
        ("dropped as yanked", f"-{f.dropped_yanked:,}", ""),
        ("dropped as sdist", f"-{f.dropped_sdists:,}", "" if p.sdists else "sdists: false"),
        ("dropped by python", f"-{f.dropped_python:,}", f"python_versions: {pythons}"),
        ("dropped by platform", f"-{f.dropped_platform:,}", f"platforms: {platforms}"),
        ("dropped as older", f"-{f.dropped_newest:,}", f"newest: {p.newest}" if p.newest else ""),
    ]
    if p.closure:
        rows.append(("of which closure", f"{f.added_closure:,}", "dependencies of the kept files"))
    rows += [
        ("kept", f"{f.kept:,}", ""),
        ("to download", f"{f.download:,}", humanize.naturalsize(f.download_bytes)),
        ("already present", f"{f.present:,}", ""),
        ("to delete", f"{f.delete:,}", "" if plan.settings.prune else "prune is off"),
    ]
    print("\npypi", file=out)
    for label, number, extra in rows:
        print(f"  {label:<24}{number:>10}  {extra}".rstrip(), file=out)
