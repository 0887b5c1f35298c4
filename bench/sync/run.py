"""Benchmark: casconsole's sync against conda-mirror, same upstream, same loopback server, one run.

    python bench/sync/run.py [--work bench/_work/sync] [--server nginx|python]

The upstream (bench/sync/upstream.py: 2,500 linux-64 packages of ~20 KB and 200 of ~5 MB) is
served by one server on 127.0.0.1 (nginx when installed, else Python's threading HTTP server).
Each tool syncs it cold into an empty folder, then again with nothing new (the no-op re-sync);
wall time, MB/s and peak memory (the resident memory of the tool's processes together,
sampled every 50 ms) are measured per run. sha256sum then
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
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from upstream import generate  # noqa: E402


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


def tree_rss_mb(root: int) -> float:
    """Resident memory of process `root` and all its descendants, in MB."""
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue  # gone meanwhile
    return total / 1024


def measure(command: list[str], env: dict[str, str] | None = None) -> dict:
    """Run `command`; its wall time (s) and peak memory (MB, the process and its children)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:  # the processes of a tool together, not the largest alone
        while not done.wait(0.05):
            peak[0] = max(peak[0], tree_rss_mb(process.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    err = process.stderr.read().decode(errors="replace") if process.stderr else ""
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{command[0]} exited {process.returncode}:\n{err[-2000:]}")
    return {"seconds": round(wall, 3), "peak_mb": round(max(peak[0], usage.ru_maxrss / 1024), 1)}


def folder_bytes(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.iterdir() if p.name.endswith((".conda", ".tar.bz2"))]
    return len(files), sum(p.stat().st_size for p in files)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("bench/_work/sync"))
    parser.add_argument(
        "--server", choices=("nginx", "python"), default="nginx" if shutil.which("nginx") else "python"
    )
    args = parser.parse_args()
    work = args.work.resolve()
    upstream = generate(work.parent / "sync-upstream")
    count, total = folder_bytes(upstream / "linux-64")
    env = {**os.environ, "CAS_MIRROR_USER_CONFIG": "/nonexistent", "CAS_MIRROR_SYSTEM_CONFIG": "/nonexistent"}
    server, url = start_server(args.server, upstream, work)
    results: dict[str, dict] = {}
    try:
        ours = work / "casconsole"
        cm = work / "conda-mirror"
        for folder in (ours, cm):
            shutil.rmtree(folder, ignore_errors=True)
        (cm / "tmp").mkdir(parents=True)
        cas_sync = [tool("cas-sync"), "--remote-url", url, "--mirror-dir", str(ours),
                    "--platform", "linux-64", "--no-progress"]  # fmt: skip
        conda_mirror = [tool("conda-mirror"), "--upstream-channel", url,
                        "--target-directory", str(cm / "mirror"), "--temp-directory", str(cm / "tmp"),
                        "--platform", "linux-64", "--no-progress"]  # fmt: skip
        results["casconsole cold"] = measure(cas_sync, env)
        results["casconsole no-op"] = measure(cas_sync, env)
        results["conda-mirror cold"] = measure(conda_mirror, env)
        results["conda-mirror no-op"] = measure(conda_mirror, env)
        assert folder_bytes(ours / "pkgs" / "linux-64") == (count, total), (
            "casconsole did not mirror everything"
        )
        assert folder_bytes(cm / "mirror" / "linux-64") == (count, total), (
            "conda-mirror did not mirror everything"
        )
        files = sorted(str(p) for p in (ours / "pkgs" / "linux-64").iterdir() if p.name.endswith(".conda"))
        results["sha256sum"] = measure(["sha256sum", *files])
        # what writing these files costs on this machine at all: a plain copy on the same disk
        copy = work / "cp"
        shutil.rmtree(copy, ignore_errors=True)
        results["cp -r (writing the files, no network)"] = measure(
            ["cp", "-r", str(upstream / "linux-64"), str(copy)]
        )
        shutil.rmtree(copy, ignore_errors=True)
        # what fetching them over loopback costs at all: curl, one kept-alive connection, no hashing
        if shutil.which("curl"):
            fetched = work / "curl"
            fetched.mkdir()
            config = work / "curl.cfg"
            config.write_text(
                "".join(
                    f'url = "{url}/linux-64/{Path(f).name}"\noutput = "{fetched / Path(f).name}"\n'
                    for f in files
                )
            )
            results["curl (fetching the files, no hashing)"] = measure(["curl", "-s", "-K", str(config)])
            shutil.rmtree(fetched, ignore_errors=True)
        # the sync engine's own time for the no-op, without the interpreter's start
        last = [json.loads(line) for line in (ours / ".cas" / "sync.jsonl").read_text().splitlines()][-1]
        results["casconsole no-op"]["engine_seconds"] = last["stats"]["seconds"]
    finally:
        server.terminate()
        server.wait()
        # removed now rather than at the next start: ext4 avoids reusing inodes freed in the last
        # minutes, which would slow the next run's file creation
        for folder in (work / "casconsole", work / "conda-mirror"):
            shutil.rmtree(folder, ignore_errors=True)
    mb = total / 1e6
    for row in results.values():
        row["mb_per_s"] = round(mb / row["seconds"], 1)
    ours_cold, cm_cold = results["casconsole cold"]["seconds"], results["conda-mirror cold"]["seconds"]
    ours_noop, cm_noop = results["casconsole no-op"]["seconds"], results["conda-mirror no-op"]["seconds"]
    summary = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}",
        "server": args.server,
        "packages": count,
        "megabytes": round(mb, 1),
        "results": results,
        "cold_ratio": round(cm_cold / ours_cold, 1),
        "noop_ratio": round(cm_noop / ours_noop, 1),
        "ours_vs_sha256sum": round(
            results["casconsole cold"]["mb_per_s"] / results["sha256sum"]["mb_per_s"], 2
        ),
    }
    (work.parent / "sync-results.json").write_text(json.dumps(summary, indent=1))
    print(
        f"{count:,} linux-64 packages, {mb:,.0f} MB, served by {args.server} on 127.0.0.1;"
        f" {summary['machine']}\n"
    )
    print("| run | seconds | MB/s | peak MB |")
    print("|---|---:|---:|---:|")
    for name, row in results.items():
        print(f"| {name} | {row['seconds']:.2f} | {row['mb_per_s']:,.0f} | {row['peak_mb']:.0f} |")
    print(
        f"\ncold: casconsole {summary['cold_ratio']}x faster than conda-mirror; "
        f"no-op re-sync: {summary['noop_ratio']}x ({ours_noop:.2f} s for the whole command, "
        f"{results['casconsole no-op']['engine_seconds']:.2f} s in the engine); "
        f"casconsole's cold MB/s is {summary['ours_vs_sha256sum']}x sha256sum's on the same files"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
