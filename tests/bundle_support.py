"""Helpers of the air-gap tests: two sites (connected, offline), the commands as a user runs
them, and what a mirror holds, file for file.

`Sites` builds the connected side (an upstream on 127.0.0.1 mirrored by `cas-sync`, an internal
channel indexed by `cas-index`) and the offline side as a site's first copy: a whole-mirror
bundle imported into an empty folder. `change_upstream()` then makes the changes of an update
(new, changed and removed packages, a new internal package) and syncs the connected side again.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import zstandard
from test_server_support import server_env
from upstream_server import Upstream, make_channel, spec

from casconsole.conda.archive import PackageSpec, build_package

INTERNAL = "internal-pkgs"
TIMESTAMP = 1_700_000_000_000


def cas(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """`cas-sync ARGS` in a subprocess, as a user runs it (no settings files of the developer)."""
    return subprocess.run(
        [sys.executable, "-m", "casconsole.cli.sync", *args],
        capture_output=True,
        text=True,
        env=env or server_env(),
        timeout=timeout,
    )


def cas_ok(*args: str, **kw) -> subprocess.CompletedProcess:
    done = cas(*args, **kw)
    assert done.returncode == 0, f"cas-sync {' '.join(args)}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def index(channel: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "casconsole.cli.index", str(channel)],
        capture_output=True, text=True, env=server_env(), timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def tree(mirror: Path) -> dict[str, tuple[int, str]]:
    """Every file a client can be served (no dot-names anywhere), path -> (size, sha256)."""
    out = {}
    for folder, dirs, files in os.walk(mirror):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            path = Path(folder) / name
            out[path.relative_to(mirror).as_posix()] = (path.stat().st_size, sha256_of(path))
    return out


def snapshot(mirror: Path) -> dict[str, tuple[int, str, int]]:
    """`tree` with each file's mtime: what "nothing changed" compares."""
    return {p: (*v, (mirror / p).stat().st_mtime_ns) for p, v in tree(mirror).items()}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_json(path: Path) -> dict:
    data = path.read_bytes()
    if path.name.endswith(".zst"):
        data = zstandard.ZstdDecompressor().stream_reader(data).read()
    return json.loads(data)


def served_problems(mirror: Path, changing: frozenset[str] = frozenset()) -> list[str]:
    """What a client could trip on: a repodata (or its .zst) naming a file that is missing, or
    whose bytes do not match the record (but for `changing` paths: a file replaced under the same
    name is, until the new repodata is in place, the new bytes under the old record)."""
    problems = []
    for repodata in sorted(mirror.glob("*/*/repodata.json*")):
        if repodata.name not in ("repodata.json", "repodata.json.zst"):
            continue
        data = read_json(repodata)
        for table in ("packages", "packages.conda"):
            for fn, record in data.get(table, {}).items():
                path = repodata.parent / fn
                if not path.is_file():
                    problems.append(f"{repodata.relative_to(mirror)} names {fn}, which is missing")
                elif (
                    sha256_of(path) != record["sha256"]
                    and path.relative_to(mirror).as_posix() not in changing
                ):
                    problems.append(f"{repodata.relative_to(mirror)} names {fn}, whose bytes differ")
    return problems


def upstream_specs(version: int) -> dict[str, list]:
    """The upstream channel before (1) and after (2) an update."""
    linux = [spec(f"lib{i}", "1.0", "linux-64", kb=24) for i in range(10)]
    linux.append(spec("app", "1.0", "linux-64", kb=8, depends=["lib0"]))
    noarch = [spec(f"py{i}", "1.0", kb=8) for i in range(6)]
    if version == 2:
        linux = [s for s in linux if s.name != "lib2"]  # removed upstream
        linux = [
            spec("lib1", "1.0", "linux-64", kb=24, files={"share/lib1/CHANGED": b"rebuilt\n"})
            if s.name == "lib1"
            else s
            for s in linux
        ]  # the same file name, other bytes
        linux.append(spec("newtool", "2.0", "linux-64", kb=1200, depends=["lib0", "py0"]))  # > a volume
        noarch.append(spec("py9", "1.0", kb=8))
    return {"linux-64": linux, "noarch": noarch}


def internal_specs(version: int) -> list[PackageSpec]:
    specs = [
        PackageSpec(
            "teamlib", "1.0", subdir="noarch", timestamp=TIMESTAMP, files={"share/teamlib/v": b"1.0\n"}
        ),
    ]
    if version == 2:
        specs.append(
            PackageSpec(
                "teamapp", "1.1", subdir="noarch", depends=["teamlib"], timestamp=TIMESTAMP + 1,
                files={"share/teamapp/README": b"teamapp 1.1\n"},
            )
        )  # fmt: skip
    return specs


@dataclass
class Sites:
    """The connected side (with its upstream) and the offline side, under `root`."""

    root: Path
    upstream: Upstream
    connected: Path = field(init=False)
    offline: Path = field(init=False)
    config: Path = field(init=False)

    def __post_init__(self) -> None:
        self.connected = self.root / "connected"
        self.offline = self.root / "offline"
        self.config = self.root / "connected.yaml"
        self.config.write_text(
            f"remote_url: {self.upstream.url}\nmirror_dir: {self.connected}\nplatforms: [linux-64]\n"
        )

    def sync(self) -> None:
        cas_ok("--config", str(self.config), "--no-progress")

    def build_internal(self, version: int) -> None:
        channel = self.connected / INTERNAL
        for s in internal_specs(version):
            build_package(channel / s.subdir, s, ".conda")
        (channel / "linux-64").mkdir(exist_ok=True)  # clients of linux-64 ask for its repodata too
        index(channel)

    def first_copy(self, stick: Path) -> None:
        """The offline side's first copy: the whole mirror on a stick, imported into nothing."""
        cas_ok("--mirror-dir", str(self.connected), "--export", str(stick), "--volume-size", "1M")
        cas_ok("--mirror-dir", str(self.offline), "--import", str(stick))

    def change_upstream(self) -> None:
        make_channel(self.upstream.root, upstream_specs(2))
        self.sync()
        self.build_internal(2)


def make_sites(root: Path, upstream: Upstream) -> Sites:
    sites = Sites(root, upstream)
    sites.sync()
    sites.build_internal(1)
    sites.first_copy(root / "first-stick")
    assert tree(sites.offline) == tree(sites.connected)
    return sites
