"""The Clients screen driven by keys: the `.condarc` from `public_url` and the `client_*` keys,
the order changed and saved back to the settings file, the file written for the clients, and
the secrets (a token, a proxy password) kept off the screen but in the file."""

from __future__ import annotations

from pathlib import Path

import yaml
from console_helpers import make_app, static_text
from textual.widgets import Input

from casconsole.console.screens.clients import ClientsScreen
from casconsole.console.screens.dialogs import MessageDialog, PathDialog, SaveDialog
from casconsole.serve.condarc import Condarc
from casconsole.settings import load_settings

pytest_plugins = ["console_fixtures"]

TOKEN = "s3cr3t-token"
CLIENTS = f"""\
public_url: https://conda.example.org
client_channels:
  - pkgs
  - https://conda.anaconda.org/t/{TOKEN}/channel2
  - defaults
client_proxy_servers: http://bob:hunter2@proxy.example.org:3128
"""


async def open_clients(pilot) -> ClientsScreen:
    await pilot.press("7")
    await pilot.pause()
    assert isinstance(pilot.app.screen, ClientsScreen)
    return pilot.app.screen


async def test_the_screen_shows_public_url_and_the_admins_order_with_secrets_hidden(internal_channel):
    with Path("user.yaml").open("a") as fh:
        fh.write(CLIENTS)
    app = make_app(load_plan=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_clients(pilot)
        assert screen.query_one("#clients-url", Input).value == "https://conda.example.org"
        # the order of the settings, then the channel found under the mirror, unused
        assert [(c.entry, c.use) for c in screen.channels] == [
            ("pkgs", True),
            (f"https://conda.anaconda.org/t/{TOKEN}/channel2", True),
            ("defaults", True),
            ("internal-pkgs", False),
        ]
        preview = static_text(app, "#clients-preview")
        assert "https://conda.example.org/pkgs" in preview and "127.0.0.1" not in preview
        assert "https://conda.anaconda.org/t/<hidden>/channel2" in preview
        assert TOKEN not in preview and "hunter2" not in preview
        url_column = screen.table.columns[2]
        assert [url_column.text(i) for i in range(4)][1] == "https://conda.anaconda.org/t/<hidden>/channel2"
        # what the screen would write is what cas-server --condarc prints from the same settings
        assert screen.text() == Condarc.from_settings(load_settings()).text()


async def test_order_url_and_ssl_verify_saved_to_the_settings_file(internal_channel):
    app = make_app(load_plan=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_clients(pilot)
        await pilot.press("s")  # nothing changed yet: nothing to save
        await pilot.pause()
        assert not isinstance(app.screen, SaveDialog)
        await pilot.press("J", "v")  # pkgs below internal-pkgs; ssl_verify false
        await pilot.press("e")
        field = screen.query_one("#clients-url", Input)
        field.value = "https://conda.example.org/"
        await pilot.press("enter", "s")
        await pilot.pause()
        assert isinstance(app.screen, SaveDialog)
        diff = static_text(app, "#diff")
        assert "+client_channels:" in diff and "+public_url: https://conda.example.org" in diff
        await pilot.press("y")
        await pilot.pause()
        saved = yaml.safe_load(Path("user.yaml").read_text())
        assert saved["client_channels"] == ["internal-pkgs", "pkgs"]
        assert saved["public_url"] == "https://conda.example.org" and saved["client_ssl_verify"] is False
        assert saved["blacklist"] == ["r-*", "mkl"]  # the rest of the file as it was
        assert Path("user.yaml.bak").exists()
        assert app.state.saved.client_channels == ["internal-pkgs", "pkgs"]
        # the command-line tool now prints what the screen shows
        printed = Condarc.from_settings(load_settings()).data()
        assert printed["channels"] == [
            "https://conda.example.org/internal-pkgs",
            "https://conda.example.org/pkgs",
        ]
        assert printed["ssl_verify"] is False


async def test_a_file_with_secrets_is_written_whole_but_never_into_the_served_mirror(
    internal_channel, monkeypatch, tmp_path
):
    with Path("user.yaml").open("a") as fh:
        fh.write(CLIENTS)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    app = make_app(load_plan=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_clients(pilot)
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, PathDialog)
        field = app.screen.query_one(Input)
        assert field.value == str(tmp_path / "home" / "condarc")  # not the mirror folder
        field.value = "mirror/condarc"
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, MessageDialog)
        assert "inside the mirror folder" in static_text(app, "#message")
        assert not Path("mirror/condarc").exists()
        await pilot.press("enter", "ctrl+s")
        await pilot.pause()
        app.screen.query_one(Input).value = "client/.condarc"
        await pilot.press("enter")
        await pilot.pause()
    data = yaml.safe_load(Path("client/.condarc").read_text())
    assert data["channels"][1] == f"https://conda.anaconda.org/t/{TOKEN}/channel2"
    assert data["proxy_servers"] == {
        "http": "http://bob:hunter2@proxy.example.org:3128",
        "https": "http://bob:hunter2@proxy.example.org:3128",
    }
