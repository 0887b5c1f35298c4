"""Time the phases of our plan in one process: parse, select+plan, check, closure, toggles.

    python bench/plan/phases.py URL_OR_DIR [--blacklist FILE] [--whitelist FILE] [--license-blacklist F]

Prints one JSON object: per phase its wall and CPU seconds, a few counts, and the peak RSS of
the process. run.py runs it in a fresh subprocess per blacklist; usable alone on any channel.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from casconsole.selection.plan import Plan
from casconsole.settings import load_settings
from casconsole.upstream.repodata import fetch_upstream

# the whitelist of the closure and curated runs when none is given: a scientific stack's anchors
WHITELIST = ["python 3.11.*", "numpy", "r-base"]


def settings(url: str, mirror: Path, **keys):
    layer = {key: (value, f"--{key}") for key, value in keys.items()}
    layer |= {"remote_url": (url, "--remote-url"), "mirror_dir": (str(mirror), "--mirror-dir"),
              "platforms": (["linux-64"], "--platform")}  # fmt: skip
    return load_settings(cli=layer, env={})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--blacklist", type=Path, help="a file of names, one a line")
    parser.add_argument("--whitelist", type=Path, help="a file of entries, one a line")
    parser.add_argument("--license-blacklist", action="append", default=[], help="a license family")
    args = parser.parse_args(argv)
    blacklist = args.blacklist.read_text().split() if args.blacklist else []
    whitelist = args.whitelist.read_text().splitlines() if args.whitelist else WHITELIST
    out: dict[str, object] = {}

    def timed(label, fn):
        cpu, wall = time.process_time(), time.perf_counter()
        result = fn()
        out[label] = {
            "wall": round(time.perf_counter() - wall, 3),
            "cpu": round(time.process_time() - cpu, 3),
        }
        return result

    base = settings(
        args.url,
        Path(tempfile.mkdtemp()) / "mirror",
        blacklist=blacklist,
        license_blacklist=args.license_blacklist,
    )
    upstream = timed("fetch_parse", lambda: fetch_upstream(base))
    out["records"] = sum(len(rd.records) for rd in upstream.values())
    timed("plan", lambda: Plan.build(base, upstream, check=False))
    checked = timed("plan_check", lambda: Plan.build(base, upstream))
    out["broken"] = sum(sp.funnel.broken for sp in checked.subdirs.values())
    closure = base.replace(whitelist=whitelist, whitelist_closure=True)
    closed = timed("plan_check_closure", lambda: Plan.build(closure, upstream))
    out["closure_records"] = sum(len(sp.closure) for sp in closed.subdirs.values())
    curated = timed(
        "plan_check_curated", lambda: Plan.build(base.replace(whitelist=whitelist, curated=True), upstream)
    )
    out["curated_kept"] = sum(sp.funnel.kept for sp in curated.subdirs.values())
    del curated
    timed("plan_check_newest3", lambda: Plan.build(base.replace(newest_versions=3), upstream))
    for what in ("check", "check_closure"):
        out[f"{what}_adds"] = {
            k: round(out[f"plan_{what}"][k] - out["plan"][k], 3)  # type: ignore[index]
            for k in ("wall", "cpu")
        }
    # toggles as the console makes them: a name into the blacklist and out again, a whitelist entry
    leaf = next(entry for entry in whitelist[3:] if entry not in blacklist)
    toggles = [
        ("toggle_blacklist_leaf", checked, base.replace(blacklist=[*blacklist, leaf]), {leaf}),
        ("toggle_unblacklist_leaf", checked, base, {leaf}),
        (
            "toggle_blacklist_readline",
            checked,
            base.replace(blacklist=[*blacklist, "readline"]),
            {"readline"},
        ),
        ("toggle_unblacklist_readline", checked, base, {"readline"}),
        ("toggle_blacklist_numpy", checked, base.replace(blacklist=[*blacklist, "numpy"]), {"numpy"}),
        ("toggle_unblacklist_numpy", checked, base, {"numpy"}),
        ("toggle_whitelist_closure", closed, closure.replace(whitelist=[*whitelist, "scipy"]), {"scipy"}),
        ("toggle_unwhitelist_closure", closed, closure, {"scipy"}),
    ]
    for label, plan, new, names in toggles:
        timed(label, lambda plan=plan, new=new, names=names: plan.update(new, names))
    # the console prepares its plan once, in the background, for faster toggles
    timed("prepare_updates", lambda: (checked.prepare_updates(), closed.prepare_updates()))
    for label, plan, new, names in toggles:
        timed(f"prepared_{label}", lambda plan=plan, new=new, names=names: plan.update(new, names))
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
