"""Our package as an installation has it, before a benchmark times it.

pip compiles a package's bytecode when it installs it (the peers' was compiled so); an editable
install of casconsole has none, and this machine sets PYTHONDONTWRITEBYTECODE, so without this
every run of ours would compile its modules from source again: 0.3-0.6 s of a dry run's 3-4 s,
most of a no-op sync's 0.3 s (measured).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def compile_bytecode(*others: Path) -> None:
    """Compile the bytecode of this checkout's casconsole and widgets, and of the copies of the
    package in `others` (a benchmark's baseline)."""
    folders = [str(ROOT / "casconsole"), str(ROOT / "widgets")] + [str(o / "casconsole") for o in others]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *folders], check=True)
