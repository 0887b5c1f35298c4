"""Benchmark: casconsole's PyPI mirror against bandersnatch, same subset, same loopback index, one run.

    python bench/pypi/run.py [--work bench/_work/pypi] [--projects 40] [--versions 5] [--rounds 3]

The upstream: `--projects` tiny projects of `--versions` versions, each version a wheel of about
`--kb` KB (incompressible) and an sdist, served by tests/pypi_index.py's SimpleIndex on 127.0.0.1
(PEP 691 JSON pages with `_last-serial`, PyPI's JSON API, the files): what bandersnatch
(`api-method = simple`, the allowlist plugin) and `cas-sync --pypi-only` both read. Both mirror the
same subset (every project, every file: bandersnatch mirrors all files of an allowlisted
project, so casconsole keeps pre-releases, yanked files and sdists too), with 8 downloads at a
time (bandersnatch's `workers = 8`, casconsole's `concurrency: 8`).

Each round syncs each tool cold into an empty folder, then again with nothing new (the no-op);
rounds take turns at which tool goes first. Wall time of the whole command; medians printed as a
markdown table, every run saved as JSON beside the work folder. Both mirrors are checked to hold
the same distribution files.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "tests"))
sys.path.insert(0, str(HERE.parent))

from installed import compile_bytecode  # noqa: E402
from pypi_index import Offered, SimpleIndex, build_sdist, build_wheel  # noqa: E402


def tool(name: str) -> str:
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name) or name


def generate(folder: Path, projects: int, versions: int, kb: int) -> list[Offered]:
    files = []
    for p in range(projects):
        name = f"bench-project-{p:03d}"
        for v in range(versions):
            version = f"1.{v}.0"
            files.append(Offered(build_wheel(folder, name, version, payload=kb * 1024), metadata=True))
            files.append(Offered(build_sdist(folder, name, version)))
    return files


NGINX = """worker_processes 1;
daemon off;
pid {temp}/nginx.pid;
error_log {temp}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  keepalive_requests 100000;
  {temps}
  map $http_accept $simple_page {{
    default index.html;
    "~application/vnd\\.pypi\\.simple\\.v1\\+json" index.json;
  }}
  server {{
    listen 127.0.0.1:{port};
    root {root};
    add_header X-PyPI-Last-Serial 1 always;  # bandersnatch checks it against the index's serial
    location /simple/ {{
      if ($simple_page = index.json) {{ rewrite ^(.*)/$ $1/index.json last; }}
      types {{ }}
      default_type text/html;
    }}
    location ~ ^/simple/.*\\.json$ {{ types {{ }} default_type application/vnd.pypi.simple.v1+json; }}
    location /pypi/ {{ types {{ }} default_type application/json; }}
    location /packages/ {{ types {{ }} default_type application/octet-stream; }}
  }}
}}
"""


def start_nginx(index: SimpleIndex, work: Path) -> tuple[subprocess.Popen, str]:
    """The index as static files (pages made once) behind nginx on a free port, as a CDN serves one."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    index.public_base = f"http://127.0.0.1:{port}"
    index.write_tree(work / "tree")
    temp = work / "nginx"
    temp.mkdir()
    temps = " ".join(f"{t}_temp_path {temp};" for t in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = temp / "nginx.conf"
    conf.write_text(NGINX.format(temp=temp, temps=temps, port=port, root=work / "tree"))
    process = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(temp)])
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, index.public_base
        except OSError:
            time.sleep(0.05)
    raise SystemExit("nginx did not start")


def bandersnatch_config(work: Path, master: str, names: list[str]) -> Path:
    conf = work / "bandersnatch.conf"
    listed = "".join(f"    {n}\n" for n in names)
    conf.write_text(
        "[mirror]\n"
        f"directory = {work / 'bandersnatch'}\n"
        f"master = {master}\n"
        "allow-non-https = true\njson = false\nrelease-files = true\nworkers = 8\ntimeout = 30\n"
        "global-timeout = 1800\nstop-on-error = true\nhash-index = false\nsimple-format = ALL\n"
        "api-method = simple\ncompare-method = hash\ndigest_name = sha256\nstorage-backend = filesystem\n"
        "\n[plugins]\nenabled =\n    allowlist_project\n"
        f"\n[allowlist]\npackages =\n{listed}"
    )
    return conf


