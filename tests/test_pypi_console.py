"""The console over a pypi section, driven by keys: the Plan screen's pypi tab (the funnel, every
file with its decision and reason), a sync started on the Sync screen carrying the section (its
row with the subdirs'), and the Clients screen's pip.conf, written to a file pip reads."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest
from console_helpers import make_app, on_screen, static_text, wait_workers
from pypi_index import SimpleIndex, tiny_projects

from casconsole.console.screens.clients import ClientsScreen
from casconsole.console.screens.dialogs import PathDialog
from casconsole.console.screens.plan import PlanScreen
from casconsole.console.screens.sync import SyncScreen

pytest_plugins = ["console_fixtures"]


@pytest.fixture
def pypi_console(console_dir):
    with SimpleIndex(tiny_projects(console_dir / "dist")) as index:
        with Path("user.yaml").open("a") as fh:
            fh.write(f"pypi:\n  index_url: {index.url}\n  projects: [app, nosuch]\n  closure: true\n")
            fh.write("  platforms: [manylinux_2_17_x86_64]\n")
        yield index


async def show_pypi_tab(pilot) -> PlanScreen:
    await pilot.press("3")
    await wait_workers(pilot)
    screen = pilot.app.screen
    assert isinstance(screen, PlanScreen)
    for _ in range(len(screen.tabs)):
        if screen.on_pypi:
            break
        await pilot.press("right_square_bracket")
        await pilot.pause()
    assert screen.on_pypi
    return screen


async def test_the_plan_screen_shows_the_pypi_section_like_a_subdir(pypi_console):
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await show_pypi_tab(pilot)
        assert screen.tabs[-1] == "pypi"
        assert "pypi" in static_text(app, "#plan-head")
        funnel = static_text(app, "#funnel")
        assert "upstream 7" in funnel and "−yanked 1" in funnel and "−pre 1" in funnel
        # app; lib 1.0 and 1.1; helper as a wheel and an sdist (winonly is for Windows only)
        assert "kept 5 (closure 4)" in funnel
        warnings = static_text(app, "#plan-warnings")
        assert "unknown project 'nosuch'" in warnings
        rows = screen.pypi_rows
        names = [r.dist.filename for r in rows]
        assert "lib-1.2-py3-none-any.whl" in names and "winonly-1.0-py3-none-any.whl" not in names
        screen.table.cursor = names.index("lib-1.2-py3-none-any.whl")
        await pilot.pause()
        reason = static_text(app, "#reason")
        assert "dropped: yanked: broken build" in reason and "asked by: lib>=1.0" in reason
        await pilot.press("f")  # kept
        await pilot.pause()
        assert len(screen.table.view) == 5
        await pilot.press("b")  # the toggles are the conda records'
        await pilot.pause()
        assert any("pypi.projects" in str(n.message) for n in app._notifications)


async def test_a_sync_from_the_console_carries_the_pypi_section(pypi_console):
    async with on_screen("4") as (app, pilot):
        assert isinstance(app.screen, SyncScreen)
        await pilot.press("s", "y")
        await wait_workers(pilot)
        for _ in range(100):  # the screen follows the status log a few times a second
            await pilot.pause(0.05)
            if app.screen.view.state == "done":
                break
        view = app.screen.view
        assert view.state == "done", view.error
        rows = {name: (done, total, what) for name, done, total, _, _, _, what in view.subdirs}
        assert rows["pypi"] == (5, 5, "done")
        assert "linux-64" in rows
        assert (Path("mirror") / "pypi/simple/app/index.html").is_file()
        # the plan looks at the disk again: the section's files are in place
        plan_screen = await show_pypi_tab(pilot)
        assert "on disk 5" in static_text(app, "#funnel") and plan_screen.on_pypi


async def test_the_clients_screen_shows_and_writes_the_pip_conf(pypi_console):
    app = make_app(load_plan=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("7")
        await pilot.pause()
        assert isinstance(app.screen, ClientsScreen)
        shown = static_text(app, "#clients-pip")
        assert "[global]" in shown and "index-url = http://127.0.0.1:8080/pypi/simple/" in shown
        await pilot.press("p")
        await pilot.pause()
        assert isinstance(app.screen, PathDialog)
        await pilot.press("enter")
        await pilot.pause()
    parser = configparser.ConfigParser()
    parser.read(Path("mirror") / "pip.conf")
    assert parser["global"]["index-url"] == "http://127.0.0.1:8080/pypi/simple/"
