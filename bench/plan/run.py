"""The plan benchmark: our dry run beside `conda-mirror --dry-run` on the same upstream.

    python bench/plan/run.py [--dir DIR] [--repeat 3] [--no-conda-mirror] [--cases none,blacklist,gpl]

Generates (once) a 500,000-record linux-64 + noarch channel with generate.py, serves it on
127.0.0.1, and runs each command in a fresh subprocess, measuring wall time and peak RSS
(`os.wait4`), with no blacklist, with the generated 100-name blacklist, and with
`license_blacklist: GPL` (the cas-mirror FAQ's example: it drops `libgcc-ng`, which nearly
every linux-64 record depends on, so most kept records have unmet dependencies):

- ours, parse + select + plan: bench/plan/ours.py, from a server that only has
  `repodata.json` (what conda-mirror reads), without and with the dependency check;
- ours as a user runs it: `cas-sync --dry-run --config FILE` (settings, fetch preferring
  `repodata.json.zst`, parse, select, plan, dependency check, the printed report);
- in the GPL case, `cas-sync --dry-run --json` too (its output written to a file and read back);
- conda-mirror: `conda-mirror --dry-run --upstream-channel URL --platform P [--config FILE]`
  for linux-64 and for noarch (it takes one platform a run): times added, peak the larger; the
  GPL case as its blacklist entry `license_family: "GPL*"`.

Then bench/plan/phases.py times our phases (parse, select+plan, check, closure, curated,
newest-N, console toggles) in one process per blacklist. Prints a Markdown report.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from installed import compile_bytecode  # noqa: E402
from treemem import PeakMemory  # noqa: E402

BIN = Path(sys.executable).parent
SUBDIRS = ("linux-64", "noarch")


LOADS: list[float] = []  # the machine's load average (1 minute) as each timed command started
CPUS: list[
    float
] = []  # the CPU seconds (user + system) each timed command used: steadier on a shared machine


def measure(
    cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB of the process and its children together, stdout) of one run of
    `cmd`; raises when it fails."""
    LOADS.append(os.getloadavg()[0])
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd)
        sampler = PeakMemory(proc.pid, 0.005)  # two processes in a dry run
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        tree_peak = sampler.stop()
        code = os.waitstatus_to_exitcode(status)
        proc.returncode = code
        out.seek(0)
        text = out.read().decode(errors="replace")
        if code != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(cmd)} exited {code}:\n{tail}")
    CPUS.append(usage.ru_utime + usage.ru_stime)  # the children's included (wait4 counts them)
    return seconds, max(usage.ru_maxrss * 1024, tree_peak) / 2**20, text


def serve_trees(data: Path, root: Path) -> None:
    """root/full/bench -> data (json + zst); root/json/bench/<subdir>/repodata.json only."""
    (root / "full").mkdir(parents=True)
    (root / "full" / "bench").symlink_to(data)
    for subdir in SUBDIRS:
        folder = root / "json" / "bench" / subdir
        folder.mkdir(parents=True)
        (folder / "repodata.json").symlink_to(data / subdir / "repodata.json")


