"""Plan: per subdir the funnel, every upstream record with its decision, toggles, save.

`b` / `w` put the selected record's name in (or take it out of) the blacklist / whitelist; the
plan re-decides that name's records only (`Plan.update(..., names={name})`) and the table and
funnel repaint at once. `ctrl+s` shows the change to the settings file before writing it;
`d` goes back to the settings as the files say. The plan's warnings (a platform upstream does
not carry, entries that match no upstream record, a subdir the prune guard would hold back)
show under the subdir tabs. With a pypi section, a last tab shows its plan (plan_pypi.py).
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Input, Static

from casconsole.console.screens import plan_pypi
from casconsole.console.screens.base import (
    ConsoleScreen,
    archive_format,
    count,
    date,
    describe_error,
    size,
)
from casconsole.console.screens.dialogs import MessageDialog, SaveDialog
from casconsole.settings import SettingsError
from casconsole.widgets.vtable import Column, VirtualTable

if TYPE_CHECKING:
    from casconsole.console.session import SaveTarget
    from casconsole.selection.filters import Decision
    from casconsole.selection.plan import Plan, SubdirPlan

_PARTS = re.compile(r"(\d+)")


@functools.lru_cache(maxsize=200_000)
def version_key(version: str) -> tuple:
    """A sort key that puts 1.10 after 1.9 (numbers compare as numbers)."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in _PARTS.split(version) if p)


def decision_label(decision: Decision) -> str:
    if decision.included:
        return "kept" if decision.step == "upstream" else decision.step
    return decision.step.replace("license_blacklist", "license")


def decision_tag(decision: Decision) -> str:
    if not decision.included:
        return "bad"
    return "good" if decision.step == "upstream" else "note"


# (label, predicate over a subdir's records) for the `f` filter; None shows everything
FILTERS: list[tuple[str, Callable[[Plan, SubdirPlan], Callable[[int], bool]] | None]] = [
    ("all", None),
    ("kept", lambda plan, sp: lambda i: sp.decisions[i].included),
    ("dropped", lambda plan, sp: lambda i: not sp.decisions[i].included),
    ("dropped by license", lambda plan, sp: lambda i: sp.decisions[i].step == "license_blacklist"),
    (
        "dropped by blacklist",
        lambda plan, sp: lambda i: not sp.decisions[i].included and sp.decisions[i].step == "blacklist",
    ),
    (
        "whitelisted",
        lambda plan, sp: lambda i: sp.decisions[i].included and sp.decisions[i].step != "upstream",
    ),
    (
        "to download",
        lambda plan, sp: lambda i: sp.decisions[i].included and not sp.is_present(sp.records[i]),
    ),
    ("on disk", lambda plan, sp: lambda i: sp.records[i].fn in sp.local),
    ("unmet dependencies", lambda plan, sp: _broken_filter(plan, sp)),
]


def _broken_filter(plan: Plan, sp: SubdirPlan) -> Callable[[int], bool]:
    broken = plan.check.broken(sp.subdir) if plan.check is not None else {}
    return broken.__contains__


_SPEC_NAME = re.compile(r"^\s*([A-Za-z0-9_.\-]+)")


@dataclass
class UnmetName:
    """A package whose absence leaves kept records with unmet dependencies: whitelisting it (one
    key on the Plan) is the usual fix, e.g. libgcc-ng when the GPL family is blacklisted."""

    name: str
    records: int  # broken records that lack it
    cause: str  # why its records are not kept (the entry that dropped them)


def unmet_names(plan: Plan, subdir: str) -> tuple[list[UnmetName], list[tuple[str, int]]]:
    """(the dropped packages missed by a subdir's broken records, the most missed first; the
    causes with the unmet specs each explains).

    Counts the unmet specs (one pass over the broken records, as a Counter does it), then looks
    at each distinct spec once for its cause and its package name: after every toggle, 180,000
    broken records of 500,000 cost what a hundred distinct specs cost. A package's count is the
    unmet specs naming it, which is its broken records as a record names a dependency once.
    """
    check = plan.check
    if check is None:
        return [], []
    decisions = plan.decisions_by_subdir()
    specs = check.spec_counts(subdir)
    by_name: Counter[str] = Counter()
    name_cause: dict[str, str] = {}
    causes: Counter[str] = Counter()
    for text, n in specs.items():
        found = check.causes(subdir, text, decisions)
        for cause in found:
            causes[cause] += n
        match = _SPEC_NAME.match(text)
        dropped = [c for c in found if not c.startswith("upstream")]
        if match and dropped:
            by_name[match.group(1)] += n
            name_cause.setdefault(match.group(1), dropped[0])
    named = [UnmetName(name, n, name_cause[name]) for name, n in by_name.most_common()]
    return named, causes.most_common()


