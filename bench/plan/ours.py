"""Our parse + select + plan of one upstream, as one process: what run.py times and measures.

    python bench/plan/ours.py URL [--blacklist FILE] [--license-blacklist FAMILY] [--check] [--closure FILE]

Fetches and parses linux-64 and noarch, selects and plans them (with `--check`, the dependency
check too; with `--closure FILE`, that file's entries as the whitelist with whitelist_closure)
and prints the counts, so the work cannot be skipped. Settings files and
CAS_MIRROR_* variables are not read.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from casconsole.settings import load_settings
from casconsole.sync.dryrun import make_plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--blacklist", type=Path, help="a file of names, one a line")
    parser.add_argument("--license-blacklist", action="append", default=[], help="a license family")
    parser.add_argument("--check", action="store_true", help="run the dependency check too")
    parser.add_argument("--closure", type=Path, help="whitelist entries (one a line) and their closure")
    args = parser.parse_args(argv)
    cli = {
        "remote_url": (args.url, "--remote-url"),
        "mirror_dir": (str(Path(tempfile.mkdtemp()) / "mirror"), "--mirror-dir"),
        "platforms": (["linux-64"], "--platform"),
        "blacklist": (args.blacklist.read_text().split() if args.blacklist else [], "--blacklist"),
        "license_blacklist": (args.license_blacklist, "--license-blacklist"),
    }
    if args.closure:
        cli["whitelist"] = (args.closure.read_text().splitlines(), "--whitelist")
        cli["whitelist_closure"] = (True, "--set whitelist_closure")
    plan = make_plan(load_settings(cli=cli, env={}), check=args.check)
    total = plan.total
    closure = sum(len(sp.closure) for sp in plan.subdirs.values())
    print(
        f"kept {total.kept} of {total.upstream}, unmet dependencies {total.broken}, closure {closure}",
        flush=True,
    )
    os._exit(0)  # as cas-sync --dry-run ends: without freeing the plan object by object


if __name__ == "__main__":
    sys.exit(main())
