"""The demo upstream is a real channel: real archives whose repodata agrees with them."""

from __future__ import annotations

import collections
import hashlib
import json

from casconsole.conda.archive import read_index_json
from casconsole.conda.repodata import Record
from casconsole.selection.filters import license_family


def test_demo_channel_is_real_and_varied(demo_channel):
    families = collections.Counter()
    names = set()
    formats = collections.Counter()
    for subdir in ("linux-64", "osx-arm64", "win-64", "noarch"):
        repodata = json.loads((demo_channel / subdir / "repodata.json").read_text())
        assert repodata["info"]["subdir"] == subdir
        assert (demo_channel / subdir / "repodata.json.zst").exists()
        for key in ("packages", "packages.conda"):
            for fn, record in repodata[key].items():
                data = (demo_channel / subdir / fn).read_bytes()
                assert record["size"] == len(data)
                assert record["sha256"] == hashlib.sha256(data).hexdigest()
                assert record["md5"] == hashlib.md5(data).hexdigest()
                index = read_index_json(demo_channel / subdir / fn)
                assert (index["name"], index["version"], index["subdir"]) == (
                    record["name"],
                    record["version"],
                    subdir,
                )
                formats[fn.rsplit("-", 1)[1].split(".", 1)[1]] += 1
                names.add(record["name"])
                rec = Record(record["name"], record["version"], license=record.get("license"),
                             license_family=record.get("license_family"))  # fmt: skip
                families[license_family(rec)[0]] += 1
    assert {"GPL", "GPL2", "GPL3", "LGPL", "AGPL", "MIT", "BSD", "APACHE", "NONE"} <= set(families)
    assert formats["conda"] > 0 and formats["tar.bz2"] > 0
    assert len(names) >= 30


def test_demo_keeps_an_upstream_patch(demo_channel):
    repodata = json.loads((demo_channel / "noarch" / "repodata.json").read_text())
    fn, record = next((fn, r) for fn, r in repodata["packages"].items() if fn.startswith("requests-2.28.2-"))
    index = read_index_json(demo_channel / "noarch" / fn)
    assert "chardet >=3.0.2,<6" in record["depends"] and "chardet >=3.0.2,<6" not in index["depends"]
