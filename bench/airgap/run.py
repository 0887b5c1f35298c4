"""Air-gap benchmark: cas-sync's manifest, export and import against what a site does by hand.

    .venv/bin/python bench/airgap/run.py [--files 20000] [--kb 40] [--work DIR]

Generates a mirror (an internal channel of `--files` package files of `--kb` KiB, random bytes,
half linux-64 and half noarch, indexed by cas-index), then, each command in a subprocess:

- manifest: `cas-sync --manifest` once to record every file (as a sync would have), then again
  (what an offline site runs before each update: the store vouches for every file), and with
  `--rehash`; the peer is `find | xargs sha256sum`, the list of hashes an admin makes by hand;
- export + import of the whole mirror (volumes of 1 GiB, every byte hashed on each side); the
  peer is `tar | split` then `cat | tar -x` and `sha256sum -c` of the list.

The files are in the page cache throughout (generated just before): the figures compare CPU and
syscalls, not a USB stick's speed, which bounds both the same way.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from casconsole.conda.archive import PackageSpec, build_package  # noqa: E402


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("CAS_MIRROR_")}
    out["CAS_MIRROR_SYSTEM_CONFIG"] = out["CAS_MIRROR_USER_CONFIG"] = "/nonexistent"
    return out


def timed(label: str, command: list[str] | str, shell: bool = False) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, shell=shell, env=env(), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{label} failed: {done.stderr[-2000:]}")
    print(f"  {label:<44} {seconds:8.2f} s", flush=True)
    return seconds


def make_mirror(mirror: Path, files: int, kb: int) -> int:
    rng = random.Random(14)
    for i in range(files):
        subdir = "linux-64" if i % 2 else "noarch"
        spec = PackageSpec(
            f"pkg{i:06d}", "1.0", subdir=subdir, files={"share/data.bin": rng.randbytes(kb * 1024)}
        )
        build_package(mirror / "internal-pkgs" / subdir, spec, ".conda")
    subprocess.run(
        [sys.executable, "-m", "casconsole.cli.index", str(mirror / "internal-pkgs")], check=True, env=env()
    )
    return sum(p.stat().st_size for p in mirror.rglob("*") if p.is_file() and ".cache" not in p.parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--kb", type=int, default=40)
    parser.add_argument(
        "--work", type=Path, default=None, help="a folder on the disk to measure (default: a temporary one)"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cas-airgap-bench-", dir=args.work))
    cas = [sys.executable, "-m", "casconsole.cli.sync"]
    try:
        mirror = work / "mirror"
        print(f"generating {args.files:,} packages of {args.kb} KiB in {work} ...", flush=True)
        total = make_mirror(mirror, args.files, args.kb)
        print(f"mirror: {total / 1e6:,.0f} MB; load average {os.getloadavg()[0]:.2f}")

        print("manifest")
        timed(
            "cas-sync --manifest (first: hashes, records)",
            [*cas, "--mirror-dir", str(mirror), "--manifest", str(work / "m0.json")],
        )
        ours = timed(
            "cas-sync --manifest (the store vouches)",
            [*cas, "--mirror-dir", str(mirror), "--manifest", str(work / "m1.json")],
        )
        rehash = timed(
            "cas-sync --manifest --rehash",
            [*cas, "--mirror-dir", str(mirror), "--manifest", str(work / "m2.json"), "--rehash"],
        )
        peer = timed(
            "find | xargs sha256sum (by hand)",
            f"cd {mirror} && find . -path ./.cas -prune -o -path '*/.cache' -prune -o -type f -print0 | "
            f"xargs -0 -P1 sha256sum > {work}/list.sha256",
            shell=True,
        )
        print(f"  manifest: {peer / ours:.1f}x faster than hashing by hand; --rehash {peer / rehash:.2f}x")

        print("export + import of the whole mirror, every byte hashed on both sides")
        e = timed(
            "cas-sync --export --volume-size 1G",
            [*cas, "--mirror-dir", str(mirror), "--export", str(work / "stick"), "--volume-size", "1G"],
        )
        i = timed(
            "cas-sync --import",
            [*cas, "--mirror-dir", str(work / "offline"), "--import", str(work / "stick")],
        )
        (work / "tarstick").mkdir()
        te = timed(
            "tar | split -b 1G (by hand)",
            f"cd {mirror} && tar --exclude=./.cas -cf - . | split -b 1G - {work}/tarstick/part.",
            shell=True,
        )
        (work / "taroffline").mkdir()
        ti = timed(
            "cat | tar -x, then sha256sum -c (by hand)",
            f"cat {work}/tarstick/part.* | tar -C {work}/taroffline -xf - && "
            f"cd {work}/taroffline && sha256sum --quiet -c {work}/list.sha256",
            shell=True,
        )
        print(
            f"  export {total / e / 1e6:.0f} MB/s, import {total / i / 1e6:.0f} MB/s; "
            f"ours {e + i:.1f} s against {te + ti:.1f} s by hand ({(te + ti) / (e + i):.2f}x)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
