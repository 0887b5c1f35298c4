"""The PyPI mirror crosses the air gap in bundles: the scan of a mirror lists its PyPI files
(vouched for by the sync's verified-file store) and its project pages (index files, placed
last), and an export imported into an empty mirror serves pip the same files."""

from __future__ import annotations

import json
from pathlib import Path

from bundle_support import cas_ok, tree
from pypi_index import SimpleIndex, pip_install, tiny_projects
from test_server_support import Server

from casconsole.bundle.state import scan_mirror


def test_pypi_files_and_pages_travel_in_a_bundle_and_pip_installs_offline(tmp_path):
    connected, offline, stick = tmp_path / "connected", tmp_path / "offline", tmp_path / "stick"
    with SimpleIndex(tiny_projects(tmp_path / "dist")) as index:
        config = tmp_path / "cas.yaml"
        config.write_text(
            f"mirror_dir: {connected}\npypi:\n  index_url: {index.url}\n  projects: [app]\n  closure: true\n"
        )
        cas_ok("--config", str(config), "--pypi-only")

    state, stats = scan_mirror(connected)
    kinds = {path: entry.kind for path, entry in state.files.items()}
    assert kinds["pypi/files/app/app-1.0-py3-none-any.whl"] == "file"
    assert kinds["pypi/files/app/app-1.0-py3-none-any.whl.metadata"] == "file"
    assert kinds["pypi/simple/app/index.html"] == "index" and kinds["pypi/simple/lib/index.json"] == "index"
    # the files are vouched for by the sync's records, not read again; the pages are hashed
    assert stats.hashed == sum(1 for kind in kinds.values() if kind == "index")

    cas_ok("--mirror-dir", str(connected), "--export", str(stick))
    offline.mkdir()
    cas_ok("--mirror-dir", str(offline), "--import", str(stick))
    pypi = {p: v for p, v in tree(connected).items() if p.startswith("pypi/")}
    assert pypi and {p: v for p, v in tree(offline).items() if p.startswith("pypi/")} == pypi

    with Server(offline, workers=1, private="") as server:
        done = pip_install(tmp_path / "venv", f"{server.url}/pypi/simple/", "app")
        assert done.returncode == 0, done.stdout + done.stderr
    page = json.loads((offline / "pypi/simple/lib/index.json").read_text())
    assert [f["filename"] for f in page["files"]] == ["lib-1.0-py3-none-any.whl", "lib-1.1-py3-none-any.whl"]
    assert Path(offline / "pypi/files/lib/lib-1.1-py3-none-any.whl").is_file()
