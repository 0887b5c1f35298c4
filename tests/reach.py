"""This checkout as another user sees it, for the tests that drop to one (`setpriv` to nobody).

A checkout under a folder closed to others (`git clone . "$(mktemp -d)/fresh"`: mktemp makes
that folder 0700) cannot be run by nobody: its interpreter and code are out of reach, and the
command fails before it can meet the refusal the test is about. In a private mount namespace,
each folder to hide is covered with an empty tmpfs open to all, and what the command needs (the
checkout, Python's own folder) is bound back at its own path: the command sees the same paths,
and every other file keeps its owner and mode. The units' sandbox (test_contrib_systemd.py)
hides /root and /home so, as ProtectHome does.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]


def needed() -> list[Path]:
    """What a command of this checkout reads: the checkout (its venv inside) and Python's folder."""
    return sorted({CHECKOUT, Path(sys.base_prefix).resolve()})


def closed_to_others(path: Path) -> Path | None:
    """The topmost folder above `path` that others cannot pass through (no o+x), if any."""
    for folder in reversed(path.parents):
        if folder != folder.parent and not os.stat(folder).st_mode & stat.S_IXOTH:
            return folder
    return None


def hiding(folders: list[Path], paths: list[Path]) -> dict[str, list[str]]:
    """`folders` to cover (those inside another are covered with it) -> the `paths` under each,
    to bind back: COVER's argument."""
    top = [f for f in folders if not any(f != g and f.is_relative_to(g) for g in folders)]
    return {str(f): [str(p) for p in paths if p.is_relative_to(f)] for f in top}


def closed_folders(paths: list[Path]) -> list[Path]:
    """The topmost folders closed to others above any of `paths`."""
    return sorted({folder for path in paths if (folder := closed_to_others(path)) is not None})


# Python run in the namespace: cover each folder, bind back what is under it (through a descriptor
# opened before, the path being hidden by then; --no-canonicalize keeps mount from resolving it)
COVER = r"""
import os, subprocess
def cover(hide):
    for folder, paths in sorted(hide.items()):
        kept = [(path, os.open(path, os.O_RDONLY | os.O_DIRECTORY)) for path in paths]
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=1m", "tmpfs", folder], check=True)
        for path, fd in kept:
            os.makedirs(path, exist_ok=True)
            subprocess.run(["mount", "--no-canonicalize", "--rbind", f"/proc/{os.getpid()}/fd/{fd}", path],
                           check=True)
            os.close(fd)
"""

# COVER, then the rest of the command line: `python -c REACH HIDE command...`
REACH = (
    COVER
    + r"""
import json, sys
cover(json.loads(sys.argv[1]))
os.execvp(sys.argv[2], sys.argv[2:])
"""
)


def reachable() -> list[str]:
    """The prefix that makes this checkout reachable by another user (nothing when it is)."""
    paths = needed()
    closed = closed_folders(paths)
    if not closed:
        return []
    return ["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-c", REACH,
            json.dumps(hiding(closed, paths))]  # fmt: skip
