"""The Channels screen shows uploads live (issue 19, point 4): a package uploaded with cas-upload
to a real cas-server serving the console's mirror appears without a key pressed."""

from __future__ import annotations

import asyncio

from console_helpers import make_app, static_text, wait_workers
from test_server_support import Server
from upload_support import add_token, cas_upload, package

pytest_plugins = ["console_fixtures"]


async def until(pilot, predicate, seconds: float = 10) -> bool:
    for _ in range(int(seconds / 0.1)):
        if predicate():
            return True
        await pilot.pause(0.1)
    return predicate()


async def test_the_channels_screen_shows_an_upload_as_it_lands(internal_channel, tmp_path):
    mirror = internal_channel.parent.resolve()
    token = add_token(mirror, "internal-pkgs")
    fresh = package(tmp_path / "dist", "fresh", "0.9")
    arm = package(tmp_path / "dist", "armtool", subdir="osx-arm64")
    app = make_app(load_plan=False)
    with Server(mirror, workers=1, private="") as srv:
        args = ("--channel", "internal-pkgs", "--server", srv.url, "--token", token)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("5")
            await wait_workers(pilot)
            screen = app.screen
            assert screen.channel.name == "internal-pkgs" and screen.subdir == "linux-64"

            def names() -> set[str]:
                return {r.name for r in screen.repodata.records} if screen.repodata else set()

            shown, count = names(), len(screen.repodata.records)
            assert "fresh" not in shown and len(shown) == 3
            screen.table.move_to_index(
                next(i for i, r in enumerate(screen.repodata.records) if r.name == "zlib")
            )

            done = await asyncio.to_thread(cas_upload, str(fresh), *args)
            assert done.returncode == 0, done.stderr
            assert await until(pilot, lambda: "fresh" in names())
            assert names() == shown | {"fresh"}
            assert "1 new at" in static_text(app, "#channels-head")
            assert f"{count + 1} of {count + 1} packages" in static_text(app, "#channels-count")
            record = screen.repodata.records[screen.table.cursor_index]
            assert record.name == "zlib"  # the cursor stayed on its package

            # an upload that makes a new subdir: it joins the head, the subdir shown stays
            done = await asyncio.to_thread(cas_upload, str(arm), *args)
            assert done.returncode == 0, done.stderr
            assert await until(pilot, lambda: "osx-arm64" in static_text(app, "#channels-head"))
            assert screen.subdir == "linux-64" and "fresh" in names()
