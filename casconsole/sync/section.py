"""What a sync carries besides the mirrored channel: a section (the PyPI mirror, pypi/)."""

from __future__ import annotations

from typing import Any, Protocol


class Section(Protocol):
    """Another part of the mirror a sync carries after the channel: run in the same sync, under
    its lock, into its status log, with its events, stats and exit status. Its events name it
    as their subdir; `source` is what it mirrors from (shown when it runs alone)."""

    name: str
    source: str

    def run(self, sync: Any) -> None:
        """Do the section's work; `sync` is the running `casconsole.sync.engine.Sync` (its
        `emit`, `stats`, `cancel_event`, `verify`, `force_prune`, `worker_pool`)."""

    def cancel(self) -> None: ...
