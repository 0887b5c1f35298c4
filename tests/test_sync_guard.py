"""Safe by default against a misbehaving upstream, with `cas-sync` run as a user runs it:

- the prune guard: after a full sync, an upstream serving an empty repodata, and then one
  missing half its records, leaves every mirrored file and the mirrored repodata in place, says
  so and exits 3 (max_prune, default 10%); `--force-prune` or a higher max_prune lets it prune;
- one HTTP 5xx, one reset, one truncation of the upstream's repodata do not fail a run (it is
  retried with backoff, like the package files).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
from upstream_server import Fault, Upstream, make_channel, mirror_problems, spec

from casconsole.conda.repodata import write_repodata

SUBDIRS = ("linux-64", "noarch")


@pytest.fixture
def upstream(tmp_path):
    root = tmp_path / "upstream"
    written = make_channel(
        root,
        {
            "linux-64": [spec(f"lib{i}", "1.0", "linux-64") for i in range(6)],
            "noarch": [spec(f"py{i}", "1.0") for i in range(4)],
        },
    )
    with Upstream(root) as server:
        server.repodata = written  # what make_channel wrote, to serve changed versions of
        yield server


@pytest.fixture
def config(tmp_path, upstream):
    path = tmp_path / "cas.yaml"
    path.write_text(
        f"remote_url: {upstream.url}\nmirror_dir: {tmp_path / 'mirror'}\nplatforms: [linux-64]\nretries: 3\n"
    )
    return path


def cas_sync(config, *args) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "casconsole.cli.sync", "--config", str(config), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in result.stdout + result.stderr
    return result


def serve(upstream, keep: dict[str, int]) -> None:
    """Upstream now lists only the first `keep[subdir]` records of each subdir (the files stay)."""
    for subdir, n in keep.items():
        repodata = copy.deepcopy(upstream.repodata[subdir])
        table = repodata["packages.conda"]
        repodata["packages.conda"] = dict(sorted(table.items())[:n])
        write_repodata(upstream.root / subdir, repodata)


def mirrored_files(mirror) -> list[str]:
    return sorted(f"{p.parent.name}/{p.name}" for p in (mirror / "pkgs").glob("*/*.conda"))


def repodata_bytes(mirror) -> dict[str, bytes]:
    return {
        f"{sd}/{name}": (mirror / "pkgs" / sd / name).read_bytes()
        for sd in SUBDIRS
        for name in ("repodata.json", "repodata.json.zst")
    }


# ---------------------------------------------------------------- the prune guard


def test_an_empty_then_a_half_upstream_leaves_every_mirrored_file_in_place(config, upstream, tmp_path):
    mirror = tmp_path / "mirror"
    assert cas_sync(config).returncode == 0
    files, repodata = mirrored_files(mirror), repodata_bytes(mirror)
    assert len(files) == 10

    serve(upstream, {"linux-64": 0, "noarch": 0})  # an upstream serving empty repodata, once
    result = cas_sync(config)
    assert result.returncode == 3, result.stderr
    assert (
        "warning: linux-64: prune withheld: 6 of its 6 files on disk left the plan, "
        "more than max_prune (10%); nothing is removed and repodata.json stays as it was "
        "(cas-sync --force-prune removes them)"
    ) in result.stdout
    assert "warning: noarch: prune withheld: 4 of its 4 files on disk left the plan" in result.stdout
    assert (
        "linux-64: done, 6 packages in repodata.json (kept as it was: prune withheld for 6 files)"
        in result.stdout
    )
    assert (
        "cas-sync: prune withheld in linux-64: more than max_prune of its files left the plan"
        in result.stderr
    )
    assert mirrored_files(mirror) == files and repodata_bytes(mirror) == repodata
    assert mirror_problems(mirror / "pkgs", upstream.root, SUBDIRS) == []

    serve(upstream, {"linux-64": 3, "noarch": 2})  # and then one missing half its records
    result = cas_sync(config)
    assert result.returncode == 3, result.stderr
    assert "warning: linux-64: prune withheld: 3 of its 6 files on disk left the plan" in result.stdout
    assert mirrored_files(mirror) == files and repodata_bytes(mirror) == repodata

    log = [json.loads(line) for line in (mirror / ".cas" / "sync.jsonl").read_text().splitlines()]
    done = [e for e in log if e["event"] == "subdir_done"][-2:]
    assert sorted((e["subdir"], e["withheld"], e["removed"], e["repodata_written"]) for e in done) == [
        ("linux-64", 3, 0, False),
        ("noarch", 2, 0, False),
    ]
    assert log[-1]["stats"]["withheld"] == ["linux-64", "noarch"] and log[-1]["state"] == "done"
    status = cas_sync(config, "--status")
    assert "  withheld  linux-64: prune guard kept 3 files that left the plan" in status.stdout
    assert status.returncode == 3  # a monitor sees the held-back prune, as the sync's own exit said

    # the administrator has looked: upstream really dropped them
    result = cas_sync(config, "--force-prune")
    assert result.returncode == 0, result.stderr
    assert (
        "warning: linux-64: 3 of its 6 files on disk left the plan; removed anyway (--force-prune)"
        in result.stdout
    )
    assert len(mirrored_files(mirror)) == 5
    assert mirror_problems(mirror / "pkgs", upstream.root, SUBDIRS) == []
    listed = json.loads((mirror / "pkgs" / "linux-64" / "repodata.json").read_text())["packages.conda"]
    assert sorted(listed) == [f"lib{i}-1.0-0.conda" for i in range(3)]


def test_max_prune_sets_how_much_may_go(config, upstream, tmp_path):
    mirror = tmp_path / "mirror"
    assert cas_sync(config).returncode == 0
    serve(upstream, {"linux-64": 3, "noarch": 2})
    assert cas_sync(config, "--max-prune", "49%").returncode == 3
    result = cas_sync(config, "--max-prune", "50%")
    assert result.returncode == 0, result.stderr
    assert (
        len(mirrored_files(mirror)) == 5
        and "removed: linux-64/lib5-1.0-0.conda (left the plan)" in result.stdout
    )


def test_a_held_back_subdir_still_fetches_what_is_new(config, upstream, tmp_path):
    mirror = tmp_path / "mirror"
    assert cas_sync(config).returncode == 0
    repodata = repodata_bytes(mirror)
    new = make_channel(upstream.root / "next", {"linux-64": [spec("newlib", "2.0", "linux-64")]})["linux-64"]
    (upstream.root / "next" / "linux-64" / "newlib-2.0-0.conda").rename(
        upstream.root / "linux-64" / "newlib-2.0-0.conda"
    )
    changed = copy.deepcopy(upstream.repodata["linux-64"])
    changed["packages.conda"] = {
        **dict(sorted(changed["packages.conda"].items())[:2]),
        **new["packages.conda"],
    }
    write_repodata(upstream.root / "linux-64", changed)
    result = cas_sync(config)
    assert result.returncode == 3, result.stderr
    assert (mirror / "pkgs" / "linux-64" / "newlib-2.0-0.conda").is_file()  # fetched for later
    assert repodata_bytes(mirror) == repodata  # served as before: every file it names is there
    assert mirror_problems(mirror / "pkgs", upstream.root, SUBDIRS) == []
    write_repodata(upstream.root / "linux-64", {**upstream.repodata["linux-64"], "packages.conda": {
        **upstream.repodata["linux-64"]["packages.conda"], **new["packages.conda"]}})  # fmt: skip
    result = cas_sync(config)
    assert result.returncode == 0, result.stderr
    assert "0 to download" in result.stdout  # it was fetched already
    listed = json.loads((mirror / "pkgs" / "linux-64" / "repodata.json").read_text())["packages.conda"]
    assert "newlib-2.0-0.conda" in listed and len(listed) == 7


def test_the_dry_run_says_a_sync_would_hold_back(config, upstream, tmp_path):
    assert cas_sync(config).returncode == 0
    serve(upstream, {"linux-64": 0, "noarch": 4})
    result = cas_sync(config, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert (
        "  to delete                        6  more than max_prune (10%): a sync keeps them" in result.stdout
    )
    data = json.loads(cas_sync(config, "--dry-run", "--json").stdout)
    assert data["subdirs"]["linux-64"]["prune_withheld"] is True
    assert data["subdirs"]["noarch"]["prune_withheld"] is False
    assert data["warnings"] == [
        "linux-64: 6 of its 6 files on disk left the plan, more than max_prune (10%): a sync keeps them and "
        "the subdir's repodata.json as they are (cas-sync --force-prune deletes them)"
    ]


# ---------------------------------------------------------------- upstream's repodata, retried


@pytest.mark.parametrize(
    "fault", [Fault.status(503), Fault.reset(), Fault.truncate(60)], ids=["5xx", "reset", "truncated"]
)
def test_one_failed_repodata_fetch_does_not_fail_the_run(config, upstream, tmp_path, fault):
    for subdir in SUBDIRS:
        upstream.inject(f"{subdir}/repodata.json.zst", fault)
    result = cas_sync(config)
    assert result.returncode == 0, result.stderr
    for subdir in SUBDIRS:
        assert f"warning: {subdir}: repodata: {upstream.url}/{subdir}/repodata.json.zst: " in result.stdout
        assert len(upstream.seen(f"{subdir}/repodata.json.zst")) == 2  # the failure, then the retry
    assert len(mirrored_files(tmp_path / "mirror")) == 10
    assert mirror_problems(tmp_path / "mirror" / "pkgs", upstream.root, SUBDIRS) == []
    # the dry run reads upstream through the same fetcher
    upstream.inject("linux-64/repodata.json.zst", fault)
    assert cas_sync(config, "--dry-run", "--mirror-dir", tmp_path / "elsewhere").returncode == 0


def test_each_fault_once_in_a_row_is_still_retried(config, upstream, tmp_path):
    upstream.inject("linux-64/repodata.json.zst", Fault.status(502), Fault.reset(), Fault.truncate(60))
    result = cas_sync(config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("warning: linux-64: repodata:") == 3
    assert mirror_problems(tmp_path / "mirror" / "pkgs", upstream.root, SUBDIRS) == []
