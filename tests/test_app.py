"""The console driven by keys as an administrator drives it: one flow per screen, outcomes checked.

Each test starts the real app over real settings files, a real upstream channel (the demo, read
from disk or served on 127.0.0.1) and real channel folders; nothing of casconsole is mocked.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from casconsole.widgets.keybar import KeyBar
from casconsole.widgets.vtable import VirtualTable
from console_helpers import add_channel, make_app, on_screen, static_text, wait_workers
from textual.widgets import Input

from casconsole.console.screens.airgap import AirgapScreen, ExportDialog
from casconsole.console.screens.base import count
from casconsole.console.screens.channels import ChannelsScreen
from casconsole.console.screens.clients import ClientsScreen
from casconsole.console.screens.config import ConfigScreen
from casconsole.console.screens.dialogs import ConfirmDialog, PathDialog, SaveDialog
from casconsole.console.screens.help import HelpScreen
from casconsole.console.screens.index import IndexProgress, IndexScreen
from casconsole.console.screens.installers import BuildDialog, InstallersScreen
from casconsole.console.screens.overview import OverviewScreen
from casconsole.console.screens.plan import PlanScreen
from casconsole.console.screens.server import ServerScreen, TokenDialog

pytest_plugins = ["console_fixtures"]


def table(app) -> VirtualTable:
    return app.screen.query_one(VirtualTable)


async def goto_record(pilot, name: str) -> int:
    """Search the Plan table for `name` and put the cursor on its first record; its index."""
    await pilot.press("slash", *name, "enter")
    t = table(pilot.app)
    sp = pilot.app.screen.subdir_plan
    position = next(p for p, i in enumerate(t.view) if sp.records[i].name == name)
    t.cursor = position
    return t.view[position]


# ---------------------------------------------------------------- shell


async def test_opens_on_the_overview_and_reaches_every_screen_by_its_key(console_dir):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_workers(pilot)
        assert isinstance(app.screen, OverviewScreen)
        assert "kept" in static_text(app, "#plan-summary")  # the plan loaded in a worker
        expected = {
            "2": ConfigScreen,
            "3": PlanScreen,
            "5": ChannelsScreen,
            "6": IndexScreen,
            "7": ClientsScreen,
            "8": InstallersScreen,
            "9": AirgapScreen,
            "0": ServerScreen,
            "1": OverviewScreen,
        }
        for key, screen_type in expected.items():
            await pilot.press(key)
            await pilot.pause()
            assert isinstance(app.screen, screen_type), key
            top, bottom = str(app.screen.query_one(KeyBar).render()).splitlines()
            # at 80 columns every screen's key is on the first line, the current one's name whole
            keys = [b.key for b in app.BINDINGS if (b.id or "").startswith("nav.") and b.key.isdigit()]
            assert len(keys) == 10 and all(f" {k} " in top for k in keys)
            assert f" {app.screen.TITLE_TEXT} " in top and "g screens" in top and "? help" in top
            # how to quit is shown on every screen, on the first line where its own keys fill the second
            assert (top + bottom).count("^q quit") == 1, (key, top, bottom)
        await pilot.press("4")
        assert app.current_mode == "sync"


async def test_help_lists_every_key_and_the_palette_offers_screens_and_actions(console_dir):
    app = make_app(load_plan=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        listed = {(title, b.key) for title, bindings in app.screen.sections() for b in bindings}
        for mode, screen_type in app.SCREENS_BY_MODE.items():
            for binding in screen_type.BINDINGS:
                if binding.description:
                    assert (screen_type.TITLE_TEXT, binding.key) in listed, (mode, binding.key)
        text = app.screen.keys_table()
        assert text.row_count > 40
        await pilot.press("escape")
        assert isinstance(app.screen, OverviewScreen)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for screen_type in app.SCREENS_BY_MODE.values():
            assert f"Show {screen_type.TITLE_TEXT}" in titles
        assert {"Save settings", "Reindex all channels", "Write .condarc", "Reload plan"} <= set(titles)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"show plan")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, PlanScreen)


async def test_a_failing_plan_at_start_traps_no_key_and_shows_where_it_failed(console_dir):
    """No dialog over the screen at start: the keys work at once; Overview and Plan say why."""
    (console_dir / "user.yaml").write_text("remote_url: http://127.0.0.1:9/nothing\nplatforms: [linux-64]\n")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_workers(pilot)
        assert isinstance(app.screen, OverviewScreen)  # no modal holding the keys
        summary = static_text(app, "#plan-summary")
        assert "failed" in summary and "127.0.0.1:9" in summary and "Traceback" not in summary
        assert any("could not be made" in (n.title or "") for n in app._notifications)
        await pilot.press("3")
        await pilot.pause()
        assert isinstance(app.screen, PlanScreen)
        assert "no plan" in table(app).empty_text
        reason = static_text(app, "#reason")
        assert "could not be made" in reason and "127.0.0.1:9" in reason
        await pilot.press("2")
        await pilot.pause()
        assert isinstance(app.screen, ConfigScreen) and app.is_running


async def test_a_settings_problem_at_start_shows_on_the_overview_and_on_config(console_dir):
    (console_dir / "user.yaml").write_text(
        "remote_url: upstream\nmirror_dir: mirror\nplatforms: [linux-64, linux-77]\nretries: lots\n"
    )
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_workers(pilot)
        assert isinstance(app.screen, OverviewScreen)
        settings = static_text(app, "#settings-summary")
        assert "2 problem(s)" in settings and "linux-77" in settings and "retries" in settings
        assert "kept" in static_text(app, "#plan-summary")  # the good values are in force
        await pilot.press("2")
        await pilot.pause()
        assert isinstance(app.screen, ConfigScreen)
        files = static_text(app, "#config-files")
        assert "2 problem(s)" in files
        assert app.screen.rows[table(app).cursor_index].key == "platforms"  # the first look: a problem
        assert "linux-77" in static_text(app, "#config-detail")


async def test_every_dialog_closes_with_escape(console_dir, internal_channel):
    """Each modal the console opens goes away with escape, back to the screen it came from."""
    from casconsole.console.screens.help import ScreenList

    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_workers(pilot)
        opened = [
            ("1", "question_mark", HelpScreen),
            ("1", "g", ScreenList),
            ("3", "ctrl+s", None),  # nothing to save: a notification, no dialog
            ("4", "s", ConfirmDialog),
            ("4", "b", ConfirmDialog),
            ("7", "ctrl+s", PathDialog),
            ("7", "e", None),
            ("9", "e", ExportDialog),
            ("8", "b", BuildDialog),
            ("0", "a", TokenDialog),
            ("0", "p", None),
            ("0", "ctrl+s", SaveDialog),
        ]
        for screen_key, key, dialog in opened:
            await pilot.press(screen_key)
            await pilot.pause()
            under = app.screen
            await pilot.press(key)
            await pilot.pause()
            if dialog is not None:
                assert isinstance(app.screen, dialog), (screen_key, key, app.screen)
                await pilot.press("escape")
                await pilot.pause()
            assert app.screen is under, (screen_key, key, app.screen)
            if key == "e" and screen_key == "7":
                await pilot.press("escape")  # out of the URL field


def table_lines(app) -> list[str]:
    """The rows the current screen's table shows, as the terminal gets them."""
    t = table(app)
    return [t.render_line(y).text for y in range(t.size.height)]


