"""The core never imports the UI: importing it in a fresh interpreter loads no textual (or rich)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import casconsole

UI_MODULES = {"casconsole.console.app", "casconsole.cli.console"}


def core_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(casconsole.__path__, "casconsole."):
        name = info.name
        if name in UI_MODULES or name.startswith(
            ("casconsole.console.screens", "casconsole.widgets", "casconsole.cli")
        ):
            continue
        names.append(name)
    return names


def test_core_loads_no_textual():
    modules = core_modules()
    assert {
        "casconsole.console.session",
        "casconsole.settings",
        "casconsole.selection.plan",
        "casconsole.selection.filters",
        "casconsole.conda.repodata",
    } <= set(modules)
    code = (
        "import sys, importlib\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, f"the core imported UI modules: {result.stdout}{result.stderr}"
