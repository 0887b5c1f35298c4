"""Benchmark: casconsole's sync against conda-mirror, same upstream, same loopback server, one run.

    python bench/sync/run.py [--case mixed|small] [--work DIR] [--server nginx|python] [--rounds 3]

The upstream (bench/sync/upstream.py) of `--case mixed`: 2,500 linux-64 packages of ~20 KB and
200 of ~5 MB; of `--case small`: 3,000 packages of ~20 KB, half in linux-64, half in noarch. It
is served by one server on 127.0.0.1 (nginx when installed, else Python's threading HTTP server).
conda-mirror takes one platform a run: where noarch has packages it runs once for linux-64 and
once for noarch, its time the sum of both, as a user of it would.
Each tool syncs it cold into an empty folder, then again with nothing new (the no-op re-sync),
in --rounds rounds (3 by default) that take turns at which tool goes first; wall time, MB/s
and peak memory (the resident memory of the tool's processes together, sampled every 50 ms)
are measured per run and the median of each kept. sha256sum then
hashes the same files, `cp -r` copies them on the same disk, and curl fetches them from the
same server (one kept-alive connection, no hashing), for a sense of what "fast" means on this
machine: the copy is the floor for writing the files, curl for fetching them. Results are printed
as a markdown table (and saved as JSON beside the work folder).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from installed import compile_bytecode  # noqa: E402
from treemem import PeakMemory  # noqa: E402

sys.path.insert(0, str(HERE))

from upstream import CASES, generate  # noqa: E402


def tool(name: str) -> str:
    """`name` from this interpreter's environment first (a venv not on PATH), else from PATH."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name) or name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(kind: str, root: Path, work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    if kind == "nginx":
        conf = work / "nginx" / "nginx.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        temp = conf.parent
        conf.write_text(
            "worker_processes 1;\ndaemon off;\n"
            f"pid {temp}/nginx.pid;\nerror_log {temp}/error.log;\n"
            "events { worker_connections 1024; }\n"
            "http {\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n  keepalive_requests 100000;\n"
            + "".join(
                f"  {t}_temp_path {temp};\n" for t in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            )
            + f"  server {{ listen 127.0.0.1:{port}; root {root}; }}\n}}\n"
        )
        process = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(temp)])
    else:
        code = (
            "import sys, threading; from pathlib import Path; from casconsole.demo import DemoServer\n"
            f"DemoServer(Path({str(root)!r}), {port}).start(); threading.Event().wait()\n"
        )
        process = subprocess.Popen([sys.executable, "-c", code])
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, url
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"the {kind} server did not start")


def measure(command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> dict:
    """Run `command`; its wall time (s), peak memory (MB, the process and its children), and the
    machine's load average (1 minute) when it started."""
    load = os.getloadavg()[0]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd)
    sampler = PeakMemory(process.pid, 0.05)  # the processes of a tool together
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    peak = sampler.stop() / 2**20
    err = process.stderr.read().decode(errors="replace") if process.stderr else ""
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{command[0]} exited {process.returncode}:\n{err[-2000:]}")
    peak_mb = round(max(peak, usage.ru_maxrss / 1024), 1)
    return {"seconds": round(wall, 3), "peak_mb": peak_mb, "load": round(load, 2)}


def folder_bytes(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.iterdir() if p.name.endswith((".conda", ".tar.bz2"))]
    return len(files), sum(p.stat().st_size for p in files)


def measure_all(
    commands: list[list[str]], env: dict[str, str] | None = None, cwd: Path | None = None
) -> dict:
    """`measure` of commands run one after the other: the seconds added, the larger peak."""
    rows = [measure(command, env, cwd) for command in commands]
    seconds = round(sum(r["seconds"] for r in rows), 3)
    return {"seconds": seconds, "peak_mb": max(r["peak_mb"] for r in rows), "load": rows[0]["load"]}


def fetch_all(url: str, names: list[tuple[str, str]], folder: Path) -> dict:
    """curl fetching every file over one kept-alive connection, no hashing; measured."""
    folder.mkdir(parents=True)
    config = folder.with_suffix(".cfg")
    config.write_text(
        "".join(f'url = "{url}/{subdir}/{name}"\noutput = "{folder / name}"\n' for subdir, name in names)
    )
    return measure(["curl", "-s", "-K", str(config)])


SETTLE = 300  # seconds: ext4 without a journal skips inodes freed this recently (see RESULTS.md)


