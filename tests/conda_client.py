"""The real conda client of the end-to-end tests (py-rattler), and what an install must show."""

from __future__ import annotations

import asyncio
from pathlib import Path

import rattler
from conda_package_streaming.package_streaming import stream_conda_component


def solve_and_install(channel_url: str, specs: list[str], prefix: Path, cache: Path):
    """Solve `specs` against the channel over http and install them into `prefix`."""

    async def run():
        records = await rattler.solve(
            [rattler.Channel(channel_url)],
            specs,
            gateway=rattler.Gateway(cache_dir=cache / "repodata"),
            platforms=["linux-64", "noarch"],
        )
        await rattler.install(
            records,
            prefix,
            cache_dir=cache / "pkgs",
            show_progress=False,
            platform=rattler.Subdir("linux-64"),
        )
        return records

    return asyncio.run(run())


def installed_as_archived(prefix: Path, archive: Path) -> int:
    """Every payload file of the archive is in the prefix with the same bytes; returns the count."""
    count = 0
    with archive.open("rb") as fh:
        for tar, member in stream_conda_component(archive.name, fh):
            if member.isfile() and not member.name.startswith("info/"):
                assert (prefix / member.name).read_bytes() == tar.extractfile(member).read(), member.name
                count += 1
    return count
