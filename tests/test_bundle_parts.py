"""The parts of bundle/ on real files: path rules, sizes, volumes, state and manifest files,
signatures, the target's filesystem, and cas-sync's air-gap flags as a user meets them."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from bundle_support import cas, cas_ok, snapshot, tree
from test_server_support import server_env
from upstream_server import spec

from casconsole.bundle.export import plan_export
from casconsole.bundle.manifest import Carried, Manifest, Volume
from casconsole.bundle.paths import PathProblem, check_path
from casconsole.bundle.signing import SigningError, generate_key, load_private_key, sign, verify
from casconsole.bundle.state import BundleError, Entry, MirrorState, scan_mirror
from casconsole.bundle.volumes import (
    DEFAULT_VOLUME_SIZE,
    FAT_MAX_FILE,
    VolumeProblem,
    VolumeReader,
    VolumeWriter,
    filesystem_type,
    parse_size,
)
from casconsole.conda.archive import build_package

SHA = "a" * 64


@pytest.mark.parametrize(
    "text, size",
    [
        ("4G", 4 << 30),
        ("4GiB", 4 << 30),
        ("700M", 700 << 20),
        ("1.5g", 3 << 29),
        ("1048576", 1 << 20),
        ("64k", 65536),
    ],
)
def test_sizes_read_as_users_write_them(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "4 X", "-1G", "G", "4GG", "1e9"])
def test_a_size_that_is_not_one_says_so(text):
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


def test_the_default_volume_fits_fat32():
    assert DEFAULT_VOLUME_SIZE < FAT_MAX_FILE < parse_size("4G")


@pytest.mark.parametrize(
    "path, kind",
    [
        ("pkgs/linux-64/numpy-1.26.4-py312h_0.conda", "file"),
        ("pkgs/noarch/six-1.16.0-pyhd3eb1b0_1.tar.bz2", "file"),
        ("pkgs/linux-64/repodata.json", "index"),
        ("pkgs/linux-64/repodata.json.zst", "index"),
        ("internal-pkgs/channeldata.json", "index"),
        ("pypi/simple/requests/index.html", "file"),  # a later kind: the general rule only
        ("installers/my-installer-1.0-linux-64.sh", "file"),
    ],
)
def test_paths_a_bundle_may_carry(path, kind):
    assert check_path(path) == kind


@pytest.mark.parametrize(
    "path, why",
    [
        ("", "empty path"),
        ("numpy-1.0-0.conda", "inside a channel folder"),
        ("/etc/passwd", "empty path part"),
        ("pkgs/../../etc/passwd", "holds '..'"),
        ("pkgs/./linux-64/x.conda", "holds '.'"),
        (".cas/verified/pkgs/linux-64.tsv", "starts with a dot"),
        ("pkgs/linux-64/.x-1.0-0.conda.part", "starts with a dot"),
        ("pkgs\\linux-64/x.conda", "backslash"),
        ("pkgs/linux-64/x:y-1.0-0.conda", "colon"),
        ("pkgs/linux-64/x\n-1.0-0.conda", "control character"),
        ("pkgs/linux-64/run.sh", "not a .conda or .tar.bz2"),
        ("pkgs/linux-64/a/b.conda", "not folders"),
        ("pkgs/" + "x" * 300 + "/y", "too long"),
    ],
)
def test_paths_a_bundle_must_not_carry(path, why):
    with pytest.raises(PathProblem, match=why.replace("\\", "\\\\").replace(".", r"\.")):
        check_path(path)


def test_a_kind_that_contradicts_the_path_is_refused():
    with pytest.raises(PathProblem, match="its kind is 'file', not 'index'"):
        check_path("pkgs/linux-64/x-1.0-0.conda", "index")


# ---------------------------------------------------------------- volumes


def test_a_stream_cut_into_volumes_reads_back_across_them(tmp_path):
    rng = random.Random(14)
    files = [rng.randbytes(n) for n in (0, 1, 999, 1000, 1001, 3500, 7, 2048)]
    writer = VolumeWriter(tmp_path, 1000)
    for data in files:
        writer.write(data)
    volumes = writer.close()
    total = sum(map(len, files))
    assert [size for _, size in volumes] == [1000] * (total // 1000) + [total % 1000]
    assert [name for name, _ in volumes][:3] == ["bundle.001", "bundle.002", "bundle.003"]
    assert not list(tmp_path.glob(".*"))  # no temporary left
    with VolumeReader(tmp_path, volumes) as reader:
        reader.check()
        offset = 0
        for data in files:
            assert b"".join(bytes(c) for c in reader.read(offset, len(data))) == data
            offset += len(data)
        with pytest.raises(VolumeProblem, match="past the end"):
            list(reader.read(offset, 1))


def test_a_volume_shorter_or_longer_than_the_manifest_says_is_named(tmp_path):
    writer = VolumeWriter(tmp_path, 100)
    writer.write(bytes(250))
    volumes = writer.close()
    with (tmp_path / "bundle.003").open("ab") as fh:
        fh.write(b"x")
    with pytest.raises(VolumeProblem, match="bundle.003: 51 bytes, the manifest says 50"):
        VolumeReader(tmp_path, volumes).check()


def test_the_target_filesystem_is_told_from_mountinfo(tmp_path):
    assert filesystem_type(tmp_path) not in ("", "vfat")
    assert filesystem_type(tmp_path / "not" / "made" / "yet") == filesystem_type(tmp_path)
    if os.geteuid() != 0:
        return
    disk = tmp_path / "my disk"  # a space: mountinfo writes it as \040
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        assert filesystem_type(disk / "bundle") == "tmpfs"
    finally:
        subprocess.run(["umount", "-l", str(disk)])


def _mirror(root: Path, names: list[str]) -> Path:
    for name in names:
        build_package(root / "team" / "noarch", spec(name, "1.0", kb=4), ".conda")
    return root


def test_a_fat_target_refuses_volumes_it_cannot_hold(tmp_path):
    """FAT32 holds 4 GiB - 1 byte a file (this machine's kernel has no vfat to mount: the
    filesystem type is the one mountinfo would report for a stick)."""
    mirror = _mirror(tmp_path / "mirror", ["a", "b"])
    plan = plan_export(mirror, tmp_path / "stick", volume_size=4 << 30)
    assert plan.problem() is None
    plan.fstype = "vfat"
    assert "FAT filesystem (vfat)" in plan.problem() and "below 4G" in plan.problem()
    plan.volume_size = DEFAULT_VOLUME_SIZE
    assert plan.problem() is None


# ---------------------------------------------------------------- state and manifest files


def test_a_state_file_round_trips_and_refuses_edits(tmp_path):
    mirror = _mirror(tmp_path / "mirror", ["a", "b", "c"])
    state, stats = scan_mirror(mirror)
    assert stats.hashed == 3 and len(state.files) == 3
    again, stats = scan_mirror(mirror)
    assert stats.hashed == 0 and again.digest == state.digest  # the store vouches for them now
    data = state.to_bytes()
    assert MirrorState.from_bytes(data, "s.json").files == state.files
    assert data.count(b"\n") == 5  # a file a line
    edited = data.replace(b'"size":', b'"size":1', 1)
    with pytest.raises(BundleError, match="s.json: its digest does not match"):
        MirrorState.from_bytes(edited, "s.json")
    loaded = json.loads(data)
    loaded["files"].append(dict(loaded["files"][0]))
    with pytest.raises(BundleError, match="listed twice"):
        MirrorState.from_bytes(json.dumps(loaded).encode(), "s.json")
    with pytest.raises(BundleError, match="not valid JSON"):
        MirrorState.from_bytes(data[:-10], "s.json")


def test_a_manifest_round_trips(tmp_path):
    manifest = Manifest(
        base=None,
        target="sha256:" + SHA,
        volume_size=1 << 20,
        volumes=[Volume("bundle.001", 10)],
        files=[
            Carried("pkgs/noarch/a-1-0.conda", 0, SHA, "file", 0),
            Carried("pkgs/noarch/b-1-0.conda", 10, SHA, "file", 0),
        ],
        delete=["pkgs/noarch/old-1-0.conda"],
    )
    parsed = Manifest.from_bytes(manifest.to_bytes(), "m.json")
    assert (parsed.files, parsed.delete, parsed.volumes) == (
        manifest.files,
        manifest.delete,
        manifest.volumes,
    )
    empty = Manifest(base="sha256:" + SHA, target="sha256:" + SHA, volume_size=1 << 20)
    assert Manifest.from_bytes(empty.to_bytes(), "m.json").files == []


def test_entries_are_typed_strictly():
    with pytest.raises(Exception, match="Expected `str` matching regex"):
        import msgspec

        msgspec.json.decode(b'{"path":"a/b","size":1,"sha256":"xyz","kind":"file"}', type=Entry)


# ---------------------------------------------------------------- signatures


def test_a_signature_holds_for_its_bytes_only(tmp_path):
    public = generate_key(tmp_path / "k")
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    sig = tmp_path / "m.sig"
    sig.write_bytes(sign(tmp_path / "k", b"manifest"))
    verify(public, b"manifest", sig)
    with pytest.raises(SigningError, match="does not match"):
        verify(public, b"manifesT", sig)
    sig.write_text("not base64 !\n")
    with pytest.raises(SigningError, match="not a signature"):
        verify(public, b"manifest", sig)
    with pytest.raises(SigningError, match="exists already"):
        generate_key(tmp_path / "k")


def test_keys_of_other_kinds_are_refused_by_name(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "rsa").write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(SigningError, match="not Ed25519"):
        load_private_key(tmp_path / "rsa")
    locked = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    (tmp_path / "locked").write_bytes(locked)
    with pytest.raises(SigningError, match="passphrase"):
        load_private_key(tmp_path / "locked")
    (tmp_path / "junk").write_text("hello")
    with pytest.raises(SigningError, match="not a usable private key"):
        load_private_key(tmp_path / "junk")


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen is not installed")
def test_openssh_keys_sign_and_verify(tmp_path):
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (tmp_path / "sig").write_bytes(sign(key, b"data"))
    verify(Path(f"{key}.pub"), b"data", tmp_path / "sig")


# ---------------------------------------------------------------- the flags, as a user meets them


def test_export_only_flags_without_export_are_usage_errors(tmp_path):
    done = cas("--mirror-dir", str(tmp_path), "--manifest", str(tmp_path / "m.json"), "--since", "x.json")
    assert done.returncode == 2 and "--since goes with --export" in done.stderr
    done = cas("--mirror-dir", str(tmp_path), "--export", str(tmp_path / "b"), "--volume-size", "4 bananas")
    assert done.returncode == 2 and "--volume-size: '4 bananas' is not a size" in done.stderr
    done = cas("--manifest", "a", "--import", "b")
    assert done.returncode == 2 and "not allowed with argument" in done.stderr


def test_the_trusted_key_is_a_setting_with_its_origin(tmp_path):
    config = tmp_path / "cas.yaml"
    config.write_text("bundle_trusted_key: keys/cas-mirror.pub\n")
    shown = json.loads(cas_ok("--config", str(config), "--show", "--json").stdout)
    assert shown["bundle_trusted_key"]["value"] == str(tmp_path / "keys/cas-mirror.pub")
    assert shown["bundle_trusted_key"]["source"] == f"{config}:1"
    missing = cas("--config", str(config), "--mirror-dir", str(tmp_path / "m"), "--import", str(tmp_path))
    assert missing.returncode == 1 and "cannot read the trusted key" in missing.stderr


def test_a_manifest_of_no_mirror_is_an_empty_state_and_makes_nothing(tmp_path):
    done = cas_ok("--mirror-dir", str(tmp_path / "none"), "--manifest", str(tmp_path / "m.json"))
    assert "0 files in 0 channel(s)" in done.stdout
    assert not (tmp_path / "none").exists()


def test_an_export_replaces_a_former_bundle_in_its_folder(tmp_path):
    mirror = _mirror(tmp_path / "mirror", ["a", "b"])
    cas_ok("--mirror-dir", str(mirror), "--export", str(tmp_path / "stick"))
    first = json.loads((tmp_path / "stick/manifest.json").read_text())
    build_package(mirror / "team" / "noarch", spec("c", "1.0", kb=4), ".conda")
    cas_ok("--mirror-dir", str(mirror), "--export", str(tmp_path / "stick"))
    second = json.loads((tmp_path / "stick/manifest.json").read_text())
    assert len(second["files"]) == len(first["files"]) + 1
    assert sorted(p.name for p in (tmp_path / "stick").iterdir()) == ["bundle.001", "manifest.json"]


def _start(*args: str) -> subprocess.Popen:
    import fcntl

    process = subprocess.Popen(
        [sys.executable, "-m", "casconsole.cli.sync", *args, "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=server_env(),
    )  # fmt: skip
    fcntl.fcntl(process.stdout.fileno(), 1031, 4096)  # F_SETPIPE_SZ: it blocks when the test stops reading
    return process


def _stop_during(process: subprocess.Popen, stage: str, sig: int) -> tuple[int, str]:
    for line in process.stdout:
        event = json.loads(line)
        if event["event"] == "file" and event["stage"] == stage:
            break
    process.send_signal(sig)
    process.stdout.read()
    return process.wait(30), process.stderr.read().decode()


@pytest.fixture
def many(tmp_path) -> Path:
    """A mirror of 120 packages: enough events that a signal lands in the middle."""
    return _mirror(tmp_path / "mirror", [f"p{i:03d}" for i in range(120)])


def test_sigterm_stops_an_export_without_a_manifest(many, tmp_path):
    status, stderr = _stop_during(
        _start("--mirror-dir", str(many), "--export", str(tmp_path / "stick")), "writing", signal.SIGTERM
    )
    assert status == 130 and "SIGTERM: stopping" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "stick/manifest.json").exists()
    again = cas_ok("--mirror-dir", str(many), "--export", str(tmp_path / "stick"))  # the folder is reused
    assert "120 new" in again.stdout


def test_ctrl_c_stops_an_import_with_nothing_changed(many, tmp_path):
    cas_ok("--mirror-dir", str(many), "--export", str(tmp_path / "stick"))
    offline = tmp_path / "offline"
    _mirror(offline, ["a"])
    before = snapshot(offline)
    status, stderr = _stop_during(
        _start("--mirror-dir", str(offline), "--import", str(tmp_path / "stick")), "checking", signal.SIGINT
    )
    assert status == 130 and "run the same command again" in stderr and "Traceback" not in stderr
    assert snapshot(offline) == before
    assert not (offline / ".cas/import").exists()


def test_a_channel_only_the_offline_side_has_is_left_alone(tmp_path):
    """The offline site builds its own channel: an update deletes nothing in it, and deletes in
    the channels both sides have what the connected side no longer holds."""
    connected = _mirror(tmp_path / "connected", ["a", "b"])
    offline = tmp_path / "offline"
    shutil.copytree(connected, offline)
    _mirror(offline, ["old"])  # team/noarch/old: gone from the connected side
    build_package(offline / "site-own" / "noarch", spec("ours", "1.0", kb=4), ".conda")
    cas_ok("--mirror-dir", str(offline), "--manifest", str(tmp_path / "offline.json"))
    build_package(connected / "team" / "noarch", spec("c", "1.0", kb=4), ".conda")
    exported = cas_ok(
        "--mirror-dir",
        str(connected),
        "--export",
        str(tmp_path / "stick"),
        "--since",
        str(tmp_path / "offline.json"),
    )
    assert "1 new, 0 changed, 1 deleted" in exported.stdout
    imported = cas_ok("--mirror-dir", str(offline), "--import", str(tmp_path / "stick"))
    assert "channels of its own" in imported.stdout
    assert (offline / "site-own/noarch/ours-1.0-0.conda").is_file()
    assert not (offline / "team/noarch/old-1.0-0.conda").exists()
    assert {p: v for p, v in tree(offline).items() if p.startswith("team/")} == tree(connected)


def test_a_folder_where_the_bundle_puts_a_file_is_refused(tmp_path):
    mirror = _mirror(tmp_path / "mirror", ["a"])
    cas_ok("--mirror-dir", str(mirror), "--export", str(tmp_path / "stick"))
    offline = tmp_path / "offline"
    (offline / "team/noarch/a-1.0-0.conda").mkdir(parents=True)
    before = snapshot(offline)
    done = cas("--mirror-dir", str(offline), "--import", str(tmp_path / "stick"))
    assert done.returncode == 1 and "a folder stands where the bundle puts a file" in done.stderr
    assert snapshot(offline) == before and not (offline / ".cas/bundle-import.json").exists()
