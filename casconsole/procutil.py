"""Processes named by pid in lock files, records and status logs: whether they still run."""

from __future__ import annotations

import os
from pathlib import Path


def pid_alive(pid: object) -> bool:
    """Is process `pid` running? A value that is no pid (read from a file: anything) is not; a
    zombie, killed but not yet reaped by its parent, is not either."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        pass
    except OverflowError:  # larger than any pid
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc: trust the signal
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]
