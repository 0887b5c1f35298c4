"""The folder case before and after the storage interface: cas-sync of two checkouts, taking
turns, on bench/sync's upstream, cold into an empty folder and then the no-op re-sync.

    git archive <commit-before> | tar -x -C /tmp/before
    python bench/s3/folder_ab.py --before /tmp/before [--rounds 5]

Wall time and CPU time (user + system of cas-sync and its download workers) per run; CPU is
what the abstraction could cost, and it suffers less than wall time from a busy machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT / "bench" / "sync"))
spec = importlib.util.spec_from_file_location("sync_bench", ROOT / "bench" / "sync" / "run.py")
sync_bench = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
spec.loader.exec_module(sync_bench)  # type: ignore[union-attr]


def run(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="a checkout of the code before")
    parser.add_argument("--work", type=Path, default=Path("bench/_work/folder-ab"))
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    upstream = sync_bench.generate(work.parent / "sync-upstream")
    server, url = sync_bench.start_server("nginx" if shutil.which("nginx") else "python", upstream, work)
    base = {
        **os.environ,
        "CAS_MIRROR_USER_CONFIG": "/nonexistent",
        "CAS_MIRROR_SYSTEM_CONFIG": "/nonexistent",
    }
    envs = {
        "before": {**base, "PYTHONPATH": str(args.before.resolve())},
        "after": {**base, "PYTHONPATH": str(ROOT)},
    }
    results: dict[str, list[tuple[float, float]]] = {}
    try:
        for round_ in range(args.rounds):
            order = ["before", "after"] if round_ % 2 == 0 else ["after", "before"]
            for which in order:
                mirror = work / f"{which}-{round_}"
                command = [sys.executable, "-m", "casconsole.cli.sync", "--remote-url", url, "--mirror-dir",
                           str(mirror), "--platform", "linux-64", "--no-progress"]  # fmt: skip
                results.setdefault(f"{which} cold", []).append(run(command, envs[which]))
                results.setdefault(f"{which} no-op", []).append(run(command, envs[which]))
                shutil.rmtree(mirror)
    finally:
        server.terminate()
        server.wait()
    print("| run | wall s (median) | CPU s (median) | every round: wall / CPU |\n|---|---:|---:|---|")
    for name, runs in sorted(results.items()):
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        every = ", ".join(f"{w:.2f} / {c:.2f}" for w, c in runs)
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {every} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
