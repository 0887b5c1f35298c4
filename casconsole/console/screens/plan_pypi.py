"""The Plan screen's `pypi` tab: the pypi section's plan shown like a subdir's, every file of the
projects asked for (and their closure) with its decision, the funnel, and the reason of the file
under the cursor. The section is set in the settings files (`pypi.projects`); the `b` / `w`
toggles act on conda records only."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.text import Text

from casconsole.console.screens.base import count, size
from casconsole.widgets.vtable import Column

if TYPE_CHECKING:
    from casconsole.pypi.plan import PypiPlan, Row

TAB = "pypi"


def label(row: Row) -> str:
    return row.decision.step if row.decision.kept else row.decision.step.replace("specifier", "spec")


def tag(row: Row) -> str:
    if not row.decision.kept:
        return "bad"
    return "note" if row.decision.step == "closure" else "good"


def columns(plan: PypiPlan, rows: list[Row]) -> list[Column]:
    return [
        Column("decision", 9, lambda i: label(rows[i]), lambda i: tag(rows[i])),
        Column("project", 16, lambda i: rows[i].dist.project),
        Column("version", 9, lambda i: str(rows[i].dist.version), sort=lambda i: rows[i].dist.version),
        Column("file", 24, lambda i: rows[i].dist.filename, flex=True),
        Column(
            "size", 9, lambda i: size(rows[i].dist.size), sort=lambda i: rows[i].dist.size or 0, align="right"
        ),
    ]


FILTERS: list[tuple[str, Callable[[PypiPlan, list[Row]], Callable[[int], bool]] | None]] = [
    ("all", None),
    ("kept", lambda plan, rows: lambda i: rows[i].decision.kept),
    ("dropped", lambda plan, rows: lambda i: not rows[i].decision.kept),
    ("closure", lambda plan, rows: lambda i: rows[i].decision.step == "closure"),
    ("to download", lambda plan, rows: lambda i: rows[i].decision.kept and not plan.is_present(rows[i])),
    ("on disk", lambda plan, rows: lambda i: rows[i].key in plan.local),
]


def funnel(plan: PypiPlan) -> Text:
    f = plan.funnel
    text = Text()
    text.append(f"upstream {count(f.upstream)}")
    for name, n in (
        ("spec", f.dropped_specifier),
        ("pre", f.dropped_prerelease),
        ("yanked", f.dropped_yanked),
        ("sdist", f.dropped_sdists),
        ("python", f.dropped_python),
        ("platform", f.dropped_platform),
        ("newest", f.dropped_newest),
    ):
        if n:
            text.append(f" −{name} {count(n)}", "red")
    text.append(f" = kept {count(f.kept)}", "bold green")
    if f.added_closure:
        text.append(f" (closure {count(f.added_closure)})", "cyan")
    text.append(f"\nto download {count(f.download)} ({size(f.download_bytes)})", "bold")
    text.append(f" · on disk {count(f.present)} · to delete {count(f.delete)}")
    return text


def reason(plan: PypiPlan, row: Row) -> Text:
    d = row.dist
    text = Text()
    text.append(d.filename, "bold")
    text.append(f" · {d.kind}" + (f" · Requires-Python {d.requires_python}" if d.requires_python else ""))
    text.append("\n")
    if row.decision.kept:
        text.append("✓ kept: ", "bold green")
        text.append(row.decision.reason)
        text.append(" · on disk" if plan.is_present(row) else " · to download", "dim")
    else:
        text.append("✗ dropped: ", "bold red")
        text.append(f"{row.decision.step}: {row.decision.reason}")
    text.append("\n")
    text.append("asked by: ", "dim")
    project = plan.projects.get(d.project)
    asked = ", ".join(f"{w} ({w.source})" for w in project.wanted) if project else ""
    text.append(asked or "-", "dim")
    return text


def warnings(plan: PypiPlan | None, error: str | None) -> list[str]:
    if error:
        return [f"pypi: {error}"]
    return [f"pypi: {w}" for w in plan.warnings()] if plan is not None else []
