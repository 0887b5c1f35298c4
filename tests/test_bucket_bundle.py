"""Across the air gap from a bucket: the connected side syncs into a bucket of a real SeaweedFS
and indexes an internal channel there; `cas-sync --export` reads the bundle from the bucket; the
offline side imports it into a folder, which then holds the bucket's channels file for file."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

from upstream_server import Upstream, make_channel, spec

from casconsole.conda.archive import build_package


def run(*args, config=None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", *args] + (["--config", str(config)] if config else [])
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def test_export_from_a_bucket_then_import_into_a_folder(bucket, tmp_path):
    root = tmp_path / "upstream"
    make_channel(root, {"linux-64": [spec(f"lib{i}", "1.0", "linux-64", kb=200) for i in range(3)],
                        "noarch": [spec("tool", "1.0")]})  # fmt: skip
    config = tmp_path / "connected.yaml"
    config.write_text(f"{bucket.settings_text()}platforms: [linux-64]\ns3_work_dir: {tmp_path / 'work'}\n")
    view = bucket.view
    with Upstream(root) as upstream:
        synced = run("casconsole.cli.sync", "--remote-url", upstream.url, config=config)
    assert synced.returncode == 0, synced.stderr
    internal = build_package(tmp_path / "built", spec("inhouse", "3.1", "noarch"))
    view.put(f"internal-pkgs/noarch/{internal.name}", internal.read_bytes())
    indexed = run("casconsole.cli.index", f"{bucket.url}/internal-pkgs", config=config)
    assert indexed.returncode == 0, indexed.stderr

    manifest = tmp_path / "connected-state.json"
    wrote = run("casconsole.cli.sync", "--manifest", str(manifest), config=config)
    assert wrote.returncode == 0, wrote.stderr
    state = json.loads(manifest.read_text())
    assert state["mirror"] == bucket.url
    carried = {e["path"]: e["sha256"] for e in state["files"]}
    # every object but the mirror's own state and caches (.cas/, <channel>/.cache/)
    objects = {k: v for k, v in view.objects().items() if not any(p.startswith(".") for p in k.split("/"))}
    assert carried == {k: hashlib.sha256(v).hexdigest() for k, v in objects.items()}

    stick = tmp_path / "stick"
    exported = run("casconsole.cli.sync", "--export", str(stick), "--volume-size", "1M", config=config)
    assert exported.returncode == 0, exported.stderr
    assert f"bundle of {bucket.url} (the whole mirror)" in exported.stdout + exported.stderr

    offline = tmp_path / "offline"
    imported = run("casconsole.cli.sync", "--mirror-dir", str(offline), "--import", str(stick))
    assert imported.returncode == 0, imported.stderr
    held = {
        str(p.relative_to(offline)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in offline.rglob("*")
        if p.is_file() and not p.relative_to(offline).parts[0].startswith(".")
    }
    assert held == carried
    assert f"internal-pkgs/noarch/{internal.name}" in held
    # and the offline folder's own manifest names the same state as the bucket's
    again = tmp_path / "offline-state.json"
    assert run("casconsole.cli.sync", "--mirror-dir", str(offline), "--manifest", str(again)).returncode == 0
    assert json.loads(again.read_text())["digest"] == state["digest"]

    refused = run("casconsole.cli.sync", "--import", str(stick), config=config)
    assert refused.returncode == 2 and "a bundle is imported into a mirror folder" in refused.stderr
