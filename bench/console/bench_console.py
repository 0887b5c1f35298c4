"""The console over a 500,000-record plan: first paint, cursor keys, toggle + re-plan + repaint.

    python bench/console/bench_console.py [--records 500000] [--keys 200] [--toggles 20]
    python bench/console/bench_console.py --case broken [--channel DIR]

Builds an upstream subdir of N records in memory, shaped like a large conda channel (about
N/20 names, 20 builds each, licenses over the usual families), makes the real `Plan` of it with
a blacklist and a license blacklist, and drives the real console app (headless, 80x24) with
Pilot. `--case broken` plans bench/plan's conda-forge-shaped channel of 500,000 records instead
(generated into DIR when missing) under `license_blacklist: GPL`, the cas-mirror FAQ's example,
which drops `libgcc-ng` and leaves most kept records with unmet dependencies; its toggles add
`w` on libgcc-ng (whitelisted: about 220,000 records whole again) and again (broken again).

Every screen update the app produces is encoded into the terminal's escape sequences,
as a terminal session would get them, and the clock stops when that frame is out:

- first paint: from the plan (or channel) being in memory to the frame holding its first rows;
- cursor: from a key press to the frame showing the moved cursor, per key, keys coming
  `--interval` apart (0.04 s: a held key's auto-repeat); Textual draws at most 60 frames a
  second, so keys sent back to back would measure that cap (16.7 ms), not the work;
- toggle: from `b` to the frame with the re-planned rows and funnel (`Plan.update(names=...)`).

Figures go to stdout as a table; see RESULTS.md for the ones measured here.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from textual import events

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from casconsole.conda.repodata import Record, RepoData
from casconsole.console.app import CasConsole
from casconsole.console.session import ConsoleState
from casconsole.selection.plan import Plan
from casconsole.settings import read_layers, resolve
from casconsole.upstream.repodata import fetch_upstream

LICENSES = [
    ("MIT", "MIT"), ("BSD-3-Clause", "BSD"), ("Apache-2.0", "APACHE"), ("GPL-2.0-or-later", "GPL2"),
    ("GPL-3.0-only", "GPL3"), ("LGPL-2.1-or-later", "LGPL"), ("AGPL-3.0-only", "AGPL"), ("MPL-2.0", None),
    ("", None),
]  # fmt: skip


def make_records(n: int, seed: int = 1) -> list[Record]:
    """N records over N/20 names; the first 200 names are a base the others depend on."""
    rng = random.Random(seed)
    prefixes = ("py", "lib", "r-", "ja", "geo", "sci")
    names = [f"{rng.choice(prefixes)}{i:05d}-pkg" for i in range(max(1, n // 20))]
    base = names[: min(200, len(names))]
    records = []
    for i in range(n):
        name = names[i % len(names)]
        major, minor = divmod(i // len(names), 5)
        license, family = LICENSES[hash(name) % len(LICENSES)]
        build = f"py3{10 + minor % 3}h{rng.getrandbits(28):07x}_{major % 3}"
        depends = [] if i % len(names) < len(base) else [f"{rng.choice(base)} >=0.0", f"{rng.choice(base)}"]
        records.append(
            Record(
                name=name,
                version=f"{major}.{minor}.{i % 7}",
                build=build,
                build_number=major % 3,
                depends=depends,
                license=license,
                license_family=family,
                size=rng.randrange(10_000, 50_000_000),
                timestamp=1_600_000_000_000 + i * 1000,
                fn=f"{name}-{major}.{minor}.{i % 7}-{build}.conda",
            )
        )
    return records


async def press(app: CasConsole, key: str) -> None:
    """A key as the terminal driver delivers it: one Key event posted to the app."""
    character = key if len(key) == 1 else None
    app.post_message(events.Key(key, character))


class Frames:
    """Every frame the app sends, encoded as a terminal would receive it, with its time."""

    def __init__(self, app: CasConsole):
        self.console = Console(file=io.StringIO(), force_terminal=True, color_system="truecolor", width=80)
        self.count = 0
        self.last_time = 0.0
        self.last_text = ""
        original = app._display

        def display(screen, renderable):
            original(screen, renderable)
            if renderable is None:
                return
            text = renderable.render_segments(self.console) if hasattr(renderable, "render_segments") else ""
            self.count += 1
            self.last_time = time.perf_counter()
            self.last_text = text

        app._display = display  # type: ignore[method-assign]

    async def after(self, count: int, timeout: float = 10.0) -> float:
        """Wait for a frame after frame number `count`; the time it was out."""
        deadline = time.perf_counter() + timeout
        while self.count <= count:
            if time.perf_counter() > deadline:
                raise TimeoutError("no frame")
            await asyncio.sleep(0)
        return self.last_time

    async def showing(self, text: str, timeout: float = 10.0) -> float:
        deadline = time.perf_counter() + timeout
        seen = self.count
        while True:
            if self.count > seen:
                seen = self.count
                if text in self.last_text:
                    return self.last_time
            if time.perf_counter() > deadline:
                plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", self.last_text)
                raise TimeoutError(f"no frame showing {text!r}; the last one: {plain!r}")
            await asyncio.sleep(0)


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def row(label: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    if len(ms) == 1:
        return f"| {label} | {ms[0]:.1f} ms | | |"
    return (
        f"| {label} | median {statistics.median(ms):.1f} ms | p95 {percentile(ms, 95):.1f} ms "
        f"| max {max(ms):.1f} ms (n={len(ms)}) |"
    )


def broken_channel(channel: Path) -> Path:
    """bench/plan's generated channel (500,000 records), made when missing."""
    if not (channel / "noarch" / "repodata.json").exists():
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plan"))
        import generate  # bench/plan/generate.py

        generate.main([str(channel)])
    return channel