def plan_columns(plan: Plan, sp: SubdirPlan) -> list[Column]:
    records = sp.records
    check = plan.check

    def label(i: int) -> str:
        decision = sp.decisions[i]
        text = decision_label(decision)
        if decision.included and check is not None and i in check.broken(sp.subdir):
            return f"{text[:6]} ⚠"  # kept, but a dependency is not: the reason panel says which
        return text

    def tag(i: int) -> str:
        decision = sp.decisions[i]
        if decision.included and check is not None and i in check.broken(sp.subdir):
            return "warn"
        return decision_tag(decision)

    return [
        Column("decision", 9, label, tag),
        *record_columns(records, size_width=9),
    ]


def record_columns(records: list, size_width: int = 8) -> list[Column]:
    """A package record's columns, as the Plan and Channels tables show them: the name whole
    first, version, build, the format (`.conda` or `.tar.bz2` of one build), size, license."""
    return [
        Column("name", 14, lambda i: records[i].name, flex=True, auto=True, max_width=30),
        Column(
            "version",
            7,
            lambda i: records[i].version,
            sort=lambda i: version_key(records[i].version),
            auto=True,
            max_width=16,
        ),
        Column("build", 8, lambda i: records[i].build, auto=True, max_width=28),
        Column("fmt", 5, lambda i: archive_format(records[i].fn)),
        Column(
            "size", size_width, lambda i: size(records[i].size), sort=lambda i: records[i].size, align="right"
        ),
        Column("license", 7, lambda i: records[i].license or "", auto=True, max_width=24),
    ]


