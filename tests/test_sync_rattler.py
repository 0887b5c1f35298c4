"""End to end: the demo upstream mirrored by the sync engine, served over HTTP, then solved and
installed from by a conda client (py-rattler)."""

from __future__ import annotations

import hashlib
import json

from conda_client import installed_as_archived, solve_and_install

from casconsole.demo import DemoServer
from casconsole.settings import load_settings
from casconsole.sync.engine import Sync


def test_rattler_installs_requests_and_its_dependencies_from_the_synced_mirror(
    demo_channel, demo_url, tmp_path
):
    mirror = tmp_path / "mirror"
    settings = load_settings(
        cli={
            "remote_url": (demo_url, "test"),
            "mirror_dir": (str(mirror), "test"),
            "platforms": (["linux-64"], "test"),
        }
    )
    stats = Sync(settings).run()
    assert stats.state == "done" and stats.failed == 0
    # the upstream patch is kept: requests 2.28.2's record is upstream's, not its index.json
    upstream = json.loads((demo_channel / "noarch" / "repodata.json").read_bytes())
    ours = json.loads((mirror / "pkgs" / "noarch" / "repodata.json").read_bytes())
    patched = [fn for fn in upstream["packages"] if fn.startswith("requests-2.28.2-")]
    assert patched and all(ours["packages"][fn] == upstream["packages"][fn] for fn in patched)
    assert "chardet >=3.0.2,<6" in ours["packages"][patched[0]]["depends"]

    with DemoServer(mirror) as server:
        prefix = tmp_path / "env"
        records = solve_and_install(f"{server.url}/pkgs", ["requests"], prefix, tmp_path / "cache")
    names = {r.name.normalized for r in records}
    assert {"requests", "python", "certifi", "idna", "urllib3", "openssl", "readline"} <= names
    for record in records:
        served = mirror / "pkgs" / record.subdir / record.file_name
        assert hashlib.sha256(served.read_bytes()).hexdigest() == record.sha256.hex()
        meta = prefix / "conda-meta" / f"{record.name.normalized}-{record.version}-{record.build}.json"
        assert meta.is_file()
        assert installed_as_archived(prefix, served) > 0
    requests = next(r for r in records if r.name.normalized == "requests")
    assert (prefix / "share" / "doc" / "requests" / "README").read_text() == f"requests {requests.version}\n"