async def test_tables_fit_80_columns_and_show_more_on_a_wider_terminal(internal_channel):
    """Point 1 of issue 17: columns sized to content, a name's start and a URL's end kept, the
    format column telling a build's .conda from its .tar.bz2, the key bar naming every screen
    when it has room, and what a narrow table cuts whole in its detail line."""
    async with on_screen("3") as (app, pilot):
        gcc = next(line for line in table_lines(app) if "libgcc-ng" in line)
        assert "GPL-3.0-only…" in gcc and "WITH GCC-exception-3.1" not in gcc  # cut at 80 columns
        index = await goto_record(pilot, "libgcc-ng")
        await pilot.pause()
        assert "GPL-3.0-only WITH GCC-exception-3.1" in static_text(app, "#reason")  # whole below
        assert app.screen.subdir_plan.records[index].license in static_text(app, "#reason")
        await pilot.press("5")
        await pilot.pause()
        # one build of openssl in both formats: two rows that differ by their format alone
        rows = [line.split() for line in table_lines(app) if line.startswith("openssl ") and "3.2.1" in line]
        assert sorted(r[3] for r in rows) == ["bz2", "conda"] and rows[0][:3] == rows[1][:3]
        await pilot.press("7")
        await pilot.pause()
        urls = [line for line in table_lines(app) if "internal-pkgs" in line]
        assert urls and urls[0].rstrip().endswith("http://127.0.0.1:8080/internal-pkgs")
        assert app.screen.query_one("#clients-url", Input).value == "http://127.0.0.1:8080"  # whole

        await pilot.resize_terminal(120, 40)
        await pilot.press("3")
        await pilot.pause()
        top = str(app.screen.query_one(KeyBar).render()).splitlines()[0]
        assert all(
            f" {n} {title}" in top for n, title in [("1", "Overview"), ("8", "Installers"), ("0", "Server")]
        )
        gcc = next(line for line in table_lines(app) if "libgcc-ng" in line)
        assert "GPL-3.0-only WITH GCC-exception-3.1" in gcc  # whole with room


