"""Regenerate screenshots/*.svg: every console screen at 80x24 (and a few at 120x40), over the demo
upstream.

    python scripts/export_screenshots.py [--out screenshots]

Works in a temporary folder: generates the demo upstream channel, mirrors it with a real sync,
adds an indexed custom channel, then drives the real console (headless, Pilot) to each screen
and saves what it shows. The Server screen's pictures show a real cas-server, started from the
console in the background on a free port, asked a few requests, then stopped. Paths on the
pictures are relative to that folder.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

from casconsole.console.app import CasConsole
from casconsole.console.session import ConsoleState
from casconsole.demo import generate_channel
from casconsole.index.channel import index_channel
from casconsole.serve import daemon
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
SMALL, WIDE = (80, 24), (120, 40)  # an SSH session's terminal, and a larger one


async def settle(pilot) -> None:
    # the Sync and Server screens follow the status log and the server while they live
    workers = [w for w in pilot.app.workers if w.group not in ("sync-follow", "server-watch")]
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


async def until(pilot, condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshots: timed out waiting for {what}")
        await pilot.pause(0.1)


def server_running(then: tuple[str, ...] = ()) -> Steps:
    """The Server screen with cas-server started from it (s) and a few requests served."""

    async def run(pilot) -> None:
        await keys("0")(pilot)
        screen = pilot.app.screen
        await until(pilot, lambda: screen.channel_names, "the Server screen's first look")
        if screen.view.record is None:
            await pilot.press("s")
            await until(pilot, lambda: screen.view.health is not None and screen.view.health.ok, "cas-server")
        base = screen.view.record.url.rstrip("/")
        for path in REQUESTS:
            try:
                with urllib.request.urlopen(base + path, timeout=5) as response:
                    response.read()
            except urllib.error.HTTPError:
                pass  # a 404 in the log, as a real one has
        await until(pilot, lambda: screen.view.requests >= len(REQUESTS), "the access log")
        await keys(*then)(pilot)

    return run


REQUESTS = [
    "/pkgs/linux-64/repodata.json",
    "/pkgs/noarch/repodata.json",
    "/internal-pkgs/linux-64/repodata.json",
    "/internal-pkgs/noarch/repodata.json",
    "/pkgs/linux-64/current_repodata.json",
]

SHOTS: list[tuple[str, Steps, tuple[int, int]]] = [
    ("overview", keys(), SMALL),
    ("config", keys("2", *["down"] * 5), SMALL),
    ("plan", keys("3", "down", "down", "w"), SMALL),
    ("plan-wide", keys("3", "down", "down", "w"), WIDE),
    ("plan-save", keys("3", "down", "down", "w", "ctrl+s"), SMALL),
    # readline blacklisted: python is left without it; W on the warning would whitelist it
    ("plan-dependencies", keys("3", "slash", *"readline", "enter", "b", "escape"), SMALL),
    ("sync", keys("4"), SMALL),
    ("sync-question", keys("4", "s"), SMALL),
    ("sync-history", keys("4", "h"), SMALL),
    ("channels", keys("5", "c"), SMALL),
    ("channels-wide", keys("5", "c"), WIDE),
    ("index", keys("6"), SMALL),
    ("clients", keys("7"), SMALL),
    ("installers", keys("8"), SMALL),
    ("airgap", keys("9"), SMALL),
    ("airgap-export", keys("9", "e", *"stick", "enter"), SMALL),
    ("server", server_running(), SMALL),
    ("server-wide", server_running(), WIDE),
    ("server-token", server_running(("a",)), SMALL),
    ("screens", keys("g"), SMALL),
    ("help", keys("question_mark"), SMALL),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(folder: Path, settings_text: str) -> None:
    """The demo upstream, the settings, a mirror synced once, a custom channel indexed."""
    generate_channel(folder / "upstream", size=0.05)
    (folder / "user.yaml").write_text(settings_text)
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


async def shoot(name: str, steps: Steps, size: tuple[int, int], out: Path) -> Path:
    app = CasConsole(ConsoleState(), probe=False)
    async with app.run_test(size=size) as pilot:
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
        settings = SETTINGS + f"server_port: {free_port()}\n"
        try:
            prepare(folder, settings)
            for name, steps, size in SHOTS:
                (folder / "user.yaml").write_text(settings)  # each shot starts from the same files
                path = asyncio.run(shoot(name, steps, size, out))
                print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
        finally:
            daemon.stop(folder / "mirror")  # the server the Server shots started
            os.chdir(here)
    return 0


if __name__ == "__main__":
    sys.exit(main())
