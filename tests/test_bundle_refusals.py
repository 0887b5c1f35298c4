"""Bundles an offline site must refuse, each with a one-line reason, a non-zero exit status and
nothing changed: tampered, truncated, a volume missing, made against another state, unsigned or
signed by another key when a trusted key is set, a manifest that is hostile or malformed, a
mirror without room. One update bundle is made per module; each test works on copies of it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from bundle_support import cas, cas_ok, make_sites, snapshot, tree, upstream_specs
from test_server_support import server_env
from upstream_server import Upstream, make_channel

from casconsole.bundle.importer import STAGING, journal_path
from casconsole.layout import state_dir


@pytest.fixture
def tmpfs(tmp_path):
    """`tmpfs(size)`: a filesystem of `size` bytes (a small disk, a full stick), unmounted after.
    Mounting needs root; elsewhere the test is skipped, saying so."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("a small filesystem needs root (mount)")
        path = tmp_path / f"disk{len(mounted)}"
        path.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@dataclass
class Update:
    offline: Path  # the offline side before the update
    connected: Path  # the connected side after it
    stick: Path  # the signed bundle from one to the other
    key: Path  # its private key; key.pub the public one


@pytest.fixture(scope="module")
def update(tmp_path_factory) -> Update:
    root = tmp_path_factory.mktemp("update")
    make_channel(root / "upstream", upstream_specs(1))
    with Upstream(root / "upstream") as upstream:
        sites = make_sites(root, upstream)
        cas_ok("--mirror-dir", str(sites.offline), "--manifest", str(root / "offline.json"))
        sites.change_upstream()
    key = root / "key"
    cas_ok("--gen-key", str(key))
    stick = root / "stick"
    cas_ok(
        "--mirror-dir", str(sites.connected), "--export", str(stick), "--since", str(root / "offline.json"),
        "--volume-size", "1M", "--sign-key", str(key),
    )  # fmt: skip
    assert len(list(stick.glob("bundle.*"))) == 2
    return Update(sites.offline, sites.connected, stick, key)


@pytest.fixture
def site(update, tmp_path) -> tuple[Path, Path]:
    """(a copy of the offline mirror, a copy of the stick), mtimes kept (the store stays valid)."""
    offline = shutil.copytree(update.offline, tmp_path / "offline", symlinks=True)
    stick = shutil.copytree(update.stick, tmp_path / "stick")
    return offline, stick


def refused(offline: Path, stick: Path, *words: str, env=None, status: int = 1) -> str:
    """Import, expect a refusal naming `words`, and check that nothing changed."""
    before = snapshot(offline)
    done = cas("--mirror-dir", str(offline), "--import", str(stick), env=env)
    assert done.returncode == status, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    for word in words:
        assert word in errors[0], errors[0]
    assert snapshot(offline) == before
    assert not journal_path(offline).exists()
    assert not (state_dir(offline) / STAGING).exists()
    return errors[0]


def test_the_bundle_applies_to_an_untouched_copy(update, site):
    """The control: the same copies, untouched, import fine."""
    offline, stick = site
    cas_ok("--mirror-dir", str(offline), "--import", str(stick))
    assert tree(offline) == tree(update.connected)