async def bench(
    records: int,
    keys: int,
    toggles: int,
    interval: float,
    case: str = "synthetic",
    channel: Path | None = None,
) -> list[str]:
    results = []
    work = Path(tempfile.mkdtemp(prefix="bench-console-"))
    env = {"CAS_MIRROR_USER_CONFIG": str(work / "user.yaml"), "CAS_MIRROR_SYSTEM_CONFIG": str(work / "none")}
    if case == "broken":
        assert channel is not None
        (work / "user.yaml").write_text(
            f"remote_url: {broken_channel(channel).resolve().as_uri()}\nmirror_dir: {work / 'mirror'}\n"
            "platforms: [linux-64]\nlicense_blacklist: GPL\n"
        )
    else:
        (work / "user.yaml").write_text(
            f"remote_url: {work / 'upstream'}\nmirror_dir: {work / 'mirror'}\nplatforms: [linux-64]\n"
            "license_blacklist: [AGPL]\nblacklist: [r-*]\n"
        )
    big = work / "mirror" / "big" / "linux-64"
    big.mkdir(parents=True)

    started = time.perf_counter()
    settings = resolve(read_layers(env=env))
    if case == "broken":
        upstream = fetch_upstream(settings)
    else:
        upstream = {"linux-64": RepoData("linux-64", make_records(records)), "noarch": RepoData("noarch", [])}
    records = len(upstream["linux-64"].records)  # the subdir the Plan screen shows first
    made = time.perf_counter() - started
    started = time.perf_counter()
    plan = Plan.build(settings, upstream)
    built = time.perf_counter() - started
    plan.prepare_updates()  # as the console does, in its worker, after the build
    prepared = time.perf_counter() - started - built
    broken = plan.total.broken
    print(
        f"records made in {made:.1f} s, plan built in {built:.2f} s (dependency check included, "
        f"{broken:,} broken), updates prepared in {prepared:.2f} s",
        file=sys.stderr,
    )

    state = ConsoleState(env=env)
    app = CasConsole(state, load_plan=False, probe=False)
    async with app.run_test(size=(80, 24)) as pilot:
        frames = Frames(app)
        await pilot.press("3")
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()

        # -- first paint of the Plan screen: the plan is in memory, the screen is told
        first_name = plan.subdirs["linux-64"].records[0].name
        t0 = time.perf_counter()
        app.adopt_plan(plan)  # what the console does when its worker has built the plan
        painted = await frames.showing(first_name)
        results.append(row(f"Plan: first paint of {records:,} records", [painted - t0]))

        # -- cursor keys: down, and a few page downs among them
        screen = app.screen
        table = screen.table
        times = []
        for n in range(keys):
            key = "pagedown" if n % 25 == 24 else "down"
            await asyncio.sleep(interval)
            count = frames.count
            t0 = time.perf_counter()
            await press(app, key)
            times.append(await frames.after(count) - t0)
        results.append(row("Plan: cursor key to frame", times))

        # -- toggles: b on the record under the cursor, re-plan of that name, repaint
        times = []
        for n in range(toggles):
            table.cursor = (n * 997) % 400
            await pilot.pause()
            name = plan.subdirs["linux-64"].records[table.cursor_index].name
            was = name in state.settings.blacklist
            count = frames.count
            t0 = time.perf_counter()
            await press(app, "b")
            times.append(await frames.after(count) - t0)
            assert (name in state.settings.blacklist) != was or name.startswith("r-")
        results.append(row("Plan: toggle b, re-plan, frame (first one builds the name index)", times[:1]))
        results.append(row("Plan: toggle b, re-plan, frame (the others)", times[1:]))
        times = []
        for _ in range(5):  # runs right after a toggle's frame: it delays the next key by this much
            t0 = time.perf_counter()
            screen.show_deps()
            times.append(time.perf_counter() - t0)
        results.append(row(f"Plan: the dependency line after a toggle ({plan.total.broken:,} broken)", times))

        if case == "broken":  # whitelisting what the license blacklist dropped, and back
            linux = plan.subdirs["linux-64"]
            runtime = next(i for i, r in enumerate(linux.records) if r.name == "libgcc-ng")
            times, lines, counts = [], [], []
            for _ in range(5):
                for _again in range(2):
                    table.cursor = runtime
                    await pilot.pause()
                    count = frames.count
                    t0 = time.perf_counter()
                    await press(app, "w")
                    times.append(await frames.after(count) - t0)
                    t0 = time.perf_counter()
                    screen.show_deps()
                    lines.append(time.perf_counter() - t0)
                    counts.append(plan.total.broken)
            assert "libgcc-ng" not in state.settings.whitelist and max(counts) - min(counts) > 100_000, counts
            label = f"Plan: w on libgcc-ng and back ({min(counts):,} / {max(counts):,} broken)"
            results.append(row(label, times))
            results.append(row("Plan: the dependency line after each of those", lines))

        # -- the same with the "dropped" filter on: every toggle filters 500,000 rows again
        await pilot.press("f", "f")
        await pilot.pause()
        times = []
        for n in range(toggles):
            table.cursor = n % 50
            await pilot.pause()
            count = frames.count
            t0 = time.perf_counter()
            await press(app, "w")
            times.append(await frames.after(count) - t0)
        results.append(row("Plan: toggle w with the 'dropped' filter on", times))

        # -- search and sort over every record (not bounded by the issue; for the record)
        screen.filter_index = 0  # back to "all"
        screen.apply_filter()
        await pilot.pause()
        matching = sum("9" in r.name for r in plan.subdirs["linux-64"].records)
        await pilot.press("slash")
        await pilot.pause()
        t0 = time.perf_counter()
        await press(app, "9")
        shown = await frames.showing(f"{matching:,} of {records:,}")
        results.append(row("Plan: search, first key typed (reads every name once)", [shown - t0]))
        await pilot.press("escape")
        await pilot.pause()
        t0 = time.perf_counter()
        table.sort_by("size")
        sorted_at = await frames.showing("size ▲")
        results.append(row("Plan: sort by size, in a thread, to the sorted frame", [sorted_at - t0]))

        # -- Channels: a subdir of N records read into memory, then shown
        await pilot.press("5")
        await app.workers.wait_for_complete()
        await pilot.pause()
        channels = app.screen
        repodata = RepoData("linux-64", upstream["linux-64"].records)
        t0 = time.perf_counter()
        channels.show_repodata(repodata, "")
        painted = await frames.showing(first_name)
        results.append(row(f"Channels: first paint of {records:,} records", [painted - t0]))
        times = []
        for _ in range(keys):
            await asyncio.sleep(interval)
            count = frames.count
            t0 = time.perf_counter()
            await press(app, "down")
            times.append(await frames.after(count) - t0)
        results.append(row("Channels: cursor key to frame", times))
        t0 = time.perf_counter()
        app.screen.table.sort_by("name")
        sorted_at = await frames.showing("name ▲")
        results.append(row("Channels: sort by name, in a thread, to the sorted frame", [sorted_at - t0]))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--toggles", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.04, help="seconds between cursor keys")
    parser.add_argument("--case", choices=("synthetic", "broken"), default="synthetic")
    parser.add_argument(
        "--channel",
        type=Path,
        default=Path(tempfile.gettempdir()) / "casconsole-bench-plan",
        help="--case broken: bench/plan's generated channel (made there when missing)",
    )
    args = parser.parse_args()
    lines = asyncio.run(bench(args.records, args.keys, args.toggles, args.interval, args.case, args.channel))
    print("| measure | figure | | |")
    print("|---|---|---|---|")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
