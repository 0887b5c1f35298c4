"""The plan: funnel counts, what to download / keep / delete, and incremental re-planning."""

from __future__ import annotations

import dataclasses
import shutil

from casconsole.selection.plan import Plan
from casconsole.settings import load_settings
from casconsole.sync.dryrun import make_plan
from casconsole.upstream.repodata import fetch_upstream


def settings_for(url, mirror, **cli):
    layer = {key: (value, f"--{key}") for key, value in cli.items()}
    layer |= {"remote_url": (url, "--remote-url"), "mirror_dir": (str(mirror), "--mirror-dir")}
    return load_settings(cli=layer)


def test_funnel_adds_up_and_reasons_are_given(demo_url, tmp_path):
    s = settings_for(
        demo_url, tmp_path / "m", platforms=["linux-64"], license_blacklist=["GPL"], blacklist=["r-*", "mkl"],
        whitelist=["readline"],
    )  # fmt: skip
    plan = make_plan(s)
    assert list(plan.subdirs) == ["linux-64", "noarch"]
    for sp in plan.subdirs.values():
        f = sp.funnel
        assert f.upstream == len(sp.records) > 0
        assert f.kept == f.upstream - f.dropped_license - f.dropped_blacklist + f.added_whitelist
        assert f.kept == len(sp.included()) == f.download + f.present
        assert f.download_bytes == sum(r.size for r in sp.download())
    linux = plan.subdirs["linux-64"]
    reasons = {r.name: d.reason for r, d in zip(linux.records, linux.decisions)}
    assert reasons["mkl"] == "blacklist: mkl"
    assert reasons["git"] == "license_blacklist: GPL (license_family GPL2)"
    assert reasons["readline"].startswith("whitelist: readline, over license_blacklist: GPL")
    assert reasons["zlib"] == "kept: no filter applies"
    assert linux.funnel.added_whitelist == sum(r.name == "readline" for r in linux.records)
    excluded = linux.excluded()
    assert all(fn not in excluded for fn in (r.fn for r in linux.included()))


def test_nothing_is_written_by_planning(demo_url, tmp_path):
    make_plan(settings_for(demo_url, tmp_path / "mirror"))
    assert not (tmp_path / "mirror").exists()


def test_present_and_delete_follow_the_disk(demo_url, demo_channel, tmp_path):
    s = settings_for(demo_url, tmp_path, platforms=["linux-64"], blacklist=["flask"])
    plan = make_plan(s)
    noarch = plan.subdirs["noarch"]
    keep = next(r for r in noarch.included() if r.name == "requests")
    dropped = next(r for r in noarch.records if r.name == "flask")
    target = tmp_path / "pkgs" / "noarch"
    target.mkdir(parents=True)
    for rec in (keep, dropped):
        shutil.copy(demo_channel / "noarch" / rec.fn, target / rec.fn)
    (target / "stray-1.0-0.conda").write_bytes(b"gone upstream")
    (target / "notes.txt").write_text("not a package: never deleted")
    plan = make_plan(s)
    noarch = plan.subdirs["noarch"]
    assert noarch.funnel.present == 1 and keep.fn not in {r.fn for r in noarch.download()}
    assert noarch.delete() == sorted([dropped.fn, "stray-1.0-0.conda"])
    # a file of the wrong size is not present: it is downloaded again
    (target / keep.fn).write_bytes(b"truncated")
    assert keep.fn in {r.fn for r in make_plan(s).subdirs["noarch"].download()}
    # with prune off nothing is listed for deletion
    assert make_plan(s.replace(prune=False)).subdirs["noarch"].delete() == []


def test_toggle_update_matches_a_full_replan(demo_url, tmp_path):
    s = settings_for(demo_url, tmp_path, platforms=["linux-64", "osx-arm64"], license_blacklist=["GPL"])
    upstream = fetch_upstream(s)
    plan = Plan.build(s, upstream)
    steps = [
        (s.replace(blacklist=["numpy"]), {"numpy"}),
        (s.replace(blacklist=["numpy"], whitelist=["readline"]), {"readline"}),
        (s.replace(blacklist=["numpy"], whitelist=[]), {"readline"}),
        (s.replace(blacklist=[], whitelist=[]), {"numpy"}),
    ]
    for new, names in steps:
        plan.update(new, names)
        fresh = Plan.build(new, upstream)
        for subdir, sp in plan.subdirs.items():
            assert sp.funnel == fresh.subdirs[subdir].funnel, (subdir, names)
            assert [d.reason for d in sp.decisions] == [d.reason for d in fresh.subdirs[subdir].decisions]
            # the kept list and the JSON's sums are kept, not made anew: they follow the toggle
            assert sp.to_json() == fresh.subdirs[subdir].to_json(), (subdir, names)


def test_plan_json_shape(demo_url, tmp_path):
    plan = make_plan(settings_for(demo_url, tmp_path, platforms=["osx-arm64"], blacklist=["flask"]))
    data = plan.to_json()
    assert data["remote_url"] == demo_url and data["channel"] == "pkgs"
    assert set(data["subdirs"]) == {"osx-arm64", "noarch"}
    noarch = data["subdirs"]["noarch"]
    assert {"included", "excluded", "download", "delete", "download_bytes"} <= set(noarch)
    assert all(
        reason == "blacklist: flask" for fn, reason in noarch["excluded"].items() if fn.startswith("flask-")
    )
    assert noarch["download_bytes"] == sum(
        r.size for r in plan.subdirs["noarch"].records if r.fn in set(noarch["download"])
    )
    assert dataclasses.asdict(plan.subdirs["noarch"].funnel) == noarch["funnel"]


def test_entries_matching_no_upstream_record_with_and_without_an_index(demo_channel, tmp_path):
    """The same entries found unmatched by the light path (a sync's plan, no index) and through
    the index (the dry run's and the console's plans, built with the dependency check)."""
    from casconsole.selection.warnings import matching_nothing

    s = settings_for(
        str(demo_channel), tmp_path / "m", platforms=["linux-64"],
        blacklist=["flask", "flsk", "r-*", "q-*", "numpy >=2", "numpy >=9", "python 3.9.*", "zlib 0.*"],
        whitelist=["readline", "distribute", "six 1.16.0", "six 2.*", "r-data.table >=1.15"],
    )  # fmt: skip
    expected = {"blacklist": ["flsk", "q-*", "numpy >=9", "zlib 0.*"], "whitelist": ["distribute", "six 2.*"]}
    upstream = fetch_upstream(s)
    light = Plan.build(s, upstream, check=False)
    assert all(sp._index is None for sp in light.subdirs.values())
    assert light.unmatched == expected
    indexed = Plan.build(s, upstream, check=True)
    assert all(sp._index is not None for sp in indexed.subdirs.values())
    keyed = {key: getattr(s, key) for key in ("blacklist", "whitelist")}
    assert matching_nothing(keyed, [(sp.records, sp.index) for sp in indexed.subdirs.values()]) == expected
    assert indexed.unmatched == expected
    assert indexed.unmatched_warnings()[0] == "blacklist entry 'flsk' matches no upstream record"