# ---------------------------------------------------------------- config


async def test_config_shows_layers_side_by_side_and_problems_in_place(console_dir, monkeypatch):
    (console_dir / "system.yaml").write_text("concurrency: 4\nretries: lots\ncolour: blue\n")
    monkeypatch.setenv("CAS_MIRROR_CONCURRENCY", "16")
    app = make_app(load_plan=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2")
        await pilot.pause()
        screen = app.screen
        rows = {row.key: row for row in screen.rows}
        assert rows["concurrency"].values == {"default": 8, "system": 4, "env": 16}
        assert rows["concurrency"].winner == "env"
        assert "system" in rows["retries"].problems  # a wrong type, shown on its key's row
        assert not rows["colour"].known and "system" in rows["colour"].problems
        t = table(app)
        assert screen.rows[t.cursor_index].key == "retries"  # the first look goes to a problem
        detail = static_text(app, "#config-detail")
        assert "system.yaml:2" in detail and "expected a whole number" in detail
        t.move_to_index(next(i for i, r in enumerate(screen.rows) if r.key == "concurrency"))
        await pilot.pause()
        assert "from env CAS_MIRROR_CONCURRENCY" in static_text(app, "#config-detail")
        # fix the file and reload: the problems go
        (console_dir / "system.yaml").write_text("concurrency: 4\nretries: 5\n")
        await pilot.press("r")
        await pilot.pause()
        assert not app.state.problems
        assert {r.key for r in app.screen.rows if r.problems} == set()


# ---------------------------------------------------------------- plan


async def test_plan_toggle_replans_at_once_and_save_writes_the_shown_diff(http_console_dir):
    async with on_screen("3") as (app, pilot):
        screen = app.screen
        sp = screen.subdir_plan
        kept_before = sp.funnel.kept
        index = await goto_record(pilot, "curl")
        curls = [i for i, r in enumerate(sp.records) if r.name == "curl"]
        assert all(sp.decisions[i].included for i in curls)
        await pilot.press("b")
        await pilot.pause()
        assert all(sp.decisions[i].reason == "blacklist: curl" for i in curls)
        assert sp.funnel.kept == kept_before - len(curls)
        assert "blacklist +curl" in static_text(app, "#plan-head")
        assert "✗ dropped: blacklist: curl" in static_text(app, "#reason")
        assert f"kept {kept_before - len(curls)}" in static_text(app, "#funnel")
        assert table(app).cursor_index == index
        # save: the diff first, then the file
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, SaveDialog)
        diff = str(app.screen.query_one("#diff").render())
        assert re.search(r"^\+\s*- curl$", diff, re.MULTILINE), diff
        before = (http_console_dir / "user.yaml").read_text()
        await pilot.press("y")
        await pilot.pause()
        saved = yaml.safe_load((http_console_dir / "user.yaml").read_text())
        assert saved["blacklist"] == ["r-*", "mkl", "curl"]
        assert (http_console_dir / "user.yaml.bak").read_text() == before
        assert "# settings of a console test" in (http_console_dir / "user.yaml").read_text()
        assert app.state.pending() == {} and app.state.saved.blacklist[-1] == "curl"


async def test_plan_whitelist_search_filter_and_discard(console_dir):
    async with on_screen("3") as (app, pilot):
        screen = app.screen
        sp = screen.subdir_plan
        funnel_before = (sp.funnel.kept, sp.funnel.added_whitelist)
        index = await goto_record(pilot, "ghostscript")  # AGPL: dropped by license
        assert sp.decisions[index].step == "license_blacklist"
        assert all(sp.records[i].name.count("ghostscript") for i in table(app).view)
        await pilot.press("w")
        await pilot.pause()
        assert sp.decisions[index].included and sp.decisions[index].step == "whitelist"
        assert app.state.settings.whitelist == ["r-dplyr", "ghostscript"]
        # the filter: only what was dropped, then only what the whitelist added back
        await pilot.press("escape")
        table(app).focus()
        await pilot.press("slash", *["backspace"] * 11, "enter")
        assert len(table(app).view) == len(sp.records)
        await pilot.press("f", "f")
        await pilot.pause()
        assert "dropped" in static_text(app, "#plan-filter")
        assert all(not sp.decisions[i].included for i in table(app).view)
        assert index not in table(app).view
        # discard: back to the files, the plan follows
        await pilot.press("d")
        await pilot.pause()
        assert app.state.pending() == {}
        assert sp.decisions[index].step == "license_blacklist"
        assert (sp.funnel.kept, sp.funnel.added_whitelist) == funnel_before
        assert index in table(app).view  # the filter re-ran: dropped again, shown again
        assert yaml.safe_load((console_dir / "user.yaml").read_text())["whitelist"] == ["r-dplyr"]


