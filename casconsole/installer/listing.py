"""The installers built: the `.sh` files of a folder that carry cas-installer's header.

The console builds into `<mirror_dir>/installers/`, which cas-server serves like any folder of
the mirror (`http://mirror:8080/installers/NAME-VERSION-PLATFORM.sh`): users download them from
there. An installer holds its packages: when they come from private channels, add `installers`
to `private_channels` so that the folder is served only under `/t/<token>/`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from casconsole.installer.script import read_header

INSTALLERS_DIR = "installers"


def installers_dir(mirror_dir: Path | str) -> Path:
    return Path(mirror_dir) / INSTALLERS_DIR


@dataclass(frozen=True)
class BuiltInstaller:
    """One installer file and what its header says."""

    path: Path
    name: str
    version: str
    platform: str
    packages: int
    size: int
    mtime: float
    specs: list[str] = field(default_factory=list)


def list_installers(folder: Path) -> list[BuiltInstaller]:
    """The installers in `folder`, newest first; other files are left out."""
    try:
        with os.scandir(folder) as entries:
            paths = [Path(e.path) for e in entries if e.name.endswith(".sh") and e.is_file()]
    except OSError:
        return []
    found = []
    for path in paths:
        meta = read_header(path)
        if meta is None:
            continue
        try:
            st = path.stat()
        except OSError:
            continue
        packages = meta.get("packages")
        specs = meta.get("specs")
        found.append(
            BuiltInstaller(
                path=path,
                name=str(meta.get("name", "?")),
                version=str(meta.get("version", "?")),
                platform=str(meta.get("platform", "?")),
                packages=packages if isinstance(packages, int) else 0,
                size=st.st_size,
                mtime=st.st_mtime,
                specs=[str(s) for s in specs] if isinstance(specs, list) else [],
            )
        )
    return sorted(found, key=lambda b: (-b.mtime, b.path.name))