def casconsole_config(work: Path, index_url: str, names: list[str]) -> Path:
    conf = work / "cas-mirror.yaml"
    conf.write_text(
        f"mirror_dir: {work / 'casconsole'}\nconcurrency: 8\n"
        f"pypi:\n  index_url: {index_url}\n  projects: {json.dumps(names)}\n"
        "  prereleases: true\n  yanked: true\n"
    )
    return conf


def run(cmd: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        lines = [line for line in (done.stdout + done.stderr).splitlines() if not line.startswith("  ")]
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n" + "\n".join(lines[-30:]))
    return seconds


def dist_files(folder: Path) -> set[str]:
    return {p.name for p in folder.rglob("*") if p.is_file() and p.name.endswith((".whl", ".tar.gz"))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=HERE.parent / "_work" / "pypi")
    parser.add_argument("--projects", type=int, default=40)
    parser.add_argument("--versions", type=int, default=5)
    parser.add_argument("--kb", type=int, default=40, help="size of each wheel, about")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--server",
        choices=("nginx", "python"),
        default="nginx" if shutil.which("nginx") else "python",
        help="what serves the index: nginx over its files (where installed), or the tests' Python server",
    )
    args = parser.parse_args()
    work = args.work.resolve()
    compile_bytecode()  # both tools as installed (bandersnatch's bytecode was compiled by pip)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    files = generate(work / "dist", args.projects, args.versions, args.kb)
    names = sorted({f.project for f in files})
    total = sum(f.path.stat().st_size for f in files)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAS_MIRROR_", "PIP_"))}
    env["CAS_MIRROR_SYSTEM_CONFIG"] = env["CAS_MIRROR_USER_CONFIG"] = os.devnull
    results: dict[str, dict[str, list[float]]] = {
        "casconsole": {"cold": [], "noop": []},
        "bandersnatch": {"cold": [], "noop": []},
    }
    with SimpleIndex(files) as index:
        nginx, base = start_nginx(index, work) if args.server == "nginx" else (None, index.base)
        cas = casconsole_config(work, f"{base}/simple/", names)
        commands = {
            "casconsole": [tool("cas-sync"), "--config", str(cas), "--pypi-only", "--quiet"],
            "bandersnatch": [
                tool("bandersnatch"),
                "-c",
                str(bandersnatch_config(work, base, names)),
                "mirror",
            ],
        }
        try:
            for r in range(args.rounds):
                order = ["casconsole", "bandersnatch"] if r % 2 == 0 else ["bandersnatch", "casconsole"]
                for name in order:
                    shutil.rmtree(work / name, ignore_errors=True)
                    results[name]["cold"].append(run(commands[name], env))
                    results[name]["noop"].append(run(commands[name], env))
                load = os.getloadavg()[0]
                print(
                    f"round {r + 1}: "
                    + ", ".join(
                        f"{n} cold {results[n]['cold'][-1]:.2f} s, no-op {results[n]['noop'][-1]:.2f} s"
                        for n in order
                    )
                    + f" (load {load:.1f})",
                    file=sys.stderr,
                )
        finally:  # a tool that failed ends the run: nginx goes with it
            if nginx is not None:
                nginx.terminate()
                nginx.wait()
    ours, theirs = dist_files(work / "casconsole" / "pypi" / "files"), dist_files(work / "bandersnatch")
    assert ours == theirs == {f.path.name for f in files}, (len(ours), len(theirs), len(files))
    med = {n: {k: statistics.median(v) for k, v in r.items()} for n, r in results.items()}
    print(
        f"\n{len(names)} projects, {len(files)} files, {total / 1e6:.1f} MB; "
        f"{platform.python_version()}, {os.cpu_count()} cores; medians of {args.rounds} rounds\n"
    )
    print("| | casconsole | bandersnatch | bandersnatch / casconsole |\n|---|---|---|---|")
    for kind, label in (("cold", "cold (empty mirror)"), ("noop", "no-op (nothing new)")):
        ratio = med["bandersnatch"][kind] / med["casconsole"][kind]
        ours, theirs = med["casconsole"][kind], med["bandersnatch"][kind]
        print(f"| {label} | {ours:.2f} s | {theirs:.2f} s | {ratio:.2f}x |")
    (work.parent / "pypi-results.json").write_text(json.dumps({"runs": results, "medians": med}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
