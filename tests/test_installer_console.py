"""The console's Installers screen, driven by keys: it lists the installers built, builds one from
a YAML file with progress, and shows why a build was refused."""

from __future__ import annotations

import shutil
from pathlib import Path

from console_helpers import make_app, static_text, wait_workers
from test_installer_support import demo_packages, run_installer, write_channel
from textual.widgets import Input

from casconsole.console.screens.dialogs import MessageDialog
from casconsole.console.screens.installers import BuildDialog, BuildProgress, InstallersScreen

pytest_plugins = ["console_fixtures"]


async def build_from(pilot, yaml: str) -> None:
    await pilot.press("b")
    await pilot.pause()
    assert isinstance(pilot.app.screen, BuildDialog)
    pilot.app.screen.query_one(Input).value = yaml
    await pilot.press("enter")
    await wait_workers(pilot)


async def test_builds_an_installer_from_yaml_with_progress_and_lists_it(console_dir):
    write_channel(console_dir / "chan", demo_packages())
    (console_dir / "my-installer.yaml").write_text(
        "name: my-installer\nversion: 1.0\nchannels: [ chan ]\nspecs: [python, conda, my_package]\n"
    )
    (console_dir / "bad.yaml").write_text("name: bad\nversion: 1\nchannels: [ chan ]\nspecs: [python >=4]\n")
    progress: list[BuildProgress] = []

    def hook(message):
        if isinstance(message, BuildProgress):
            progress.append(message)

    app = make_app(load_plan=False)
    async with app.run_test(size=(80, 24), message_hook=hook) as pilot:
        await pilot.press("8")
        await wait_workers(pilot)
        screen = app.screen
        assert isinstance(screen, InstallersScreen)
        assert screen.installers == []
        assert "0 installer(s) in mirror/installers" in static_text(app, "#installers-head")

        await build_from(pilot, "my-installer.yaml")
        assert "solved: 6 packages" in "\n".join(screen.lines)
        assert [m.done for m in progress if m.line.startswith("packed")][-1] == 6
        assert progress[-1].line.startswith("written: my-installer-1.0-linux-64.sh (")
        installer = console_dir / "mirror/installers/my-installer-1.0-linux-64.sh"
        assert [b.path.name for b in screen.installers] == [installer.name]
        assert screen.installers[0].packages == 6 and screen.installers[0].platform == "linux-64"
        assert "my-installer-1.0-linux-64.sh: 6 packages" in static_text(app, "#installers-log")
        assert not screen.query_one("#installers-progress").display

        # a build the solver refuses: its explanation in a dialog, and nothing written
        await build_from(pilot, "bad.yaml")
        assert isinstance(app.screen, MessageDialog)
        assert "No candidates were found for python >=4" in static_text(app, "#message")
        await pilot.press("enter")
        assert [b.path.name for b in screen.installers] == [installer.name]
        assert "failed: " in static_text(app, "#installers-log")

    result = run_installer(installer, "-b", "-p", str(console_dir / "prefix"))
    assert result.returncode == 0, result.stderr
    assert (console_dir / "prefix/conda-meta/my_package-1.0-0.json").is_file()


def test_snapshot(snap_compare, console_dir, monkeypatch):
    """The screen at 80x24 after a build. The channel is at a fixed place (the installer, its
    size and its checksum hold the channel's URL), so the picture is the same in every run."""
    import casconsole.console.screens.installers as installers

    monkeypatch.setattr(installers, "ago", lambda timestamp: "a moment ago")
    link = Path("/tmp/cas-installer-snapshot")
    shutil.rmtree(link, ignore_errors=True)
    try:
        write_channel(link / "chan", demo_packages())
        # no python: its stand-in holds the path of the python running the tests
        channels = f"channels: [ {(link / 'chan').as_uri()} ]\n"
        (console_dir / "my-installer.yaml").write_text(
            f"name: my-installer\nversion: 1.0\n{channels}specs: [my_package]\n"
        )

        async def run_before(pilot) -> None:
            await pilot.press("8")
            await wait_workers(pilot)
            await build_from(pilot, "my-installer.yaml")
            pilot.app.clear_notifications()
            await pilot.pause()

        assert snap_compare(make_app(load_plan=False), terminal_size=(80, 24), run_before=run_before)
    finally:
        shutil.rmtree(link)
