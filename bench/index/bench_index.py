"""cas-index against rattler's indexer, cold and warm, side by side in one run.

Generates a channel of N packages (about 20 KB each, half .conda and half .tar.bz2, over
linux-64, osx-arm64 and win-64; noarch empty), copies it once per tool, and times:

- casconsole `index_channel` and rattler `index_fs`, each in a fresh Python process, timing only
  the index call (imports and interpreter start excluded);
- the same runs as a user waits for them: the `cas-index` command and a Python process running
  rattler, wall clock from start to exit, and the CPU time they used (all threads and worker
  processes), which a busy machine disturbs less than the wall clock.

Cold: no cache, no outputs. Warm: the same command again, nothing changed. rattler writes JSON
only (no .zst, no shards) and runs in a subprocess because it can crash at interpreter exit after
writing; its status is ignored and its outputs are checked instead. Finally the two indexes are
compared record by record (name, version, build, depends, size, md5, sha256).

    python bench/index/bench_index.py            # 5,000 packages in a temporary folder
    python bench/index/bench_index.py -n 500 --repeat 1 --keep /tmp/idx
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from casconsole.conda.archive import PackageSpec, build_package

SUBDIRS = ("linux-64", "osx-arm64", "win-64")
FIELDS = ("name", "version", "build", "build_number", "depends", "size", "md5", "sha256")

_OURS = textwrap.dedent(
    """
    import sys, time
    from casconsole.index.channel import index_channel
    started = time.perf_counter()
    stats = index_channel(sys.argv[1])
    print(time.perf_counter() - started, stats.read, stats.packages, len(stats.problems), flush=True)
    """
)
_RATTLER = textwrap.dedent(
    """
    import asyncio, sys, time
    import rattler.index
    started = time.perf_counter()
    asyncio.run(rattler.index.index_fs(sys.argv[1], write_zst=False, write_shards=False))
    print(time.perf_counter() - started, flush=True)
    """
)


def _build(args: tuple[Path, int]) -> None:
    channel, i = args
    rng = random.Random(i)
    subdir = SUBDIRS[i % len(SUBDIRS)]
    spec = PackageSpec(
        name=f"bench-{i % 500:03d}",
        version=f"1.{i // 500}.{i % 7}",
        build=f"h{i:08x}_0",
        subdir=subdir,
        depends=[f"dep-{rng.randrange(100)} >={rng.randrange(5)}" for _ in range(4)],
        license="BSD-3-Clause",
        timestamp=1_700_000_000_000 + i,
        files={f"lib/data-{i}.bin": rng.randbytes(20_000)},  # incompressible: ~20 KB packages
    )
    build_package(channel / subdir, spec, ".conda" if i % 2 else ".tar.bz2")


def generate(channel: Path, count: int) -> None:
    with ProcessPoolExecutor() as pool:
        list(pool.map(_build, [(channel, i) for i in range(count)], chunksize=64))
    (channel / "noarch").mkdir(exist_ok=True)


def run(argv: list[str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (the child and its workers) and stdout of a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu, result.stdout


def timed_pair(argv: list[str], parse: bool) -> dict[str, float]:
    """Cold then warm run of one command; in-process seconds when the child prints them."""
    times: dict[str, float] = {}
    for label in ("cold", "warm"):
        wall, cpu, out = run(argv)
        times[f"{label}_wall"] = wall
        times[f"{label}_cpu"] = cpu
        if parse:
            if not out.strip():
                sys.exit(f"no timing from {argv[:3]}: the run failed")
            times[label] = float(out.split()[0])
    return times


def records(channel: Path) -> dict[str, dict]:
    found: dict[str, dict] = {}
    for subdir in (*SUBDIRS, "noarch"):
        data = json.loads((channel / subdir / "repodata.json").read_bytes())
        for key in ("packages", "packages.conda"):
            for fn, record in data[key].items():
                found[f"{subdir}/{fn}"] = {f: record.get(f) for f in FIELDS}
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--packages", type=int, default=5000)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("--repeat", type=int, default=5, help="runs per tool; the best counts")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-index-"))
    work.mkdir(parents=True, exist_ok=True)
    source = work / "source"
    try:
        if not source.is_dir():
            started = time.perf_counter()
            generate(source, args.packages)
            print(f"generated {args.packages} packages in {time.perf_counter() - started:.1f} s")
        files = [p for p in source.rglob("*") if p.is_file()]
        size = sum(p.stat().st_size for p in files)
        print(
            f"channel: {len(files)} files, {size / 1e6:.1f} MB; {os.cpu_count()} CPUs; "
            f"best of {args.repeat} runs per tool"
        )

        py = sys.executable
        commands = {
            "api": ([py, "-c", _OURS], True),
            "cli": ([py, "-m", "casconsole.cli.index"], False),
            "rattler": ([py, "-c", _RATTLER], True),
        }
        # the machine may be shared: repeat, interleaving the tools, and keep each best time
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
        for _ in range(args.repeat):
            for name, (argv, parse) in commands.items():
                copy = work / name
                shutil.rmtree(copy, ignore_errors=True)
                shutil.copytree(source, copy)
                runs[name].append(timed_pair([*argv, str(copy)], parse))
        best = {name: {k: min(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
        ours, ours_cli, theirs = best["api"], best["cli"], best["rattler"]
        copies = {name: work / name for name in commands}

        ours_records, their_records = records(copies["api"]), records(copies["rattler"])
        agree = ours_records == their_records and len(ours_records) == args.packages

        rows = [
            ("index call, in process", ours["cold"], theirs["cold"], ours["warm"], theirs["warm"]),
            (
                "process, wall clock",
                ours_cli["cold_wall"],
                theirs["cold_wall"],
                ours_cli["warm_wall"],
                theirs["warm_wall"],
            ),
            (
                "process, CPU time",
                ours_cli["cold_cpu"],
                theirs["cold_cpu"],
                ours_cli["warm_cpu"],
                theirs["warm_cpu"],
            ),
        ]
        print()
        print(f"{'':24} {'cold (s)':>30} {'warm (s)':>30}")
        heads = f"{'casconsole':>10} {'rattler':>9} {'ratio':>9}"
        print(f"{'':24} {heads} {heads}")
        for label, oc, tc, ow, tw in rows:
            print(f"{label:24} {oc:10.3f} {tc:9.3f} {tc / oc:8.1f}x {ow:11.3f} {tw:9.3f} {tw / ow:8.1f}x")
        print()
        print("ratio: rattler time / casconsole time (above 1: casconsole is faster)")
        print(f"records agree with rattler ({len(ours_records)} records): {agree}")
        print(
            f"targets: cold no slower than rattler: {ours['cold'] <= theirs['cold']}; "
            f"warm under 0.3 s: {ours['warm'] < 0.3}"
        )
        return 0 if agree else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
