"""Dependency-aware selection: the broken-dependency check, closure, curated mode, newest-N."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rattler import BuildString, MatchSpec, PackageRecord

from casconsole.conda.repodata import Record, write_repodata
from casconsole.selection.check import UPSTREAM_CAUSE
from casconsole.selection.deps import SubdirIndex, parse_dep
from casconsole.selection.plan import Plan
from casconsole.settings import load_settings
from casconsole.sync.dryrun import make_plan
from casconsole.upstream.repodata import fetch_upstream


def rec(name, version, build="0", depends=(), family="MIT", number=0):
    return {"name": name, "version": version, "build": build, "build_number": number,
            "depends": list(depends), "license": family, "license_family": family, "size": 1000}  # fmt: skip


def write_channel(root: Path, subdirs: dict[str, list[dict]]) -> Path:
    for subdir, records in subdirs.items():
        packages = {
            f"{r['name']}-{r['version']}-{r['build']}.tar.bz2": {**r, "subdir": subdir} for r in records
        }
        write_repodata(root / subdir, {"info": {"subdir": subdir}, "packages": packages})
    return root


def settings_for(url, mirror, **cli):
    layer = {key: (value, f"--{key}") for key, value in cli.items()}
    layer |= {"remote_url": (str(url), "--remote-url"), "mirror_dir": (str(mirror), "--mirror-dir"),
              "platforms": (["linux-64"], "--platform")}  # fmt: skip
    return load_settings(cli=layer)


# a small base channel: python needs readline and openssl; tools live in noarch
BASE = {
    "linux-64": [
        rec("ncurses", "6.4"),
        rec("readline", "8.1", depends=["ncurses >=6"], family="GPL3"),
        rec("readline", "8.2", depends=["ncurses >=6"], family="GPL3"),
        rec("openssl", "1.1.1w", family="APACHE"),
        rec("openssl", "3.2.1", family="APACHE"),
        rec("python", "3.9.19", "h1_0_cpython", ["readline >=8.1", "openssl >=3", "__glibc >=2.17"], "PSF"),
        rec("python", "3.12.4", "h2_0_cpython", ["readline >=8.2", "openssl >=3"], "PSF"),
        rec("python_abi", "3.9", "4_cp39"),
        rec("python_abi", "3.12", "4_cp312"),
        rec("numpy", "1.26.4", "py39h1_0", ["python >=3.9,<3.10.0a0", "python_abi 3.9.* *_cp39"], "BSD"),
        rec("numpy", "1.26.4", "py312h1_0", ["python >=3.12,<3.13.0a0", "python_abi 3.12.* *_cp312"], "BSD"),
        rec("zlib-user", "1.0", depends=["zlib >=2"]),
    ],
    "noarch": [
        rec("click", "8.1.7", "pyhd8ed1ab_0", ["python >=3.7", "__unix"], "BSD"),
        rec("flask", "3.0.3", "pyhd8ed1ab_0", ["python >=3.8", "click >=8.1"], "BSD"),
        rec("gpl-tool", "1.0", "pyhd8ed1ab_0", ["python"], "GPL2"),
    ],
}


@pytest.fixture
def base(tmp_path):
    return write_channel(tmp_path / "up", BASE)


def fns(sp, name):
    return sorted(r.fn for r in sp.records if r.name == name)


def test_blacklist_breaks_dependents_grouped_by_the_entry(base, tmp_path):
    plan = make_plan(settings_for(base, tmp_path / "m", blacklist=["readline"]))
    linux, noarch = plan.subdirs["linux-64"], plan.subdirs["noarch"]
    assert linux.broken == {
        "python-3.12.4-h2_0_cpython.tar.bz2": ["readline >=8.2"],
        "python-3.9.19-h1_0_cpython.tar.bz2": ["readline >=8.1"],
        "zlib-user-1.0-0.tar.bz2": ["zlib >=2"],
    }
    groups = {g.cause: g for g in linux.broken_groups()}
    assert groups["blacklist: readline"].files == fns(linux, "python")
    assert groups["blacklist: readline"].specs == ["readline >=8.1", "readline >=8.2"]
    assert groups["blacklist: readline"].summary == (
        "blacklist: readline leaves 2 records with unmet dependencies: readline >=8.1, readline >=8.2"
    )
    # a dependency the channel never had is reported, but as upstream's, not a filter's
    assert groups[UPSTREAM_CAUSE].files == ["zlib-user-1.0-0.tar.bz2"]
    assert linux.funnel.broken == 3
    # numpy still finds python: breakage does not cascade through records that are kept
    assert noarch.broken == {} and noarch.funnel.broken == 0
    i = next(i for i, r in enumerate(linux.records) if r.version == "3.9.19")
    assert linux.unmet(i) == ["readline >=8.1"]


def test_noarch_looks_in_the_platforms_and_virtual_packages_are_met(base, tmp_path):
    plan = make_plan(settings_for(base, tmp_path / "m"))
    assert plan.subdirs["noarch"].broken == {}  # python lives in linux-64; `__unix` is the client's
    plan = make_plan(settings_for(base, tmp_path / "m", blacklist=["python 3.12.*"]))
    noarch = plan.subdirs["noarch"]
    assert noarch.broken == {}  # python 3.9 still meets `python >=3.8`
    numpy_312 = "numpy-1.26.4-py312h1_0.tar.bz2"
    assert plan.subdirs["linux-64"].broken[numpy_312] == ["python >=3.12,<3.13.0a0"]
    plan = make_plan(settings_for(base, tmp_path / "m", blacklist=["python"]))
    groups = plan.subdirs["noarch"].broken_groups()
    assert [(g.cause, g.files) for g in groups] == [
        ("blacklist: python", sorted(r.fn for r in plan.subdirs["noarch"].records))
    ]


def test_every_entry_that_dropped_a_candidate_is_a_cause(base, tmp_path):
    s = settings_for(base, tmp_path / "m", license_blacklist=["GPL"], blacklist=["openssl 3.*"])
    linux = make_plan(s).subdirs["linux-64"]
    causes = {g.cause: g.files for g in linux.broken_groups()}
    assert causes["license_blacklist: GPL"] == fns(linux, "python")
    assert causes["blacklist: openssl 3.*"] == fns(linux, "python")
    # a build-string glob is part of the spec: python_abi 4_cp39 meets `*_cp39` only
    s = settings_for(base, tmp_path / "m", blacklist=["python_abi 3.12"])
    broken = make_plan(s).subdirs["linux-64"].broken
    assert broken == {
        "numpy-1.26.4-py312h1_0.tar.bz2": ["python_abi 3.12.* *_cp312"],
        "zlib-user-1.0-0.tar.bz2": ["zlib >=2"],
    }


def test_closure_brings_back_what_whitelist_entries_need(base, tmp_path):
    s = settings_for(base, tmp_path / "m", blacklist=["readline", "openssl", "ncurses"], whitelist=["numpy"])
    plain = make_plan(s)
    assert {g.cause for g in plain.subdirs["linux-64"].broken_groups()} == {
        "blacklist: readline", "blacklist: openssl", UPSTREAM_CAUSE
    }  # fmt: skip
    plan = make_plan(s.replace(whitelist_closure=True))
    linux = plan.subdirs["linux-64"]
    reasons = {r.fn: d.reason for r, d in zip(linux.records, linux.decisions)}
    assert reasons["readline-8.2-0.tar.bz2"] == "dependency of whitelist: numpy, over blacklist: readline"
    assert reasons["ncurses-6.4-0.tar.bz2"] == "dependency of whitelist: numpy, over blacklist: ncurses"
    assert reasons["openssl-3.2.1-0.tar.bz2"] == "dependency of whitelist: numpy, over blacklist: openssl"
    assert reasons["openssl-1.1.1w-0.tar.bz2"] == "blacklist: openssl"  # no python needs it
    assert (
        reasons["python-3.9.19-h1_0_cpython.tar.bz2"] == "kept: no filter applies"
    )  # not added: kept anyway
    f = linux.funnel
    assert f.added_closure == 4 and f.dropped_blacklist == 5
    assert (
        f.kept == f.upstream - f.dropped_license - f.dropped_blacklist + f.added_whitelist + f.added_closure
    )
    assert linux.broken == {"zlib-user-1.0-0.tar.bz2": ["zlib >=2"]}
    excluded = plan.to_json()["subdirs"]["linux-64"]["excluded"]
    assert excluded == {"openssl-1.1.1w-0.tar.bz2": "blacklist: openssl"}


def test_curated_mirrors_only_the_whitelist_and_its_closure(base, tmp_path):
    plan = make_plan(settings_for(base, tmp_path / "m", whitelist=["flask"], curated=True))
    linux, noarch = plan.subdirs["linux-64"], plan.subdirs["noarch"]
    assert sorted(r.name for r in noarch.included()) == ["click", "flask"]
    # flask's `python >=3.8` reaches every python, and through them readline, openssl 3, ncurses
    assert sorted(r.fn for r in linux.included()) == sorted(
        [*fns(linux, "python"), *fns(linux, "readline"), "openssl-3.2.1-0.tar.bz2", "ncurses-6.4-0.tar.bz2"]
    )
    reasons = {r.fn: d.reason for r in linux.records for d in [linux.decisions[linux.records.index(r)]]}
    assert reasons["numpy-1.26.4-py39h1_0.tar.bz2"] == "curated: not a whitelist entry or a dependency of one"
    assert reasons["python-3.9.19-h1_0_cpython.tar.bz2"] == "dependency of whitelist: flask"
    assert {d.reason for r, d in zip(noarch.records, noarch.decisions) if r.name == "click"} == {
        "dependency of whitelist: flask"
    }
    f = linux.funnel
    assert f.dropped_curated == f.upstream - f.kept and f.added_closure == 0
    assert linux.broken == {} and noarch.broken == {}
    # without whitelist entries a curated mirror is empty, and says why
    empty = make_plan(settings_for(base, tmp_path / "m", curated=True))
    assert all(sp.funnel.kept == 0 for sp in empty.subdirs.values())


def test_newest_versions_follow_conda_order_and_spare_the_whitelist(tmp_path):
    versions = ["1.9", "1.10", "1.11.0rc1", "1.11.0", "0.9"]
    root = write_channel(tmp_path / "up", {
        "linux-64": [rec("tool", v, build) for v in versions for build in ("0", "1")],
        "noarch": [rec("tool", "1.0"), rec("tool", "0.5")],
    })  # fmt: skip
    plan = make_plan(settings_for(root, tmp_path / "m", newest_versions=2, whitelist=["tool 0.9"]))
    linux, noarch = plan.subdirs["linux-64"], plan.subdirs["noarch"]
    kept = sorted({r.version for r in linux.included()})
    assert kept == ["0.9", "1.11.0", "1.11.0rc1"]  # 1.10 > 1.9 and rc1 < 1.11.0; 0.9 whitelisted
    assert len(linux.included()) == 6  # every build of a kept version
    reasons = {r.fn: d.reason for r, d in zip(linux.records, linux.decisions)}
    assert reasons["tool-1.9-0.tar.bz2"] == "newest_versions: 2 (3 newer versions)"
    assert reasons["tool-1.10-1.tar.bz2"] == "newest_versions: 2 (2 newer versions)"
    assert reasons["tool-0.9-0.tar.bz2"] == "whitelist: tool 0.9"
    assert linux.funnel.dropped_newest == 4
    assert sorted(r.version for r in noarch.included()) == ["0.5", "1.0"]  # per subdir


def test_toggles_match_a_fresh_plan(demo_url, tmp_path):
    s = settings_for(demo_url, tmp_path, license_blacklist=["AGPL"])
    s = s.replace(platforms=["linux-64", "osx-arm64"])
    upstream = fetch_upstream(s)
    plan = Plan.build(s, upstream)
    closure = s.replace(whitelist_closure=True)
    steps = [
        (s.replace(blacklist=["readline"]), {"readline"}),
        (s.replace(blacklist=["readline", "openssl"]), {"openssl"}),
        (closure.replace(blacklist=["readline", "openssl"]), None),
        (closure.replace(blacklist=["readline", "openssl"], whitelist=["requests"]), {"requests"}),
        (closure.replace(blacklist=["readline", "openssl"], whitelist=["requests", "flask"]), {"flask"}),
        (closure.replace(blacklist=["openssl"], whitelist=["requests", "flask"]), {"readline"}),
        (closure.replace(blacklist=["openssl"], whitelist=["flask"]), {"requests"}),
        (closure.replace(blacklist=["openssl", "python 3.9.*"], whitelist=["flask"]), {"python"}),
        (closure.replace(blacklist=["openssl"], whitelist=["flask"], curated=True), {"flask"}),
        (closure.replace(blacklist=[], whitelist=["flask", "scipy"], curated=True), {"openssl", "scipy"}),
        (closure.replace(whitelist=["flask"], curated=True, newest_versions=1), None),
        (s, {"flask", "scipy"}),
    ]
    for n, (new, names) in enumerate(steps):
        if n == len(steps) // 2:
            plan.prepare_updates()  # from here on, dependents come from the index, not a pass
        plan.update(new, names)
        fresh = Plan.build(new, upstream)
        for subdir, sp in plan.subdirs.items():
            want = fresh.subdirs[subdir]
            assert [d.reason for d in sp.decisions] == [d.reason for d in want.decisions], (subdir, names)
            assert sp.funnel == want.funnel, (subdir, names)
            assert sp.broken == want.broken, (subdir, names)
            assert [g.summary for g in sp.broken_groups()] == [g.summary for g in want.broken_groups()]


def test_a_toggle_that_changes_only_why_a_record_is_dropped_changes_the_cause(base, tmp_path):
    s = settings_for(base, tmp_path / "m", blacklist=["openssl 3.*", "openssl 3.2.*"])
    upstream = fetch_upstream(s)
    plan = Plan.build(s, upstream)
    linux = plan.subdirs["linux-64"]
    assert "blacklist: openssl 3.*" in {g.cause for g in linux.broken_groups()}
    narrower = s.replace(blacklist=["openssl 3.2.*"])  # openssl 3.2.1 stays dropped, by the other entry
    plan.update(narrower, {"openssl"})
    want = Plan.build(narrower, upstream).subdirs["linux-64"]
    assert [g.summary for g in linux.broken_groups()] == [g.summary for g in want.broken_groups()]
    assert "blacklist: openssl 3.2.* leaves 2 records" in linux.broken_groups()[0].summary


def test_the_streamed_json_is_the_plan_as_one_object(base, tmp_path, monkeypatch):
    import io

    from casconsole.selection import planjson

    monkeypatch.setattr(planjson, "CHUNK", 2)  # several chunks to every list
    s = settings_for(base, tmp_path / "m", blacklist=["readline"])
    for present in (False, True):
        if present:  # one file on disk: what to download is no longer what is included
            folder = tmp_path / "m" / "pkgs" / "linux-64"
            folder.mkdir(parents=True)
            (folder / "ncurses-6.4-0.tar.bz2").write_bytes(b"x" * 1000)
        plan = make_plan(s)
        out = io.BytesIO()
        planjson.write_json(plan, out)
        data = json.loads(out.getvalue())
        assert data == plan.to_json()
        linux = data["subdirs"]["linux-64"]
        assert len(linux["included"]) == 10 and len(linux["broken"]) == 3
        assert ("ncurses-6.4-0.tar.bz2" in linux["download"]) is not present


def run_sync(*args):
    return subprocess.run(
        [sys.executable, "-m", "casconsole.cli.sync", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ),
    )


def test_dry_run_reports_broken_dependencies_in_text_and_json(base, tmp_path):
    common = ["--dry-run", "--remote-url", str(base), "--mirror-dir", str(tmp_path / "m"),
              "--platform", "linux-64", "--blacklist", "readline"]  # fmt: skip
    text = run_sync(*common)
    assert text.returncode == 0, text.stderr
    assert "  unmet dependencies               3  kept records" in text.stdout
    assert (
        "  ! blacklist: readline leaves 2 records with unmet dependencies: readline >=8.1, readline >=8.2"
        in (text.stdout)
    )
    assert "      e.g. python-3.12.4-h2_0_cpython.tar.bz2, python-3.9.19-h1_0_cpython.tar.bz2" in text.stdout
    data = json.loads(run_sync(*common, "--json").stdout)
    linux = data["subdirs"]["linux-64"]
    assert linux["broken"] == {
        "python-3.12.4-h2_0_cpython.tar.bz2": ["readline >=8.2"],
        "python-3.9.19-h1_0_cpython.tar.bz2": ["readline >=8.1"],
        "zlib-user-1.0-0.tar.bz2": ["zlib >=2"],
    }
    assert linux["broken_by"][0] == {
        "cause": "blacklist: readline", "records": 2, "specs": ["readline >=8.1", "readline >=8.2"]
    }  # fmt: skip
    assert data["subdirs"]["noarch"]["broken"] == {}
    assert not (tmp_path / "m").exists()


# ---------------------------------------------------------------- spec semantics, checked against rattler

SPECS = [
    "tool", "tool 1.10", "tool 1.10.*", "tool >=1.9,<1.11.0a0", "tool 1.9|1.11.0", "tool >=1.10 *_cp39",
    "tool * 1", "tool 1.10 0", "tool >= 1.9", "tool=1.10", "tool==1.9", "tool 1.1*", "tool !=1.10",
    "tool[version='>=1.10']", "tool ~=1.10", "tool >1.9,<=1.11.0rc1|0.9", "TOOL 1.9", "tool * ^py.*$",
]  # fmt: skip


def test_dependency_specs_match_what_rattler_matches():
    records = [
        Record("tool", v, b, 0, subdir="linux-64", fn=f"tool-{v}-{b}.tar.bz2")
        for v in ["0.9", "1.9", "1.10", "1.10.1", "1.11.0rc1", "1.11.0"]
        for b in ["0", "1", "py_cp39"]
    ]
    index = SubdirIndex("linux-64", records)
    prec = [PackageRecord(r.name, r.version, BuildString(r.build), 0, "linux-64") for r in records]
    for text in SPECS:
        spec = parse_dep(text)
        ms = MatchSpec(text)
        want = [i for i, p in enumerate(prec) if ms.matches(p)]
        assert sorted(index.matching(spec)) == want, text
    assert parse_dep("__glibc >=2.17").virtual
    assert parse_dep("tool <<1") is None and parse_dep("tool >=1..0") is None


@pytest.mark.realdata
def test_real_dependency_specs_match_what_rattler_matches(realdata):
    checked = 0
    for subdir in ("linux-64", "noarch"):
        upstream = fetch_upstream(
            settings_for(realdata / "conda-subchannel-demo", Path("/nonexistent")), subdirs=[subdir]
        )[subdir]
        index = SubdirIndex(subdir, upstream.records)
        prec = [PackageRecord(r.name, r.version, BuildString(r.build), r.build_number, subdir)
                for r in upstream.records]  # fmt: skip
        texts = sorted({t for r in upstream.records for t in r.depends})
        checked += len(texts)
        for text in texts:
            spec = parse_dep(text)
            assert spec is not None, text
            if spec.virtual:
                continue
            ms = MatchSpec(text)
            want = sorted(i for i in index.indices(spec.name) if ms.matches(prec[i]))
            assert sorted(index.matching(spec)) == want, text
    assert checked > 400


@pytest.mark.realdata
def test_the_faqs_gpl_blacklist_drops_libgcc_ng_and_breaks_much_of_real_conda_forge(realdata, tmp_path):
    # the cas-mirror FAQ's own example, on real conda-forge records: libgcc-ng is GPL (with the
    # GCC exception), and compiled packages need it: a third or more of what is kept breaks
    settings = settings_for(realdata / "conda-subchannel-demo", tmp_path / "m", license_blacklist="GPL")
    for platform in ("linux-64", "linux-aarch64"):
        plan = make_plan(settings.replace(platforms=[platform]))
        sp = plan.subdirs[platform]
        runtime = [d for r, d in zip(sp.records, sp.decisions) if r.name == "libgcc-ng"]
        assert runtime and all(d.cause == "license_blacklist: GPL" for d in runtime)
        gpl = next(g for g in sp.broken_groups() if g.cause == "license_blacklist: GPL")
        assert gpl.records >= 0.3 * sp.funnel.kept, (platform, gpl.records, sp.funnel.kept)
        assert any(spec.startswith("libgcc-ng ") for spec in gpl.specs[:4])