class PlanScreen(ConsoleScreen):
    """What will be mirrored: the funnel per subdir, each record's decision and its reason."""

    NAV = "plan"
    TITLE_TEXT = "Plan"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("b", "toggle('blacklist')", "blacklist"),
        Binding("w", "toggle('whitelist')", "whitelist"),
        Binding("slash", "search", "search", key_display="/", show=False),  # shown by the search field
        Binding("f", "next_filter", "filter"),
        Binding("right_square_bracket", "subdir(1)", "subdir", key_display="]"),
        Binding("left_square_bracket", "subdir(-1)", "previous subdir", key_display="[", show=False),
        Binding("ctrl+s", "save", "save"),
        Binding("d", "discard", "discard"),
        Binding("W", "whitelist_cause", "whitelist the cause", show=False),  # shown on the warning
        Binding("r", "reload", "refetch", show=False),
    ]
    COMMANDS_: ClassVar[list[tuple[str, str, str]]] = [
        ("Save settings", "Show the change to the settings file, then write it", "save"),
        ("Discard changes", "Forget the toggles not saved; the plan follows the files again", "discard"),
        ("Reload plan", "Fetch the upstream repodata again and decide every record", "reload"),
        ("Filter plan", "Show the next group of records (kept, dropped, ...)", "next_filter"),
    ]

    WARNINGS_SHOWN = 2  # lines; more are counted (cas-sync --dry-run lists them all)

    def compose_body(self) -> ComposeResult:
        yield Static(id="plan-head")
        yield Static(id="plan-warnings")
        yield Static(id="funnel")
        yield Static(id="deps")
        with Horizontal(id="plan-bar"):
            yield Static("/", id="plan-search-label")
            yield Input(placeholder="search names", id="plan-search", compact=True)
            yield Static(id="plan-filter")
        yield VirtualTable(id="plan-table", empty_text="loading the plan…")
        yield Static(id="reason")

    def on_mount(self) -> None:
        super().on_mount()
        self.subdir_index = 0
        self.filter_index = 0
        self._shown: tuple[int, str] | None = None  # (id of the plan, subdir) in the table
        self.table = self.query_one("#plan-table", VirtualTable)
        self.table.focus()
        self.console.plan_changed.subscribe(self, lambda _: self.refresh_state())

    # ---------------------------------------------------------------- the plan shown

    @property
    def tabs(self) -> list[str]:
        """The subdirs of the plan, then `pypi` when the settings have a pypi section."""
        plan = self.state.plan
        names = list(plan.subdirs) if plan is not None else []
        if plan is not None and (self.state.pypi_plan is not None or self.state.pypi_error):
            names.append(plan_pypi.TAB)
        return names

    @property
    def on_pypi(self) -> bool:
        tabs = self.tabs
        return bool(tabs) and tabs[min(self.subdir_index, len(tabs) - 1)] == plan_pypi.TAB

    @property
    def subdir_plan(self) -> SubdirPlan | None:
        plan = self.state.plan
        if plan is None or not plan.subdirs or self.on_pypi:
            return None
        names = list(plan.subdirs)
        return plan.subdirs[names[min(self.subdir_index, len(names) - 1)]]

    def show_pypi(self) -> None:
        """The pypi tab: its files in the table, its funnel, the reason of the file selected."""
        pypi = self.state.pypi_plan
        if pypi is None:
            self._shown = None
            self.table.empty_text = f"no PyPI plan: {self.state.pypi_error} (r to try again)"
            self.table.set_data(None, 0)
        elif self._shown != (id(pypi), plan_pypi.TAB):
            self._shown = (id(pypi), plan_pypi.TAB)
            rows = self.pypi_rows = pypi.rows
            self.table.empty_text = "no file matches"
            self.table.search = lambda i: rows[i].dist.filename
            self.table.set_data(plan_pypi.columns(pypi, rows), len(rows), keep_sort=False)
            self.apply_filter()
        else:
            self.table.refresh_rows()
        self.show_head()
        self.show_warnings()
        funnel = plan_pypi.funnel(pypi) if pypi is not None else ""
        self.query_one("#funnel", Static).update(funnel, layout=False)
        self.query_one("#deps", Static).update("", layout=False)
        self.show_reason(self.table.cursor_index)

    @property
    def filters(self) -> list:
        return plan_pypi.FILTERS if self.on_pypi else FILTERS

    def refresh_state(self) -> None:
        if self.on_pypi:
            self.show_pypi()
            return
        plan, sp = self.state.plan, self.subdir_plan
        if plan is None or sp is None:
            self._shown = None
            error = self.state.plan_error
            self.table.empty_text = (
                f"no plan: {error} (r to try again)"
                if error
                else f"loading the plan… {self.console.plan_progress}"
            )
            self.table.set_data(None, 0)
        elif self._shown != (id(plan), sp.subdir):
            self._shown = (id(plan), sp.subdir)
            self.table.empty_text = "no record matches"
            records = sp.records
            self.table.search = lambda i: records[i].name
            self.table.set_data(plan_columns(plan, sp), len(records), keep_sort=True)
            self.apply_filter()
        else:
            self.table.refresh_rows()
        self.show_head()
        self.show_warnings()
        self.show_funnel()
        self.show_reason(self.table.cursor_index)

    def show_warnings(self) -> None:
        plan = self.state.plan
        warnings = plan.warnings() if plan is not None else []
        if self.on_pypi:
            warnings = plan_pypi.warnings(self.state.pypi_plan, self.state.pypi_error)
        box = self.query_one("#plan-warnings", Static)
        box.display = bool(warnings)
        shown = warnings[: self.WARNINGS_SHOWN]
        if len(warnings) > self.WARNINGS_SHOWN:
            more = len(warnings) - self.WARNINGS_SHOWN + 1
            shown[-1] = f"{more} more warnings (cas-sync --dry-run lists them)"
        box.update(Text("\n".join(f"⚠ {line}" for line in shown), "yellow"))

    def show_head(self) -> None:
        text = Text()
        plan = self.state.plan
        if plan is not None:
            tabs = self.tabs
            current = tabs[min(self.subdir_index, len(tabs) - 1)] if tabs else ""
            for subdir in tabs:
                text.append(f" {subdir} ", "reverse bold" if subdir == current else "")
        pending = self.state.pending_summary()
        if pending:
            text.append("  unsaved: ", "bold yellow")
            text.append(pending, "yellow")
        self.query_one("#plan-head", Static).update(text, layout=False)

    def show_funnel(self) -> None:
        sp = self.subdir_plan
        if sp is None:
            self.query_one("#funnel", Static).update("", layout=False)
            return
        f = sp.funnel
        text = Text()
        text.append(f"upstream {count(f.upstream)}")
        text.append(f" −license {count(f.dropped_license)}", "red")
        text.append(f" −blacklist {count(f.dropped_blacklist)}", "red")
        for label, n in (
            ("newest", getattr(f, "dropped_newest", 0)),
            ("curated", getattr(f, "dropped_curated", 0)),
        ):
            if n:
                text.append(f" −{label} {count(n)}", "red")
        text.append(f" +whitelist {count(f.added_whitelist)}", "cyan")
        if f.added_closure:
            text.append(f" +closure {count(f.added_closure)}", "cyan")
        text.append(f" = kept {count(f.kept)}", "bold green")
        text.append(f"\nto download {count(f.download)} ({size(f.download_bytes)})", "bold")
        text.append(f" · on disk {count(f.present)} · to delete {count(f.delete)}")
        self.query_one("#funnel", Static).update(text, layout=False)
        self.call_after_refresh(self.show_deps)  # grouping the causes may take a moment: frame first

    def show_deps(self) -> None:
        """The dependency check of the subdir: all met, or what is missing most and why (two
        lines, whole: the package to whitelist, then the causes)."""
        sp, plan = self.subdir_plan, self.state.plan
        deps = self.query_one("#deps", Static)
        self.unmet_top: UnmetName | None = None
        if sp is None or plan is None or plan.check is None:
            deps.update("", layout=False)
            return
        broken = sp.funnel.broken
        if not broken:
            deps.update(Text("✓ every kept record's dependencies are met", "green"), layout=False)
            return
        names, causes = unmet_names(plan, sp.subdir)
        text = Text(f"⚠ {count(broken)} kept with unmet dependencies", "bold yellow")
        text.append(" · f lists them", "dim")
        if names:
            top = self.unmet_top = names[0]
            text.append(f"\n{min(top.records, broken) / broken:.0%} lack ", "yellow")
            text.append(top.name, "bold yellow")
            text.append(f" ({top.cause}) · ", "yellow")
            text.append("W", "bold reverse")
            text.append(" whitelists it", "bold")
            others = [f"{n.name} {count(n.records)}" for n in names[1:3]]
            if others:
                text.append(f" · then {', '.join(others)}", "dim")
        elif causes:
            text.append(f"\n{causes[0][0]}", "yellow")
        deps.update(text, layout=False)

    def show_filter(self, shown: int | None = None, total: int | None = None) -> None:
        label = self.filters[min(self.filter_index, len(self.filters) - 1)][0]
        text = Text()
        text.append("f ", "bold")
        text.append(label)
        if shown is not None and total is not None:
            text.append(f"  {count(shown)} of {count(total)}", "dim")
        self.query_one("#plan-filter", Static).update(text, layout=False)

    @on(VirtualTable.ViewChanged, "#plan-table")
    def view_changed(self, event: VirtualTable.ViewChanged) -> None:
        self.show_filter(event.shown, event.total)

    @on(VirtualTable.CursorMoved, "#plan-table")
    def cursor_moved(self, event: VirtualTable.CursorMoved) -> None:
        self.show_reason(event.index)

    def show_reason(self, index: int | None) -> None:
        reason = self.query_one("#reason", Static)
        if self.on_pypi:
            pypi, rows = self.state.pypi_plan, getattr(self, "pypi_rows", [])
            ok = pypi is not None and index is not None and index < len(rows)
            reason.update(plan_pypi.reason(pypi, rows[index]) if ok else "", layout=False)  # type: ignore[arg-type,index]
            return
        sp = self.subdir_plan
        if sp is None and self.state.plan_error:
            text = Text("✗ The plan could not be made: ", "bold red")
            text.append(self.state.plan_error, "red")
            text.append("\nr fetches the upstream repodata again", "dim")
            reason.update(text, layout=False)
            return
        if sp is None or index is None or index >= len(sp.records):
            reason.update("", layout=False)
            return
        rec, decision = sp.records[index], sp.decisions[index]
        text = Text()
        text.append(f"{rec.fn}", "bold")
        text.append(f" · {date(rec.timestamp)} · {rec.license or 'no license'}")
        text.append("\n")
        if decision.included:
            text.append("✓ kept: ", "bold green")
            text.append(decision.reason if decision.step != "upstream" else "no filter applies")
            text.append(" · on disk" if sp.is_present(rec) else " · to download", "dim")
        else:
            text.append("✗ dropped: ", "bold red")
            text.append(decision.reason)
            if rec.fn in sp.local:
                text.append(" · on disk, to delete" if sp.prune else " · on disk, kept (prune is off)", "dim")
        text.append("\n")
        unmet = set(sp.unmet(index)) if decision.included else set()
        if unmet:
            text.append("⚠ unmet: ", "bold yellow")
            text.append(", ".join(sorted(unmet)), "yellow")
            text.append(" · ", "dim")
        text.append("depends: ", "dim")
        depends = [d for d in rec.depends or [] if d not in unmet]
        text.append(", ".join(depends) or ("nothing" if not unmet else "-"), "dim")
        reason.update(text, layout=False)  # a fixed height: no layout pass per cursor key

    # ---------------------------------------------------------------- keys

    def action_toggle(self, key: str) -> None:
        if self.on_pypi:
            self.notify(
                "b and w act on conda records; name PyPI projects in pypi.projects (Config shows them)",
                severity="warning",
                timeout=5,
            )
            return
        sp = self.subdir_plan
        index = self.table.cursor_index
        if sp is None or index is None:
            self.notify("No record selected", severity="warning", timeout=3)
            return
        try:
            self.state.toggle(key, sp.records[index].name)
        except SettingsError as exc:
            self.app.push_screen(MessageDialog("Cannot change the settings", describe_error(exc)))
            return
        self.after_toggle()

    def after_toggle(self) -> None:
        """Repaint what a toggle changed: the rows, the funnel, the dependency check, the reason."""
        if FILTERS[self.filter_index][0] == "unmet dependencies":
            self.apply_filter()
        else:
            self.table.refresh_rows()
        self.show_head()
        self.show_warnings()
        self.show_funnel()
        self.show_reason(self.table.cursor_index)
        self.refresh_bindings()

    def action_whitelist_cause(self) -> None:
        """Whitelist the package the most broken records lack (the warning names it)."""
        top = getattr(self, "unmet_top", None)
        if top is None or self.on_pypi:
            self.notify("No unmet dependency to whitelist here", timeout=3)
            return
        if top.name in self.state.settings.whitelist:
            self.notify(f"{top.name} is whitelisted already", timeout=3)
            return
        self.state.toggle("whitelist", top.name)
        self.notify(f"{top.name} whitelisted (unsaved: ctrl+s saves)", title="Plan", timeout=4)
        self.after_toggle()

    def action_search(self) -> None:
        self.query_one("#plan-search", Input).focus()

    @on(Input.Changed, "#plan-search")
    def search_changed(self, event: Input.Changed) -> None:
        self.table.set_query(event.value)

    @on(Input.Submitted, "#plan-search")
    def search_done(self) -> None:
        self.table.focus()

    def key_escape(self) -> None:
        if self.focused is not self.table:
            self.table.focus()

    def action_next_filter(self) -> None:
        self.filter_index = (self.filter_index + 1) % len(self.filters)
        self.apply_filter()

    def apply_filter(self) -> None:
        self.filter_index %= len(self.filters)
        if self.on_pypi:
            make_pypi = plan_pypi.FILTERS[self.filter_index][1]
            pypi = self.state.pypi_plan
            rows = getattr(self, "pypi_rows", [])
            self.table.set_filter(
                make_pypi(pypi, rows) if make_pypi is not None and pypi is not None else None
            )
            self.show_filter(len(self.table.view), self.table.count)
            return
        make = FILTERS[self.filter_index][1]
        plan, sp = self.state.plan, self.subdir_plan
        self.table.set_filter(
            make(plan, sp) if make is not None and plan is not None and sp is not None else None
        )
        self.show_filter(len(self.table.view), self.table.count)

    def action_subdir(self, step: int) -> None:
        tabs = self.tabs
        if not tabs:
            return
        self.subdir_index = (self.subdir_index + step) % len(tabs)
        self.refresh_state()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("save", "discard"):
            return True if self.state.pending() else None
        return True

    def action_save(self) -> None:
        if not self.state.pending():
            self.notify("Nothing to save: no toggle since the files were read", timeout=3)
            return

        def done(target: SaveTarget | None) -> None:
            if target is None:
                return
            try:
                differs = self.state.save(target)
            except (SettingsError, OSError) as exc:
                self.app.push_screen(MessageDialog("The settings were not saved", describe_error(exc)))
                return
            backup = target.path.with_name(target.path.name + ".bak")
            note = f"; the previous text is in {backup.name}" if target.old_text else ""
            self.notify(f"{target.path.name} written{note}", title="Settings saved", timeout=5)
            if differs:
                self.notify(
                    f"{', '.join(differs)}: a higher layer sets it; the plan follows that value",
                    severity="warning",
                    timeout=10,
                )
            self.refresh_state()
            self.refresh_bindings()

        self.app.push_screen(SaveDialog(self.state), done)

    def action_discard(self) -> None:
        if not self.state.pending():
            return
        self.state.discard()
        self.notify("Back to the settings as the files say", timeout=3)
        self.refresh_state()
        self.refresh_bindings()

    def action_reload(self) -> None:
        self.console.reload_plan()
