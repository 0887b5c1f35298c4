"""cas-server next to nginx on the same tree, loaded by wrk, in one run.

    python bench/serve/run.py [--duration 10] [--rounds 3] [--connections 64] [--workers 0]

Generates bench/_work/serve/ (a 2 MB repodata.json and its .gz for nginx's gzip_static,
a 20 KB file, a 5 MB package), starts `cas-server` and nginx (the configuration
`cas-server --nginx-config` prints, with gzip_static) on loopback ports, runs wrk against
each in turn (alternating, several rounds) and prints the median requests/s and MB/s
with the ratios to nginx.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from casconsole.serve.nginx import nginx_config

HERE = Path(__file__).resolve().parent
WORK = HERE.parent / "_work" / "serve"

SCENARIOS = [
    # name, path, extra wrk headers, target ratio to nginx, on req/s (0) or MB/s (1)
    ("repodata 2 MB, gzip", "pkgs/linux-64/repodata.json", ["Accept-Encoding: gzip"], 0.5, 0),
    ("file 20 KB", "pkgs/linux-64/small-1.0-0.tar.bz2", [], 0.1, 0),
    ("package 5 MB", "pkgs/linux-64/big-1.0-0.conda", [], 0.8, 1),
]


def make_tree(root: Path) -> None:
    sub = root / "pkgs" / "linux-64"
    sub.mkdir(parents=True, exist_ok=True)
    (root / "pkgs" / "noarch").mkdir(exist_ok=True)
    rnd = random.Random(5)
    packages = {}
    i = 0
    while True:  # realistic records until the JSON reaches 2 MB
        name = f"pkg{i // 8}"
        fn = f"{name}-1.{i % 8}.0-py311h{rnd.getrandbits(32):08x}_0.tar.bz2"
        packages[fn] = {
            "build": f"py311h{rnd.getrandbits(32):08x}_0",
            "build_number": 0,
            "depends": ["python >=3.11,<3.12.0a0", f"lib{rnd.randrange(500)} >=1.2", "libgcc-ng >=11"],
            "license": "BSD-3-Clause",
            "md5": f"{rnd.getrandbits(128):032x}",
            "name": name,
            "sha256": f"{rnd.getrandbits(256):064x}",
            "size": rnd.randrange(10_000, 50_000_000),
            "subdir": "linux-64",
            "timestamp": 1_700_000_000_000 + i,
            "version": f"1.{i % 8}.0",
        }
        i += 1
        if i % 500 == 0 and len(json.dumps(packages)) > 2_000_000:
            break
    data = json.dumps({"info": {"subdir": "linux-64"}, "packages": packages}, indent=1).encode()
    (sub / "repodata.json").write_bytes(data)
    (sub / "repodata.json.gz").write_bytes(gzip.compress(data, 6, mtime=0))
    (sub / "small-1.0-0.tar.bz2").write_bytes(rnd.randbytes(20 * 1024))
    (sub / "big-1.0-0.conda").write_bytes(rnd.randbytes(5 * 1024 * 1024))
    (root / "pkgs" / "noarch" / "repodata.json").write_text('{"packages": {}}')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def wrk(url: str, headers: list[str], duration: int, connections: int, threads: int) -> tuple[float, float]:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s"]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))
    amount, unit = re.search(r"Transfer/sec:\s*([\d.]+)([KMG]?)B", out).groups()
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", out)
    if errors:
        print(f"    wrk: {errors.group(0)}", file=sys.stderr)
    return rps, float(amount) * _UNITS[unit] / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="runs per server; medians shown")
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--workers", type=int, default=0, help="cas-server workers (0: one per CPU)")
    ap.add_argument(
        "--baseline",
        metavar="SRC",
        type=Path,
        help="also load a cas-server run from this source tree (e.g. `git archive main` unpacked), "
        "in the same rounds, to compare two versions under the same load",
    )
    args = ap.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found (Debian: apt-get install {tool})")

    root = WORK / "tree"
    if not (root / "pkgs" / "linux-64" / "big-1.0-0.conda").exists():
        make_tree(root)
    shutil.rmtree(root / ".cas", ignore_errors=True)  # cold gzip cache, as after a sync
    ours_port, nginx_port, base_port = free_port(), free_port(), free_port()
    conf = WORK / "nginx.conf"
    conf.write_text(
        nginx_config(
            root,
            "127.0.0.1",
            nginx_port,
            access_log=str(WORK / "nginx-access.log"),
            error_log=str(WORK / "nginx-error.log"),
            pid=str(WORK / "nginx.pid"),
            gzip_static=True,
        ).replace("events {", "daemon off;\nevents {", 1)
    )
    ours = subprocess.Popen(
        [sys.executable, "-m", "casconsole.cli.server", "--root", str(root), "--port",
         str(ours_port), "--workers", str(args.workers), "--access-log",
         str(WORK / "cas-access.log")],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    nginx = subprocess.Popen(["nginx", "-c", str(conf), "-e", str(WORK / "nginx-error.log")])
    servers = [("nginx", nginx_port), ("cas-server", ours_port)]
    base = None
    if args.baseline is not None:
        base = subprocess.Popen(
            [sys.executable, "-m", "casconsole.cli.server", "--root", str(root), "--port",
             str(base_port), "--workers", str(args.workers), "--access-log",
             str(WORK / "base-access.log")],
            stderr=subprocess.PIPE, text=True, cwd=args.baseline,
            env={**os.environ, "PYTHONPATH": str(args.baseline.resolve())},
        )  # fmt: skip
        servers.append(("baseline", base_port))
    try:
        print(ours.stderr.readline().strip())
        if base is not None:
            print("baseline:", base.stderr.readline().strip())
        for _, port in servers:
            wait_port(port)
        for _, port in servers[1:]:
            # one request makes cas-server compress the repodata version in the background
            warm = urllib.request.Request(
                f"http://127.0.0.1:{port}/{SCENARIOS[0][1]}", headers={"Accept-Encoding": "gzip"}
            )
            urllib.request.urlopen(warm).read()
        time.sleep(1)
        print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, {os.cpu_count()} CPUs\n")
        print(f"| {'load':22} | {'server':10} | {'req/s':>9} | {'MB/s':>8} | vs nginx | target |")
        print(f"|{'-' * 24}|{'-' * 12}|{'-' * 11}|{'-' * 10}|----------|--------|")
        for name, path, headers, target, metric in SCENARIOS:
            runs: dict[str, list[tuple[float, float]]] = {server: [] for server, _ in servers}
            for r in range(args.rounds):  # alternate who goes first: the machine is shared
                for server, port in servers if r % 2 == 0 else servers[::-1]:
                    url = f"http://127.0.0.1:{port}/{path}"
                    runs[server].append(wrk(url, headers, args.duration, args.connections, args.threads))
            med = {
                server: (
                    statistics.median(rps for rps, _ in res),
                    statistics.median(mbs for _, mbs in res),
                )
                for server, res in runs.items()
            }
            reference = med["nginx"][metric]
            for server, (rps, mbs) in med.items():
                ratio = goal = ""
                if server != "nginx":
                    unit = "MB/s" if metric else "req/s"
                    ratio = f"{(rps, mbs)[metric] / reference:.0%} {unit}"
                    goal = f"{target:.0%}" if server == "cas-server" else ""
                print(f"| {name:22} | {server:10} | {rps:9.0f} | {mbs:8.1f} | {ratio:>8} | {goal:>6} |")
            if "baseline" in med:
                change = med["cas-server"][metric] / med["baseline"][metric]
                print(f"| {name:22} | this / baseline: {change:.0%} |")
        return 0
    finally:
        ours.send_signal(signal.SIGTERM)
        nginx.send_signal(signal.SIGQUIT)
        if base is not None:
            base.send_signal(signal.SIGTERM)
            base.wait(timeout=30)
        ours.wait(timeout=30)
        nginx.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
