"""The console over the seed's kind of settings: the Plan screen warns of a platform upstream does
not carry and of entries that match no upstream record (and follows a toggle); the Config and
Overview screens never show the proxy's password or a token."""

from __future__ import annotations

from console_helpers import make_app, on_screen, static_text, wait_workers

from casconsole.console.screens.plan import PlanScreen

pytest_plugins = ["console_fixtures"]

SEED_SETTINGS = """\
remote_url: upstream
mirror_dir: mirror
platforms:
  - linux-32
  - linux-64
license_blacklist: GPL
whitelist:
  - distribute
  - conda
blacklist:
  - flask
  - readline
"""


async def test_the_plan_screen_shows_the_plans_warnings(console_dir):
    (console_dir / "user.yaml").write_text(SEED_SETTINGS)
    async with on_screen("3") as (app, pilot):
        assert isinstance(app.screen, PlanScreen)
        assert list(app.state.plan.subdirs) == ["linux-64", "noarch"]  # the other platform is planned
        text = static_text(app, "#plan-warnings")
        assert "⚠ platform linux-32: not carried by upstream, left out" in text
        assert "⚠ whitelist entry 'distribute' matches no upstream record" in text
        # a toggle re-plans: an entry that matches nothing, taken out, is no longer reported
        app.state.settings = app.state.settings.replace(whitelist=["conda"])
        app.state.plan.update(app.state.settings, names={"distribute"})
        app.screen.refresh_state()
        await pilot.pause()
        assert "distribute" not in static_text(app, "#plan-warnings")
        assert "platform linux-32" in static_text(app, "#plan-warnings")


async def test_no_warning_no_line(console_dir):
    async with on_screen("3") as (app, _pilot):
        assert app.state.plan.warnings() == []
        assert not app.screen.query_one("#plan-warnings").display


async def test_secrets_are_not_shown_on_config_and_overview(console_dir):
    (console_dir / "user.yaml").write_text(
        "remote_url: https://conda.example.org/t/tk-1234/private\nmirror_dir: mirror\n"
        "proxy: http://alice:pa55word@proxy.lan:3128\n"
    )
    app = make_app(load_plan=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_workers(pilot)
        overview = "".join(static_text(app, f"#{w.id}") for w in app.screen.query("Static") if w.id)
        assert "https://conda.example.org/t/<hidden>/private" in overview and "tk-1234" not in overview
        await pilot.press("2")
        await pilot.pause()
        screen = app.screen
        proxy = next(i for i, row in enumerate(screen.rows) if row.key == "proxy")
        screen.query_one("#config-table").cursor = proxy
        screen.show_detail(proxy)
        detail = static_text(app, "#config-detail")
        assert "in force: http://alice:<hidden>@proxy.lan:3128" in detail
        assert "pa55word" not in detail