async def test_plan_subdirs_switch_with_brackets(console_dir):
    async with on_screen("3") as (app, pilot):
        assert app.screen.subdir_plan.subdir == "linux-64"
        await pilot.press("right_square_bracket")
        await pilot.pause()
        assert app.screen.subdir_plan.subdir == "noarch"
        assert table(app).count == len(app.state.plan.subdirs["noarch"].records)


# ---------------------------------------------------------------- channels and index


async def test_channels_table_per_subdir_sortable_and_searchable(internal_channel):
    app = make_app(load_plan=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("5")
        await wait_workers(pilot)
        screen = app.screen
        t = table(app)
        assert screen.channel.name == "internal-pkgs" and screen.subdir == "linux-64"
        names = {screen.repodata.records[i].name for i in t.view}
        assert names == {"curl", "openssl", "zlib"}
        await pilot.press("s", "s", "s", "s", "s")  # name, version, build, format, size
        assert t.columns[t.sort_column].key == "size"
        sizes = [screen.repodata.records[i].size for i in t.view]
        assert sizes == sorted(sizes)
        await pilot.press("slash", *"zlib", "enter")
        assert {screen.repodata.records[i].name for i in t.view} == {"zlib"}
        await pilot.press("right_square_bracket")
        await wait_workers(pilot)
        assert screen.subdir == "noarch"
        assert {screen.repodata.records[i].name for i in range(len(screen.repodata.records))} == {
            "six",
            "flask",
        }


async def test_index_shows_stale_and_reindexes_with_progress(internal_channel, demo_channel):
    add_channel(internal_channel.parent, "team", demo_channel, {"noarch": ["click-"]}, index=False)
    progress: list[IndexProgress] = []
    app = make_app(load_plan=False)

    def hook(message):
        if isinstance(message, IndexProgress):
            progress.append(message)

    async with app.run_test(size=(80, 24), message_hook=hook) as pilot:
        await pilot.press("6")
        await wait_workers(pilot)
        rows = {(r.channel, r.subdir): r for r in app.screen.rows}
        assert rows[("internal-pkgs", "linux-64")].fresh
        assert not rows[("team", "noarch")].fresh and rows[("team", "noarch")].new == 2
        t = table(app)
        t.move_to_index(next(i for i, r in enumerate(app.screen.rows) if r.channel == "team"))
        await pilot.press("i")
        await wait_workers(pilot)
        rows = {(r.channel, r.subdir): r for r in app.screen.rows}
        assert rows[("team", "noarch")].fresh and rows[("team", "noarch")].packages == 2
        assert (internal_channel.parent / "team" / "noarch" / "repodata.json").exists()
        assert progress and progress[-1].done and progress[-1].read == 2
        assert "team: 2 packages, 2 read" in static_text(app, "#index-log")


# ---------------------------------------------------------------- clients


async def test_clients_condarc_order_ssl_verify_and_write(internal_channel):
    app = make_app(load_plan=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("7")
        await pilot.pause()
        screen = app.screen
        assert [c.entry for c in screen.channels] == ["pkgs", "internal-pkgs"]
        await pilot.press("J")  # pkgs moves below internal-pkgs
        await pilot.press("v")  # ssl_verify: false
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, PathDialog)
        field = app.screen.query_one(Input)
        field.value = "client/.condarc"
        await pilot.press("enter")
        await pilot.pause()
        written = Path("client/.condarc").read_text()
        data = yaml.safe_load(written)
        assert data["channels"] == ["http://127.0.0.1:8080/internal-pkgs", "http://127.0.0.1:8080/pkgs"]
        assert data["ssl_verify"] is False
        assert data["default_channels"] == ["http://127.0.0.1:8080/pkgs"]


async def test_plan_warns_of_dependencies_a_toggle_breaks(console_dir):
    async with on_screen("3") as (app, pilot):
        sp = app.screen.subdir_plan
        assert sp.funnel.broken == 0
        assert "dependencies are met" in static_text(app, "#deps")
        await goto_record(pilot, "readline")
        await pilot.press("b")  # python needs readline: every python record is left broken
        await pilot.pause()
        pythons = [i for i, r in enumerate(sp.records) if r.name == "python" and sp.decisions[i].included]
        assert pythons and sp.funnel.broken >= len(pythons)
        deps = static_text(app, "#deps")
        assert "unmet dependencies" in deps and "blacklist: readline" in deps
        decision = table(app).columns[0]
        assert decision.text(pythons[0]) == "kept ⚠" and decision.style(pythons[0]) == "warn"
        await pilot.press("escape", "slash", *["backspace"] * 8, "enter")
        while static_text(app, "#plan-filter").split()[1] != "unmet":
            await pilot.press("f")
        assert set(pythons) <= set(table(app).view)
        assert all(sp.unmet(i) for i in table(app).view)
        table(app).move_to_index(pythons[0])
        await pilot.pause()
        assert "⚠ unmet: readline >=8" in static_text(app, "#reason")
        await pilot.press("d")  # discard: readline back, nothing broken, the filter empties
        await pilot.pause()
        assert sp.funnel.broken == 0 and len(table(app).view) == 0


async def test_w_on_the_warning_whitelists_what_the_broken_records_lack(console_dir):
    async with on_screen("3") as (app, pilot):
        sp = app.screen.subdir_plan
        await goto_record(pilot, "readline")
        await pilot.press("b")
        await pilot.pause()
        assert sp.funnel.broken > 0
        deps = static_text(app, "#deps").splitlines()
        assert deps[1].startswith("100% lack readline (blacklist: readline) · W whitelists it")
        await pilot.press("escape", "W")  # from the table, not the search field
        await pilot.pause()
        assert app.state.settings.whitelist[-1] == "readline"
        assert app.state.pending_summary() == "blacklist +readline, whitelist +readline"
        sp = app.screen.subdir_plan
        assert sp.funnel.broken == 0 and "dependencies are met" in static_text(app, "#deps")
        assert all(d.included for r, d in zip(sp.records, sp.decisions) if r.name == "readline")


@pytest.mark.realdata
async def test_w_whitelists_libgcc_ng_on_real_conda_forge_under_license_blacklist_gpl(realdata, console_dir):
    """The issue's case, on the real data: the GPL family blacklisted by license leaves most of a
    conda-forge linux-64 with unmet dependencies; the warning names libgcc-ng, W brings it back."""
    (console_dir / "user.yaml").write_text(
        f"remote_url: {realdata / 'conda-subchannel-demo'}\nmirror_dir: mirror\n"
        "platforms: [linux-64]\nlicense_blacklist: GPL\n"  # a plain string, as the FAQ writes it
    )
    async with on_screen("3") as (app, pilot):
        sp = app.screen.subdir_plan
        before = sp.funnel.broken
        assert sp.subdir == "linux-64" and before > sp.funnel.kept // 2
        deps = static_text(app, "#deps")
        assert f"⚠ {count(before)} kept with unmet dependencies" in deps
        assert "lack libgcc-ng (license_blacklist: GPL) · W whitelists it" in deps
        await pilot.press("W")
        await pilot.pause()
        assert app.state.pending_summary() == "whitelist +libgcc-ng"
        sp = app.screen.subdir_plan
        lack = static_text(app, "#deps").splitlines()[1]
        assert sp.funnel.broken < before and "libgcc-ng" not in lack
        assert any(d.included for r, d in zip(sp.records, sp.decisions) if r.name == "libgcc-ng")


async def test_reindex_all_leaves_the_mirrored_channel_to_the_sync(internal_channel, demo_channel):
    mirrored = add_channel(internal_channel.parent, "pkgs", demo_channel, {"noarch": ["six-"]}, index=False)
    (internal_channel / "noarch" / "repodata.json").unlink()  # stale now
    app = make_app(load_plan=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("6")
        await wait_workers(pilot)
        rows = {(r.channel, r.subdir): r for r in app.screen.rows}
        files = len(list((mirrored / "noarch").iterdir()))
        assert rows[("pkgs", "noarch")].state == "synced" and rows[("pkgs", "noarch")].packages == files
        assert rows[("internal-pkgs", "noarch")].state == "stale"
        await pilot.press("a")
        await wait_workers(pilot)
        assert (internal_channel / "noarch" / "repodata.json").exists()
        assert not (mirrored / "noarch" / "repodata.json").exists()  # not indexed behind the sync's back
        rows = {(r.channel, r.subdir): r for r in app.screen.rows}
        assert rows[("internal-pkgs", "noarch")].fresh
