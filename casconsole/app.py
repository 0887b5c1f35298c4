"""The Textual application: the console's shell (screens live in casconsole/screens/)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from textual.app import App, ComposeResult
from textual.widgets import Footer, Header, Static

from .config import Settings


class CasConsole(App):
    TITLE = "casconsole"

    def __init__(self, settings: Settings, **kwargs: Any):
        super().__init__()
        self.settings = settings

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(f"mirror of {self.settings.remote_url}\ninto {self.settings.channel_dir}")
        yield Footer()


def run_app(
    settings: Settings,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    cli_args: Any = None,
) -> int:
    CasConsole(settings, config_file=config_file, env=env).run()
    return 0
