"""cas-sync: show the settings, review the plan (--dry-run), mirror the upstream channel."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from typing import TYPE_CHECKING

import humanize

from casconsole.cli import sync_bundle, sync_run
from casconsole.cli.common import (
    add_settings_arguments,
    add_version_argument,
    entry_point,
    report_error,
    settings_from_args,
)
from casconsole.errors import EXIT_FAILED
from casconsole.redact import redact_url
from casconsole.settings import Settings

if TYPE_CHECKING:  # the selection is imported where a plan is made: a sync starts its workers first
    from casconsole.selection.plan import Plan


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cas-sync",
        description="Mirror the selected records of remote_url into <mirror_dir>/<channel_name>/<subdir>/.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--show", action="store_true", help="print the effective settings and their origins")
    mode.add_argument("--dry-run", action="store_true", help="print the plan; write nothing")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sync_run.add_sync_arguments(parser, mode)
    sync_bundle.add_bundle_arguments(parser, mode)
    add_version_argument(parser)
    add_settings_arguments(parser)
    return parser


@entry_point
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quiet and (args.show or args.dry_run or args.status or args.json):
        parser.error("--quiet goes with a sync, not with --show, --dry-run, --status or --json")
    settings = settings_from_args(args)
    if sync_bundle.wanted(args):
        return sync_bundle.run(settings, args, parser)
    if args.show:
        return show(settings, args.json)
    if args.dry_run:
        return dry_run(settings, args.json, exit_when_done=argv is None, pypi_only=args.pypi_only)
    return run_sync(settings, args)


def show(settings: Settings, as_json: bool) -> int:
    data = settings.to_json()
    if as_json:
        print(json.dumps(data, indent=2))
        return 0
    width = max(map(len, data))
    for key, item in data.items():
        value = item["value"]
        if isinstance(value, list):
            text = ", ".join(value)
        elif isinstance(value, dict):
            text = ", ".join(f"{k}={v}" for k, v in value.items())
        else:
            text = json.dumps(value) if value is None else str(value)
        if isinstance(value, list) and not value:
            text = "[]"
        print(f"{key:<{width}}  {text}")
        print(f"{'':<{width}}    from {item['layer']}: {item['source']}")
    return 0


def dry_run(settings: Settings, as_json: bool, exit_when_done: bool = False, pypi_only: bool = False) -> int:
    """Print the plan (the channel's, then the pypi section's); exit status 1 when upstream carries
    none of the platforms (a sync would not run). With `exit_when_done` (cas-sync run as a program)
    the process ends here: freeing a 500,000-record plan object by object at interpreter exit takes
    half a second (measured), and a dry run has nothing left to clean up. Run as a program, the
    channel's plan is made in two processes where it can be (sync/splitplan.py)."""
    from casconsole.cli import sync_pypi
    from casconsole.conda.repodata import gc_paused
    from casconsole.sync import splitplan
    from casconsole.sync.dryrun import make_plan

    # nothing a dry run makes forms a cycle; a collection would walk the plan's millions of
    # objects again (measured: a third of the time of writing its JSON at 500,000 records, and
    # 0.2 s for the one that re-enabling the collector would start at the end)
    with gc_paused():
        pypi = sync_pypi.make_plan(settings, pypi_only)
        plan, half = None, None
        if not pypi_only:
            split = None
            if exit_when_done and splitplan.splittable(settings):  # noarch's half on the other core
                split = splitplan.make_split_plan(settings, _json_section if as_json else _text_section)
            plan, half = split if split is not None else (make_plan(settings), None)
        try:
            _report(plan, pypi, as_json, half.write_rest if half is not None else None)
        finally:
            if half is not None:
                half.stop()
        status = 0
        if plan is not None and plan.nothing_left:
            report_error(plan.nothing_left_message())
            status = EXIT_FAILED
        if exit_when_done:
            sys.stdout.flush()  # a reader gone (`| head`) raises here, for entry_point to handle
            sys.stderr.flush()
            os._exit(status)
    return status