def test_a_changed_byte_in_a_volume_is_refused(site):
    offline, stick = site
    volume = stick / "bundle.002"
    data = bytearray(volume.read_bytes())
    data[len(data) // 3] ^= 0x01
    volume.write_bytes(bytes(data))
    refused(offline, stick, "does not match its sha256", "damaged or was changed", "nothing was changed")


def test_a_truncated_volume_is_refused(site):
    offline, stick = site
    volume = stick / "bundle.002"
    with volume.open("r+b") as fh:
        fh.truncate(volume.stat().st_size - 100)
    refused(offline, stick, "bundle.002", "truncated")


def test_a_missing_volume_is_refused(site):
    offline, stick = site
    (stick / "bundle.001").unlink()
    refused(offline, stick, "bundle.001", "volume 1 of 2 is missing")


def test_a_half_copied_bundle_without_its_manifest_is_refused(site):
    offline, stick = site
    (stick / "manifest.json").unlink()
    refused(offline, stick, "no manifest.json", "export did not finish")


def test_a_bundle_made_against_another_state_is_refused(update, site):
    """The offline side changed after it wrote the manifest the bundle was made since."""
    offline, stick = site
    (offline / "pkgs/noarch/py3-1.0-0.conda").unlink()
    refused(offline, stick, "made against another state", "cas-sync --manifest")


def test_an_unsigned_bundle_is_refused_when_a_key_is_trusted(update, site):
    offline, stick = site
    (stick / "manifest.json.sig").unlink()
    env = server_env(CAS_MIRROR_BUNDLE_TRUSTED_KEY=f"{update.key}.pub")
    refused(offline, stick, "not signed", "bundle_trusted_key", env=env)


def test_a_bundle_signed_by_another_key_is_refused(update, site, tmp_path):
    offline, stick = site
    other = tmp_path / "other"
    cas_ok("--gen-key", str(other))
    env = server_env(CAS_MIRROR_BUNDLE_TRUSTED_KEY=f"{other}.pub")
    refused(offline, stick, "signature does not match", env=env)


def test_a_signed_manifest_edited_is_refused(update, site):
    """Whoever edits the manifest (to match tampered volumes, say) breaks the signature."""
    offline, stick = site
    text = (stick / "manifest.json").read_text()
    (stick / "manifest.json").write_text(
        text.replace('"delete":[\n', '"delete":[\n"pkgs/noarch/py1-1.0-0.conda",\n')
    )
    env = server_env(CAS_MIRROR_BUNDLE_TRUSTED_KEY=f"{update.key}.pub")
    refused(offline, stick, "signature does not match", env=env)


HOSTILE = [
    ("a path out of the mirror", lambda m: _first_path(m, "../../etc/cron.d/evil.conda"), "holds '..'"),
    (
        "the mirror's own state",
        lambda m: _first_path(m, "pkgs/.cas/x.conda"),
        "dot-names are the mirror's own",
    ),
    ("an absolute path", lambda m: _first_path(m, "/etc/passwd"), "empty path part"),
    (
        "a folder in a subdir",
        lambda m: _first_path(m, "pkgs/linux-64/sub/x.conda"),
        "holds files, not folders",
    ),
    ("a package named as no package", lambda m: _first_path(m, "pkgs/linux-64/evil.sh"), "not a .conda"),
    ("an unknown field", lambda m: m.update(extra=1), "unknown field"),
    ("an unknown field of a file", lambda m: m["files"][0].update(mode=0o4755), "unknown field"),
    ("a gap between files", lambda m: m["files"][1].update(offset=m["files"][1]["offset"] + 1), "starts at"),
    ("a volume renamed", lambda m: m["volumes"][1].update(name="../bundle.002"), "not 'bundle.002'"),
    ("a deletion out of the mirror", lambda m: m["delete"].append("../outside.conda"), "delete:"),
    ("a negative size", lambda m: m["files"][0].update(size=-1), "Expected `int` >= 0"),
    ("another format version", lambda m: m.update(version=2), "version"),
]


def _first_path(manifest: dict, path: str) -> None:
    manifest["files"][0]["path"] = path


@pytest.mark.parametrize("what, edit, words", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_manifest_is_refused(site, what, edit, words):
    """Unsigned bundles are parsed strictly too: every path is checked, the layout must add up."""
    offline, stick = site
    (stick / "manifest.json.sig").unlink()
    manifest = json.loads((stick / "manifest.json").read_text())
    edit(manifest)
    (stick / "manifest.json").write_text(json.dumps(manifest))
    message = refused(offline, stick, words)
    assert "manifest.json" in message


def test_a_mirror_without_room_is_refused(update, site, tmpfs):
    """The import states what it needs and checks the mirror's free space before writing."""
    offline, stick = site
    small = tmpfs(4 << 20)  # the mirror fits, the update does not (and the reserve)
    mirror = shutil.copytree(offline, small / "mirror", symlinks=True)
    message = refused(mirror, stick, "the import writes", "is free there", status=4)  # the disk's refusal
    assert "MB" in message


def test_an_export_onto_a_full_stick_is_refused_before_writing(update, tmp_path, tmpfs):
    stick = tmpfs(512 << 10)
    done = cas("--mirror-dir", str(update.connected), "--export", str(stick / "bundle"))
    assert done.returncode == 4, done.stdout + done.stderr  # the disk's refusal, as for a sync
    assert "the bundle needs" in done.stderr and "free there" in done.stderr
    assert "Traceback" not in done.stderr
    assert list(stick.iterdir()) == []


def test_an_export_into_a_folder_of_other_files_is_refused(update, tmp_path):
    target = tmp_path / "documents"
    target.mkdir()
    (target / "thesis.odt").write_bytes(b"precious")
    done = cas("--mirror-dir", str(update.connected), "--export", str(target))
    assert done.returncode == 1 and "holds other files (thesis.odt)" in done.stderr
    assert [p.name for p in target.iterdir()] == ["thesis.odt"]
