"""Typed progress events shared by the long-running core operations (sync, index).

The core takes an optional sink and returns a stats object; the CLI and the console differ only
in the sink they pass. Each operation defines its own event classes by subclassing `Event`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, ClassVar


@dataclasses.dataclass(frozen=True)
class Event:
    """Base of all progress events; `kind` names the event in JSON lines."""

    kind: ClassVar[str] = "event"

    def to_json(self) -> dict[str, Any]:
        data = {"event": self.kind, "time": time.time()}
        data.update(dataclasses.asdict(self))
        return data


Sink = Callable[[Event], None]


def null_sink(event: Event) -> None:
    """The sink used when the caller passes none."""
