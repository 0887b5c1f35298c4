"""The benchmark's generated upstreams (real `.conda` archives with random payloads).

- `mixed`: 2,500 small linux-64 packages (~20 KB) and 200 large ones (~5 MB), noarch empty;
- `small`: 3,000 small packages (~20 KB), 1,500 in linux-64 and 1,500 in noarch: a channel of
  many small files, where the cost per file (a request, a file created, a record) is all there is.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from casconsole.conda.archive import PackageSpec, build_package
from casconsole.conda.repodata import write_repodata
from casconsole.fsutil import atomic_write_bytes

SMALL_KB, LARGE_KB = 20, 5 * 1024
# case -> subdir -> (small packages, large packages)
CASES = {
    "mixed": {"linux-64": (2500, 200), "noarch": (0, 0)},
    "small": {"linux-64": (1500, 0), "noarch": (1500, 0)},
}


def _spec(i: int, subdir: str, small: int, kb: int, rng: random.Random) -> PackageSpec:
    prefix = "py" if subdir == "noarch" else ""
    name = f"{prefix}pkg{i:05d}" if kb == SMALL_KB else f"bigpkg{i:03d}"
    return PackageSpec(
        name=name,
        version=f"1.{i % 7}.{i % 13}",
        build=f"h{i:07x}_0",
        subdir=subdir,
        depends=[f"{prefix}pkg{(i * 7) % small:05d}"] if i % 3 and small else [],
        license="MIT",
        license_family="MIT",
        timestamp=1_700_000_000_000 + i,
        noarch="generic" if subdir == "noarch" else None,
        files={f"lib/{name}/payload.bin": rng.randbytes(int(kb * 1024 * rng.uniform(0.9, 1.1)))},
    )


def generate(root: Path, case: str = "mixed") -> Path:
    """Write the channel of `case` under `root` (kept when already complete) and return it."""
    marker = root / ".bench-upstream"
    layout = CASES[case]
    stamp = " ".join(f"{subdir}:{n}x{SMALL_KB}+{m}x{LARGE_KB}" for subdir, (n, m) in layout.items())
    if case == "mixed":
        stamp = f"{layout['linux-64'][0]}x{SMALL_KB} {layout['linux-64'][1]}x{LARGE_KB}"  # as before
    if marker.exists() and marker.read_text() == stamp:
        return root
    rng = random.Random(0)
    for subdir, (small, large) in layout.items():
        packages = {}
        for i in range(small + large):
            spec = _spec(i, subdir, small, SMALL_KB if i < small else LARGE_KB, rng)
            path = build_package(root / subdir, spec, ".conda")
            data = path.read_bytes()
            record = spec.index_json()
            record.update(
                size=len(data), md5=hashlib.md5(data).hexdigest(), sha256=hashlib.sha256(data).hexdigest()
            )
            packages[path.name] = record
        info = {"info": {"subdir": subdir}, "packages": {}, "packages.conda": packages}
        write_repodata(root / subdir, {**info, "repodata_version": 1} if packages else info)
    atomic_write_bytes(marker, stamp.encode())
    return root


if __name__ == "__main__":
    import sys

    print(json.dumps(str(generate(Path(sys.argv[1]), *(sys.argv[2:3])))))
