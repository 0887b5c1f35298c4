"""Sync: start, cancel or attach to a sync; progress, transfers, failures, log."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from .base import ConsoleScreen


class SyncScreen(ConsoleScreen):
    """Mirror the plan: start, cancel or attach to a sync and watch it."""

    NAV = "sync"
    TITLE_TEXT = "Sync"

    def compose_body(self) -> ComposeResult:
        yield Static("the sync engine is not in this tree yet", id="sync-status")


def last_sync_text(settings) -> str:
    return "unknown: the sync engine is not in this tree yet"