def clean_env(work: Path) -> dict[str, str]:
    """The environment without the developer's CAS_MIRROR_* settings or files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_MIRROR_")}
    return env | {
        "CAS_MIRROR_SYSTEM_CONFIG": str(work / "none"),
        "CAS_MIRROR_USER_CONFIG": str(work / "none"),
    }


def ours_plan(
    url: str,
    blacklist_file: Path | None,
    check: bool,
    work: Path,
    closure: Path | None = None,
    license_blacklist: list[str] = (),  # type: ignore[assignment]
) -> tuple[float, float]:
    """bench/plan/ours.py: parse, select and plan (and check, and closure), nothing else."""
    cmd = [sys.executable, str(HERE / "ours.py"), url]
    cmd += ["--blacklist", str(blacklist_file)] if blacklist_file else []
    cmd += [f"--license-blacklist={family}" for family in license_blacklist]
    cmd += ["--check"] if check else []
    cmd += ["--closure", str(closure)] if closure else []
    seconds, rss, text = measure(cmd, clean_env(work))
    assert text.startswith("kept "), text
    return seconds, rss


def cas_sync(
    url: str,
    blacklist: list[str],
    work: Path,
    license_blacklist: str = "",
    as_json: bool = False,
    baseline: Path | None = None,
) -> tuple[float, float]:
    """`cas-sync --dry-run` as a user runs it: settings file, plan, check, the printed report
    (or the JSON, checked to be whole)."""
    config = work / "ours.yaml"
    lines = [f"remote_url: {url}", f"mirror_dir: {work / 'mirror'}", "platforms: [linux-64]"]
    lines.append(
        "blacklist:" + "".join(f"\n  - {name}" for name in blacklist) if blacklist else "blacklist: []"
    )
    if license_blacklist:
        lines.append(f"license_blacklist: {license_blacklist}")  # a plain string, as the FAQ writes it
    config.write_text("\n".join(lines) + "\n")
    cmd = [str(BIN / "cas-sync"), "--dry-run", "--config", str(config)] + (["--json"] if as_json else [])
    if baseline is not None:  # another copy of the package: `python -m` in its folder runs it
        cmd = [sys.executable, "-m", "casconsole.cli.sync", *cmd[1:]]
    seconds, rss, text = measure(cmd, clean_env(work), baseline)
    if as_json:
        data = json.loads(text)
        broken = sum(sd["funnel"]["broken"] for sd in data["subdirs"].values())
        assert broken == sum(len(sd["broken"]) for sd in data["subdirs"].values()), "JSON incomplete"
    else:
        assert "linux-64" in text and "noarch" in text, text[:500]
    return seconds, rss


def conda_mirror(url: str, blacklist: list[str], work: Path, license_family: str = "") -> tuple[float, float]:
    config = work / "conda-mirror.yaml"
    entries = [f"\n  - name: {name}" for name in blacklist]
    entries += [f'\n  - license_family: "{license_family}"'] if license_family else []
    config.write_text("blacklist:" + "".join(entries) + "\n" if entries else "{}\n")
    total, peak = 0.0, 0.0
    for subdir in SUBDIRS:
        target = work / "cm-target"
        target.mkdir(exist_ok=True)
        cmd = [str(BIN / "conda-mirror"), "--dry-run", "--upstream-channel", url,
               "--target-directory", str(target), "--platform", subdir, "--config", str(config)]  # fmt: skip
        seconds, rss, _ = measure(cmd)
        total += seconds
        peak = max(peak, rss)
    return total, peak


def phases(url: str, blacklist_file: Path | None, whitelist_file: Path, licenses: list[str] = ()) -> dict:  # type: ignore[assignment]
    cmd = [sys.executable, str(HERE / "phases.py"), url, "--whitelist", str(whitelist_file)]
    if blacklist_file is not None:
        cmd += ["--blacklist", str(blacklist_file)]
    cmd += [f"--license-blacklist={family}" for family in licenses]
    _, _, text = measure(cmd)
    return json.loads(text)


def median_run(fn, repeat: int) -> tuple[float, float, list[float]]:
    runs = [fn() for _ in range(repeat)]
    times = [t for t, _ in runs]
    return statistics.median(times), max(r for _, r in runs), times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "casconsole-bench-plan")
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-conda-mirror", action="store_true")
    parser.add_argument("--cases", default="none,blacklist,gpl", help="which of none, blacklist, gpl to run")
    parser.add_argument(
        "--baseline", type=Path, help="another copy of the package, its dry runs timed alike (gpl)"
    )
    args = parser.parse_args(argv)
    wanted = set(args.cases.split(","))
    compile_bytecode(*([args.baseline.resolve()] if args.baseline else []))
    sys.path.insert(0, str(HERE))
    import generate  # beside this file

    from casconsole.demo import DemoServer

    data = args.dir.resolve()
    if not (data / "noarch" / "repodata.json").exists():
        generate.main([str(data), "--records", str(args.records)])
    blacklist_file = data / "blacklist.txt"
    names = blacklist_file.read_text().split()
    size = sum((data / s / "repodata.json").stat().st_size for s in SUBDIRS)
    work = Path(tempfile.mkdtemp(prefix="bench-plan-"))
    serve_trees(data, work / "serve")
    rows = []
    try:
        with DemoServer(work / "serve" / "full") as full, DemoServer(work / "serve" / "json") as json_only:
            cases = [
                ("none", "no blacklist", [], None),
                ("blacklist", f"{len(names)}-name blacklist", names, blacklist_file),
                ("gpl", "license_blacklist: GPL", [], None),
            ]
            json_url, full_url = f"{json_only.url}/bench", f"{full.url}/bench"
            for key, label, blacklist, listed in cases:
                if key not in wanted:
                    continue
                row: dict = {"case": label}
                start = len(LOADS)
                if key == "gpl":
                    row["plan_check"] = median_run(
                        lambda: ours_plan(json_url, None, True, work, license_blacklist=["GPL"]), args.repeat
                    )
                    names = ["cas_sync", "cas_sync_json"]
                    if args.baseline:
                        names[2:] = ["baseline", "baseline_json"]
                    for _ in range(args.repeat):  # the forms of the dry run take turns
                        for name in names:
                            base = args.baseline.resolve() if name.startswith("baseline") else None
                            got = cas_sync(full_url, [], work, "GPL", name.endswith("_json"), base)
                            row.setdefault(name, []).append(got)
                            row.setdefault("cpu", {}).setdefault(name, []).append(round(CPUS[-1], 2))
                    for name in names:
                        runs = row[name]
                        times = [t for t, _ in runs]
                        row[name] = (statistics.median(times), max(r for _, r in runs), times)
                    if not args.no_conda_mirror:
                        row["conda_mirror"] = median_run(lambda: conda_mirror(json_url, [], work, "GPL*"), 1)
                    row["phases"] = phases(full_url, None, data / "whitelist.txt", ["GPL"])
                    row["loads"] = [round(x, 1) for x in LOADS[start:]]
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
                    continue
                row["plan"] = median_run(lambda f=listed: ours_plan(json_url, f, False, work), args.repeat)
                row["plan_check"] = median_run(
                    lambda f=listed: ours_plan(json_url, f, True, work), args.repeat
                )
                row["plan_check_closure"] = median_run(
                    lambda f=listed: ours_plan(json_url, f, True, work, data / "whitelist.txt"), args.repeat
                )
                row["cas_sync"] = median_run(lambda b=blacklist: cas_sync(full_url, b, work), args.repeat)
                if not args.no_conda_mirror:
                    repeat = args.repeat if not blacklist else 1  # minutes a run
                    row["conda_mirror"] = median_run(
                        lambda b=blacklist: conda_mirror(json_url, b, work), repeat
                    )
                row["phases"] = phases(full_url, listed, data / "whitelist.txt")
                row["loads"] = [round(x, 1) for x in LOADS[start:]]
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(rows, size, args)
    return 0


def report(rows: list[dict], size: int, args: argparse.Namespace) -> None:
    print(f"## Plan benchmark: {args.records:,} records, {size / 1e6:.0f} MB of JSON (linux-64 + noarch)\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}. "
          f"Median wall time of {args.repeat} runs (conda-mirror with a blacklist: 1 run), "
          "peak RSS the largest seen (with its children, sampled every 5 ms).\n")  # fmt: skip
    columns = [
        ("plan", "ours: parse + select + plan"),
        ("plan_check", "ours: + dependency check"),
        ("plan_check_closure", "ours: + check + closure"),
        ("cas_sync", "`cas-sync --dry-run`"),
        ("cas_sync_json", "`cas-sync --dry-run --json`"),
        ("baseline", "baseline: `--dry-run`"),
        ("baseline_json", "baseline: `--dry-run --json`"),
        ("conda_mirror", "`conda-mirror --dry-run`"),
    ]
    columns = [(key, title) for key, title in columns if any(key in row for row in rows)]
    print("| case | " + " | ".join(title for _, title in columns) + " | conda-mirror / ours (dry run) |")
    print("|---|" + "---|" * (len(columns) + 1))
    for row in rows:
        cells = []
        for key, _ in columns:
            value = row.get(key)
            cells.append(f"{value[0]:.2f} s, {value[1]:,.0f} MB" if value else "not run")
        cm, ours = row.get("conda_mirror"), row["cas_sync"]
        ratio = f"{cm[0] / ours[0]:.1f}x the time, {cm[1] / ours[1]:.2f}x the memory" if cm else ""
        print(f"| {row['case']} | " + " | ".join(cells) + f" | {ratio} |")
    for row in rows:
        if "plan" not in row:
            broken = row["phases"].get("broken")
            print(f"\n{row['case']}: {broken:,} kept records with unmet dependencies.")
            cpu = {
                name: f"{statistics.median(v):.2f} s ({', '.join(map(str, v))})"
                for name, v in row["cpu"].items()
            }
            print(f"\nCPU time (user + system) of each dry run, median (every run): {json.dumps(cpu)}")
            continue
        plan = row["plan"][0]
        print(f"\n{row['case']}: the dependency check adds {row['plan_check'][0] - plan:.2f} s, the check "
              f"and the closure of whitelist.txt add {row['plan_check_closure'][0] - plan:.2f} s "
              "(medians, each in a fresh process).")  # fmt: skip
    print(
        "\nLoad average (1 minute) as each command started:",
        json.dumps({r["case"]: r["loads"] for r in rows}),
    )
    print("\nOur phases in one process (bench/plan/phases.py; wall seconds):\n")
    keys = [k for k in rows[0]["phases"] if k != "records"]
    print("| phase | " + " | ".join(row["case"] for row in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for key in keys:
        cells = []
        for row in rows:
            value = row["phases"].get(key)
            cells.append(str(value["wall"]) if isinstance(value, dict) else str(value))
        print(f"| {key} | " + " | ".join(cells) + " |")
    runs = {row["case"]: {k: [round(t, 2) for t in v[2]] for k, v in row.items() if isinstance(v, tuple)}
            for row in rows}  # fmt: skip
    print("\nEvery run (seconds):", json.dumps(runs))


if __name__ == "__main__":
    sys.exit(main())