def settle(stamp: Path) -> None:
    """Wait until the last run's deletions are SETTLE seconds old: files created sooner cost
    several times more (this VM's ext4 has no journal), whichever tool creates them."""
    try:
        age = time.time() - float(stamp.read_text())
    except (OSError, ValueError):
        return
    if age < SETTLE:
        print(f"waiting {SETTLE - age:.0f} s for the last run's deletions to settle", file=sys.stderr)
        time.sleep(SETTLE - age)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES), default="mixed", help="the upstream (upstream.py)")
    parser.add_argument("--work", type=Path, help="default: bench/_work/sync (-small for that case)")
    parser.add_argument(
        "--server", choices=("nginx", "python"), default="nginx" if shutil.which("nginx") else "python"
    )
    parser.add_argument("--rounds", type=int, default=3, help="cold + no-op runs of each tool (median kept)")
    parser.add_argument(
        "--baseline", type=Path, help="a folder holding another copy of the casconsole package, timed alike"
    )
    args = parser.parse_args()
    compile_bytecode(*([args.baseline.resolve()] if args.baseline else []))
    if shutil.which("curl") is None:
        raise SystemExit("bench/sync needs curl (the warm-up and the fetching yardstick)")
    suffix = "" if args.case == "mixed" else f"-{args.case}"
    work = (args.work or Path(f"bench/_work/sync{suffix}")).resolve()
    upstream = generate(work.parent / f"sync{suffix}-upstream", args.case)
    subdirs = [subdir for subdir, (small, large) in CASES[args.case].items() if small + large]
    sizes = {subdir: folder_bytes(upstream / subdir) for subdir in subdirs}
    count, total = sum(n for n, _ in sizes.values()), sum(b for _, b in sizes.values())
    env = {**os.environ, "CAS_MIRROR_USER_CONFIG": "/nonexistent", "CAS_MIRROR_SYSTEM_CONFIG": "/nonexistent"}
    stamp = work.parent / "sync-deleted-at"  # one for every case: they share the filesystem
    shutil.rmtree(work, ignore_errors=True)
    settle(stamp)
    server, url = start_server(args.server, upstream, work)
    runs: dict[str, list[dict]] = {}
    names = [(subdir, p.name) for subdir in subdirs for p in sorted((upstream / subdir).glob("*.conda"))]
    try:
        # a warm-up, not timed: the machine's first pass over these files after a pause is
        # slower whoever makes it (measured: a tool's first cold run up to 1.3 s slower)
        fetch_all(url, names, work / "warm-up")
        for round_ in range(args.rounds):
            ours = work / f"round{round_}" / "casconsole"
            cm = work / f"round{round_}" / "conda-mirror"
            (cm / "tmp").mkdir(parents=True)
            cas_sync = [tool("cas-sync"), "--remote-url", url, "--mirror-dir", str(ours),
                        "--platform", "linux-64", "--no-progress"]  # fmt: skip
            conda_mirror = [
                [tool("conda-mirror"), "--upstream-channel", url,
                 "--target-directory", str(cm / "mirror"), "--temp-directory", str(cm / "tmp"),
                 "--platform", subdir, "--no-progress"]
                for subdir in subdirs
            ]  # fmt: skip
            order: list[tuple[str, list[list[str]], Path | None]] = [
                ("casconsole", [cas_sync], None),
                ("conda-mirror", conda_mirror, None),
            ]
            if args.baseline:  # the same cas-sync command, run from another copy of the code:
                # `python -m` in that folder puts it first on sys.path, its workers too
                base = work / f"round{round_}" / "baseline"
                before = [sys.executable, "-m", "casconsole.cli.sync", *cas_sync[1:]]
                before[before.index(str(ours))] = str(base)
                order.append(("baseline", [before], args.baseline.resolve()))
            # each goes first in turn: the first of a round creates its files in fresher inodes
            shift = round_ % len(order)
            for name, commands, cwd in order[shift:] + order[:shift]:
                runs.setdefault(f"{name} cold", []).append(measure_all(commands, env, cwd))
                runs.setdefault(f"{name} no-op", []).append(measure_all(commands, env, cwd))
            mirrored = [("casconsole", ours / "pkgs"), ("conda-mirror", cm / "mirror")]
            if args.baseline:
                mirrored.append(("baseline", work / f"round{round_}" / "baseline" / "pkgs"))
            for name, folder in mirrored:
                for subdir in subdirs:
                    assert folder_bytes(folder / subdir) == sizes[subdir], f"{name} missed {subdir} files"
            last = [json.loads(line) for line in (ours / ".cas" / "sync.jsonl").read_text().splitlines()][-1]
            runs["casconsole no-op"][-1]["engine_seconds"] = last["stats"]["seconds"]
        ours_files = work / "round0" / "casconsole" / "pkgs"
        runs["sha256sum"] = [measure(["sha256sum", *(str(ours_files / sd / name) for sd, name in names)])]
        # what writing these files costs on this machine at all: a plain copy on the same disk
        (work / "cp").mkdir()
        runs["cp -r (writing the files, no network)"] = [
            measure(["cp", "-r", *(str(upstream / subdir) for subdir in subdirs), str(work / "cp")])
        ]
        # what fetching them over loopback costs at all: curl, one kept-alive connection, no hashing
        runs["curl (fetching the files, no hashing)"] = [fetch_all(url, names, work / "curl")]
    finally:
        server.terminate()
        server.wait()
        # removed now rather than at the next start, and the time noted: the next run waits
        shutil.rmtree(work, ignore_errors=True)
        stamp.write_text(str(time.time()))
    mb = total / 1e6
    results = {}
    for name, rows in runs.items():
        for row in rows:
            row["mb_per_s"] = round(mb / row["seconds"], 1)
        median = sorted(rows, key=lambda row: row["seconds"])[len(rows) // 2]
        results[name] = {
            **median,
            "all_seconds": [row["seconds"] for row in rows],
            "loads": [row["load"] for row in rows],
        }
    ours_cold, cm_cold = results["casconsole cold"]["seconds"], results["conda-mirror cold"]["seconds"]
    ours_noop, cm_noop = results["casconsole no-op"]["seconds"], results["conda-mirror no-op"]["seconds"]
    summary = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}",
        "server": args.server,
        "packages": count,
        "megabytes": round(mb, 1),
        "rounds": args.rounds,
        "results": results,
        "cold_ratio": round(cm_cold / ours_cold, 1),
        "cold_ratios_by_round": [
            round(theirs["seconds"] / mine["seconds"], 1)
            for mine, theirs in zip(runs["casconsole cold"], runs["conda-mirror cold"], strict=True)
        ],
        "noop_ratio": round(cm_noop / ours_noop, 1),
        "ours_vs_sha256sum": round(
            results["casconsole cold"]["mb_per_s"] / results["sha256sum"]["mb_per_s"], 2
        ),
    }
    summary["case"] = args.case
    summary["load_average"] = [round(x, 2) for x in os.getloadavg()]
    (work.parent / f"sync{suffix}-results.json").write_text(json.dumps(summary, indent=1))
    where = " + ".join(f"{sizes[subdir][0]:,} {subdir}" for subdir in subdirs)
    print(
        f"case {args.case}: {where} packages, {mb:,.0f} MB, served by {args.server} on 127.0.0.1;"
        f" {summary['machine']}; median of {args.rounds} rounds\n"
    )
    print("| run | seconds (median) | every round | MB/s | peak MB | load average at each |")
    print("|---|---:|---|---:|---:|---|")
    for name, row in results.items():
        every = ", ".join(f"{x:.2f}" for x in row["all_seconds"])
        loads = ", ".join(f"{x:.1f}" for x in row["loads"])
        cells = f"{row['seconds']:.2f} | {every} | {row['mb_per_s']:,.0f} | {row['peak_mb']:.0f} | {loads}"
        print(f"| {name} | {cells} |")
    print(
        f"\ncold: casconsole {summary['cold_ratio']}x faster than conda-mirror (rounds:"
        f" {', '.join(f'{r}x' for r in summary['cold_ratios_by_round'])}); no-op re-sync:"
        f" {summary['noop_ratio']}x ({ours_noop:.2f} s for the whole command,"
        f" {results['casconsole no-op']['engine_seconds']:.2f} s in the engine); casconsole's cold"
        f" MB/s is {summary['ours_vs_sha256sum']}x sha256sum's on the same files"
    )
    if "baseline cold" in results:
        base_cold, base_noop = results["baseline cold"]["seconds"], results["baseline no-op"]["seconds"]
        print(
            f"baseline ({args.baseline}): cold {base_cold:.2f} s ({cm_cold / base_cold:.1f}x conda-mirror),"
            f" no-op {base_noop:.2f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
