"""The benchmark's generated upstream: ~2,500 small linux-64 packages and 200 large ones."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from casconsole.conda.archive import PackageSpec, build_package
from casconsole.conda.repodata import write_repodata
from casconsole.fsutil import atomic_write_bytes

SMALL, SMALL_KB = 2500, 20
LARGE, LARGE_KB = 200, 5 * 1024


def _spec(i: int, kb: int, rng: random.Random) -> PackageSpec:
    name = f"pkg{i:05d}" if kb == SMALL_KB else f"bigpkg{i:03d}"
    return PackageSpec(
        name=name,
        version=f"1.{i % 7}.{i % 13}",
        build=f"h{i:07x}_0",
        subdir="linux-64",
        depends=[f"pkg{(i * 7) % SMALL:05d}"] if i % 3 else [],
        license="MIT",
        license_family="MIT",
        timestamp=1_700_000_000_000 + i,
        files={f"lib/{name}/payload.bin": rng.randbytes(int(kb * 1024 * rng.uniform(0.9, 1.1)))},
    )


def generate(root: Path) -> Path:
    """Write the channel under `root` (kept when already complete) and return it."""
    marker = root / ".bench-upstream"
    stamp = f"{SMALL}x{SMALL_KB} {LARGE}x{LARGE_KB}"
    if marker.exists() and marker.read_text() == stamp:
        return root
    rng = random.Random(0)
    packages = {}
    for i in range(SMALL + LARGE):
        spec = _spec(i, SMALL_KB if i < SMALL else LARGE_KB, rng)
        path = build_package(root / "linux-64", spec, ".conda")
        data = path.read_bytes()
        record = spec.index_json()
        record.update(
            size=len(data), md5=hashlib.md5(data).hexdigest(), sha256=hashlib.sha256(data).hexdigest()
        )
        packages[path.name] = record
    write_repodata(
        root / "linux-64",
        {"info": {"subdir": "linux-64"}, "packages": {}, "packages.conda": packages, "repodata_version": 1},
    )
    write_repodata(root / "noarch", {"info": {"subdir": "noarch"}, "packages": {}, "packages.conda": {}})
    atomic_write_bytes(marker, stamp.encode())
    return root


if __name__ == "__main__":
    import sys

    print(json.dumps(str(generate(Path(sys.argv[1])))))
