"""The Airgap screen driven by keys, as an administrator at 80x24: write the manifest, export a
bundle since another mirror's manifest (the comparison and the room shown before writing),
import it into that mirror (the comparison shown before applying), a damaged bundle refused in a
dialog with nothing changed."""

from __future__ import annotations

import shutil
from pathlib import Path

from bundle_support import cas_ok, snapshot, tree
from console_helpers import make_app, static_text, wait_workers
from textual.widgets import Input

from casconsole.bundle.state import read_state
from casconsole.console.screens.airgap import AirgapScreen, ExportDialog
from casconsole.console.screens.dialogs import ConfirmDialog, MessageDialog, PathDialog

pytest_plugins = ["console_fixtures"]


def use_mirror(console_dir: Path, name: str) -> None:
    user = console_dir / "user.yaml"
    user.write_text(user.read_text().replace("mirror_dir: mirror", f"mirror_dir: {name}"))


async def open_airgap(pilot) -> AirgapScreen:
    await pilot.press("9")
    await wait_workers(pilot)
    assert isinstance(pilot.app.screen, AirgapScreen)
    return pilot.app.screen


async def type_path(pilot, text: str) -> None:
    field = pilot.app.screen.query_one(Input)
    field.value = text
    await pilot.press("enter")
    await wait_workers(pilot)


async def test_manifest_export_and_import_by_keys(internal_channel, console_dir):
    """The mirror of the console tests holds `internal-pkgs`; an older copy of it is the other side."""
    other = console_dir / "other"
    shutil.copytree(console_dir / "mirror", other, symlinks=True)
    lacking = sorted((other / "internal-pkgs/linux-64").glob("curl-*"))
    for gone in lacking:
        gone.unlink()  # the other side lacks curl (both its archives)
    (other / "internal-pkgs/noarch/old-1.0-0.conda").write_bytes(b"a package since removed")
    app = make_app(load_plan=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_airgap(pilot)
        head = static_text(app, "#airgap-head")
        assert "mirror: " in head and "channel(s)" in head
        assert [r.folder for r in screen.rows] == [
            "internal-pkgs",
            "internal-pkgs/linux-64",
            "internal-pkgs/noarch",
        ]

        # m: this mirror's manifest, where the dialog says
        await pilot.press("m")
        assert isinstance(app.screen, PathDialog)
        await type_path(pilot, "here.json")
        assert len(read_state(Path("here.json")).files) == len(tree(console_dir / "mirror"))

        # the other side's manifest, as it would arrive on a stick
        cas_ok("--mirror-dir", str(other), "--manifest", str(console_dir / "other.json"))

        # e: the questions, then the comparison and the room before anything is written
        await pilot.press("e")
        assert isinstance(app.screen, ExportDialog)
        app.screen.query_one("#export-target", Input).value = "stick"
        app.screen.query_one("#export-since", Input).value = "other.json"
        await pilot.press("enter")
        await wait_workers(pilot)
        assert isinstance(app.screen, ConfirmDialog)
        question = app.screen.message
        assert "since other.json" in question and f"{len(lacking)} new, 0 changed, 1 deleted" in question
        assert "free" in question and "needed" in question
        assert not Path("stick").exists()
        await pilot.press("y")
        await wait_workers(pilot)
        assert Path("stick/manifest.json").is_file()
        log = static_text(app, "#airgap-log")
        assert f"wrote stick: {len(lacking)} new, 0 changed, 1 deleted" in log
        rows = {r.folder: r for r in screen.rows}
        assert rows["internal-pkgs/linux-64"].new == len(lacking)
        assert rows["internal-pkgs/noarch"].deleted == 1


async def test_import_shows_the_comparison_then_applies(internal_channel, console_dir):
    source = console_dir / "mirror"
    cas_ok("--mirror-dir", str(source), "--export", str(console_dir / "stick"))
    mirror = console_dir / "offline"
    use_mirror(console_dir, "offline")
    app = make_app(load_plan=False)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_airgap(pilot)
        assert "no mirror at offline yet" in static_text(app, "#airgap-head")
        await pilot.press("i")
        await type_path(pilot, "stick")
        assert isinstance(app.screen, ConfirmDialog)
        question = app.screen.message
        files = sum(1 for p in tree(source) if p.endswith((".conda", ".tar.bz2")))
        assert f"{files} new, 0 changed, 0 deleted" in question and "unsigned" in question
        assert sum(r.new for r in screen.rows) == files
        assert not any(mirror.glob("internal-pkgs/*/*.conda"))  # nothing applied before the answer
        await pilot.press("y")
        await wait_workers(pilot)
        assert "matches its source file for file" in static_text(app, "#airgap-log")
        assert tree(mirror) == tree(source)
        await wait_workers(pilot)
        assert "offline: " in static_text(app, "#airgap-head")  # the new state, scanned again


async def test_a_damaged_bundle_is_refused_in_a_dialog(internal_channel, console_dir):
    cas_ok("--mirror-dir", str(console_dir / "mirror"), "--export", str(console_dir / "stick"))
    other = console_dir / "offline"
    other.mkdir()
    volume = console_dir / "stick/bundle.001"
    data = bytearray(volume.read_bytes())
    data[100] ^= 1
    volume.write_bytes(bytes(data))
    use_mirror(console_dir, "offline")
    app = make_app(load_plan=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_airgap(pilot)
        before = snapshot(other)
        await pilot.press("i")
        await type_path(pilot, "stick")
        await pilot.press("y")
        await wait_workers(pilot)
        assert isinstance(app.screen, MessageDialog)
        message = static_text(app, "#message")
        assert "does not match its sha256" in message and "nothing was changed" in message
        assert snapshot(other) == before
