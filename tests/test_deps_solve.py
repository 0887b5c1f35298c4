"""A curated plan yields a channel a solver can use: rattler.solve against its repodata alone."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import rattler
from rattler import BuildString, Channel, Gateway, GenericVirtualPackage, PackageName, Version

from casconsole.conda.repodata import write_repodata
from casconsole.selection.deps import parse_dep
from casconsole.selection.plan import Plan
from casconsole.settings import load_settings
from casconsole.sync.dryrun import make_plan

# what a linux client machine provides; repodata records ask for these in their depends
VIRTUAL = [
    GenericVirtualPackage(PackageName(name), Version(version), BuildString("0"))
    for name, version in (("__glibc", "2.28"), ("__unix", "0"), ("__linux", "5.10"))
]


def settings_for(url, mirror, **cli):
    layer = {key: (value, f"--{key}") for key, value in cli.items()}
    layer |= {"remote_url": (str(url), "--remote-url"), "mirror_dir": (str(mirror), "--mirror-dir"),
              "platforms": (["linux-64"], "--platform")}  # fmt: skip
    return load_settings(cli=layer)


def write_mirror_repodata(plan: Plan, upstream: Path, out: Path) -> Path:
    """The mirror's repodata: the upstream records the plan keeps, as upstream wrote them.

    Lists some real repodata leaves null (`"constrains": null`) are written as empty lists,
    since rattler refuses a null there.
    """
    for subdir, sp in plan.subdirs.items():
        keep = {r.fn for r in sp.included()}
        raw = json.loads((upstream / subdir / "repodata.json").read_text())
        doc: dict = {"info": {"subdir": subdir}, "repodata_version": 1}
        for key in ("packages", "packages.conda"):
            doc[key] = {
                fn: {
                    **record,
                    "depends": record.get("depends") or [],
                    "constrains": record.get("constrains") or [],
                }
                for fn, record in raw.get(key, {}).items()
                if fn in keep
            }
        write_repodata(out / subdir, doc)
    return out


def solve(channel: Path, specs: list[str]) -> dict[str, str]:
    async def run():
        gateway = Gateway(cache_dir=channel / ".rattler-cache")
        return await rattler.solve(
            [Channel(channel.as_uri())], specs, gateway=gateway, platforms=["linux-64", "noarch"],
            virtual_packages=VIRTUAL,
        )  # fmt: skip

    return {r.name.normalized: str(r.version) for r in asyncio.run(run())}


def test_curated_demo_channel_solves(demo_channel, tmp_path):
    plan = make_plan(
        settings_for(demo_channel, tmp_path / "m", whitelist=["python 3.9.*", "numpy"], curated=True)
    )
    linux = plan.subdirs["linux-64"]
    assert 0 < linux.funnel.kept < linux.funnel.upstream
    assert {r.name for r in linux.included()} >= {"python", "numpy", "readline", "openssl", "libopenblas"}
    assert "r-base" not in {r.name for r in linux.included()}
    assert all(not sp.broken for sp in plan.subdirs.values())
    solution = solve(
        write_mirror_repodata(plan, demo_channel, tmp_path / "curated"), ["python 3.9.*", "numpy"]
    )
    assert solution["python"].startswith("3.9.") and "numpy" in solution and "readline" in solution


@pytest.mark.realdata
def test_real_curated_channel_solves_and_a_blacklist_reports_what_it_breaks(realdata, tmp_path):
    """The real conda-forge subset, linux-64 + noarch.

    The subset has python (3.9 among others) but no numpy; mamba's real conda-forge numpy
    closure (numpy 1.26.4 for python 3.12, with its libraries) is added to its linux-64, so
    that both specs have records. The two cannot share one environment in this data (that
    numpy build needs python 3.12), so each is solved on its own against the curated channel.
    """
    subset = realdata / "conda-subchannel-demo"
    numpy_file = realdata / "mamba/libmamba/tests/data/repodata/conda-forge-numpy-linux-64.json"
    linux = json.loads((subset / "linux-64" / "repodata.json").read_text())
    extra = json.loads(numpy_file.read_text())
    for key in ("packages", "packages.conda"):
        linux.setdefault(key, {}).update(extra.get(key, {}))
    upstream = tmp_path / "upstream"
    write_repodata(upstream / "linux-64", linux)
    write_repodata(upstream / "noarch", json.loads((subset / "noarch" / "repodata.json").read_text()))

    s = settings_for(upstream, tmp_path / "m", whitelist=["python 3.9.*", "numpy"], whitelist_closure=True)
    plan = make_plan(s.replace(curated=True))
    sp = plan.subdirs["linux-64"]
    kept = {r.name for r in sp.included()}
    assert {"python", "numpy", "libgcc-ng", "openssl", "readline", "libopenblas"} <= kept
    assert sp.funnel.kept < sp.funnel.upstream
    reasons = {r.fn: d.reason for r, d in zip(sp.records, sp.decisions)}
    assert reasons["numpy-1.26.4-py312head63a1_0.conda"] == "whitelist: numpy"
    assert any(reason == "dependency of whitelist: numpy" for reason in reasons.values())
    channel = write_mirror_repodata(plan, upstream, tmp_path / "curated")
    assert solve(channel, ["python 3.9.*"])["python"].startswith("3.9.")
    numpy = solve(channel, ["numpy"])
    assert numpy["numpy"] == "1.26.4" and numpy["python"].startswith("3.12.")

    # blacklisting libgcc-ng breaks exactly the kept records that need it
    plan = make_plan(s.replace(blacklist=["libgcc-ng"], whitelist=[], whitelist_closure=False))
    sp = plan.subdirs["linux-64"]
    needs_it = {
        r.fn
        for r, d in zip(sp.records, sp.decisions)
        if d.included and any(parse_dep(t).name == "libgcc-ng" for t in r.depends)
    }
    assert len(needs_it) > 100
    group = next(g for g in sp.broken_groups() if g.cause == "blacklist: libgcc-ng")
    assert set(group.files) == needs_it
    assert group.summary.startswith(
        f"blacklist: libgcc-ng leaves {len(needs_it)} records with unmet dependencies"
    )
    assert all(spec.startswith("libgcc-ng") for spec in group.specs)
