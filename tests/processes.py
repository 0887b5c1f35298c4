"""Waiting on things and on processes, for the tests that run real commands: one polling loop
and a process's children (whether one still runs, a zombie not counted: casconsole.procutil)."""

from __future__ import annotations

import time
from pathlib import Path


def wait_for(predicate, timeout: float = 10, interval: float = 0.05):
    """Poll `predicate` until it gives something true or `timeout` s pass; its last answer."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


def children(pid: int) -> list[int]:
    """The child processes of `pid` (of any of its threads); none once it is gone."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += map(int, (task / "children").read_text().split())
    except OSError:
        pass
    return found