def _report(plan: Plan | None, pypi, as_json: bool, rest) -> None:
    """Print the channel's plan and the pypi section's; `rest` writes a split plan's other half."""
    from casconsole.cli import sync_pypi
    from casconsole.selection.planjson import write_json

    if as_json:
        extra = {"pypi": pypi.to_json()} if pypi is not None else {}
        if plan is None:
            print(json.dumps(extra, indent=1))
        else:  # streamed: at 500,000 records the document is tens of megabytes
            sys.stdout.flush()
            write_json(plan, sys.stdout.buffer, extra, rest)
        return
    if plan is not None:
        print_plan(plan, more=rest)
    if pypi is not None:
        sync_pypi.print_plan(pypi, blank=plan is not None)


def print_plan(plan: Plan, out=None, groups_shown: int = 8, more=None) -> None:
    """The funnel of each subdir, then its dependency warnings grouped by the entry that caused them.
    `more(out.buffer)` writes the sections of the subdirs planned elsewhere (a split plan's other half)."""
    out = out or sys.stdout
    settings = plan.settings
    print(f"plan for {redact_url(settings.remote_url)} -> {settings.channel_dir}", file=out)
    for subdir in plan.missing:
        print(f"warning: {plan.missing_warning(subdir)}", file=out)
    for warning in plan.unmatched_warnings():
        print(f"warning: {warning}", file=out)
    for sp in plan.subdirs.values():
        print_subdir(plan, sp, out, groups_shown)
    if more is not None:
        out.flush()
        more(out.buffer)


def _text_section(plan: Plan, sp, out) -> None:
    """A subdir's section of the printed plan, written to a byte stream (a split plan's child)."""
    text = io.TextIOWrapper(out, encoding=sys.stdout.encoding, errors=sys.stdout.errors)
    print_subdir(plan, sp, text)
    text.flush()
    text.detach()


def _json_section(plan: Plan, sp, out) -> None:
    from casconsole.selection.planjson import write_subdir_json

    write_subdir_json(sp, out)


def print_subdir(plan: Plan, sp, out, groups_shown: int = 8) -> None:
    """One subdir's funnel, then its dependency warnings grouped by the entry that caused them."""
    settings, subdir = plan.settings, sp.subdir
    f = sp.funnel
    rows = [
        ("upstream", f"{f.upstream:,}", ""),
        ("dropped by license", f"-{f.dropped_license:,}", ""),
        ("dropped by blacklist", f"-{f.dropped_blacklist:,}", ""),
    ]
    if settings.newest_versions:
        rows.append(
            ("dropped as older", f"-{f.dropped_newest:,}", f"newest_versions: {settings.newest_versions}")
        )
    if settings.curated:
        rows.append(("dropped by curated", f"-{f.dropped_curated:,}", "not in the whitelist or its closure"))
    rows.append(("added back by whitelist", f"+{f.added_whitelist:,}", ""))
    if settings.whitelist_closure or settings.curated:
        rows.append(("added by closure", f"+{f.added_closure:,}", "dependencies of whitelist entries"))
    rows += [
        ("kept", f"{f.kept:,}", ""),
        ("to download", f"{f.download:,}", humanize.naturalsize(f.download_bytes)),
        ("already present", f"{f.present:,}", ""),
        ("to delete", f"{f.delete:,}", _delete_note(sp)),
    ]
    if plan.check is not None:
        rows.append(("unmet dependencies", f"{f.broken:,}", "kept records" if f.broken else ""))
    print(f"\n{subdir}", file=out)
    for label, number, extra in rows:
        print(f"  {label:<24}{number:>10}  {extra}".rstrip(), file=out)
    groups = sp.broken_groups()
    for group in groups[:groups_shown]:
        print(f"  ! {group.summary}", file=out)
        examples = ", ".join(group.examples(3)) + (", ..." if group.records > 3 else "")
        print(f"      e.g. {examples}", file=out)
    if len(groups) > groups_shown:
        print(
            f"  ! ... and {len(groups) - groups_shown} more causes (all in --json, under broken_by)",
            file=out,
        )
    for warning in sp.repodata.warnings:
        print(f"  warning: {warning}", file=out)
    if sp.prune_withheld:
        print(f"  warning: {sp.prune_warning()}", file=out)


def _delete_note(sp) -> str:
    from casconsole.selection.warnings import percent

    if not sp.prune:
        return "prune is off"
    if sp.prune_withheld:
        return f"more than max_prune ({percent(sp.max_prune)}): a sync keeps them"
    return ""


def run_sync(settings: Settings, args: argparse.Namespace) -> int:
    return sync_run.run(settings, args)


if __name__ == "__main__":
    sys.exit(main())
