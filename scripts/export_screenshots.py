"""Regenerate screenshots/*.svg: every console screen at 80x24, over the demo upstream.

    python scripts/export_screenshots.py [--out screenshots]

Works in a temporary folder: generates the demo upstream channel, mirrors it with a real sync,
adds an indexed custom channel, then drives the real console (headless, Pilot) to each screen
and saves what it shows. Paths on the pictures are relative to that folder.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from casconsole.console.app import CasConsole
from casconsole.console.session import ConsoleState
from casconsole.demo import generate_channel
from casconsole.index.channel import index_channel
from casconsole.settings import load_settings
from casconsole.sync.engine import Sync

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = """\
# casconsole demo settings
remote_url: upstream
mirror_dir: mirror
platforms: [linux-64, osx-arm64]
license_blacklist: [AGPL]
blacklist:
  - r-*
  - mkl
  - python 3.9.*
whitelist:
  - r-dplyr
"""

Steps = Callable[[object], Awaitable[None]]


async def settle(pilot) -> None:
    workers = [w for w in pilot.app.workers if w.group != "sync-follow"]
    if workers:
        await pilot.app.workers.wait_for_complete(workers)
    await pilot.pause(0.3)


def keys(*pressed: str) -> Steps:
    async def run(pilot) -> None:
        await settle(pilot)
        for key in pressed:
            await pilot.press(key)
            await settle(pilot)
        pilot.app.clear_notifications()
        await pilot.pause(0.3)

    return run


SHOTS: list[tuple[str, Steps]] = [
    ("overview", keys()),
    ("config", keys("2", *["down"] * 5)),
    ("plan", keys("3", "down", "down", "w")),
    ("plan-save", keys("3", "down", "down", "w", "ctrl+s")),
    # readline blacklisted: python is left without it; the filter lists what is broken
    (
        "plan-dependencies",
        keys("3", "slash", *"readline", "enter", "b", "slash", "ctrl+u", "enter", *["f"] * 8),
    ),
    ("sync", keys("4")),
    ("channels", keys("5", "c")),
    ("index", keys("6")),
    ("clients", keys("7")),
    ("airgap", keys("8")),
    ("airgap-export", keys("8", "e", *"stick", "enter")),
    ("help", keys("question_mark")),
]


def prepare(folder: Path) -> None:
    """The demo upstream, the settings, a mirror synced once, a custom channel indexed."""
    generate_channel(folder / "upstream", size=0.05)
    (folder / "user.yaml").write_text(SETTINGS)
    settings = load_settings()
    stats = Sync(settings).run()
    if stats.state != "done":
        raise SystemExit(f"the demo sync did not finish: {stats.state} {stats.error or ''}")
    internal = folder / "mirror" / "internal-pkgs"
    for subdir, prefixes in {"linux-64": ("curl-", "zlib-"), "noarch": ("six-", "flask-")}.items():
        (internal / subdir).mkdir(parents=True, exist_ok=True)
        for path in sorted((folder / "upstream" / subdir).iterdir()):
            if path.name.startswith(prefixes):
                shutil.copy2(path, internal / subdir / path.name)
    index_channel(internal, workers=1)


async def shoot(name: str, steps: Steps, out: Path) -> Path:
    app = CasConsole(ConsoleState(), probe=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await steps(pilot)
        app.save_screenshot(filename=f"{name}.svg", path=str(out))
    return out / f"{name}.svg"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots", help="where the SVGs go")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    here = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="casconsole-shots-") as tmp:
        folder = Path(tmp)
        os.chdir(folder)
        os.environ["CAS_MIRROR_USER_CONFIG"] = "user.yaml"
        os.environ["CAS_MIRROR_SYSTEM_CONFIG"] = "system.yaml"
        for var in [v for v in os.environ if v.startswith("CAS_MIRROR_") and not v.endswith("_CONFIG")]:
            del os.environ[var]
        try:
            prepare(folder)
            for name, steps in SHOTS:
                (folder / "user.yaml").write_text(SETTINGS)  # each shot starts from the same files
                path = asyncio.run(shoot(name, steps, out))
                print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
        finally:
            os.chdir(here)
    return 0


if __name__ == "__main__":
    sys.exit(main())
