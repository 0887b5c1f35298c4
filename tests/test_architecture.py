"""The rules of the house (docs/architecture.md), as import-linter contracts in pyproject.toml:
a broken one fails the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_import_contract_is_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert "BROKEN" not in result.stdout and result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 17 kept, 0 broken." in result.stdout
