"""The mirror's own project pages, made from the files present and verified.

For each project, `<mirror_dir>/pypi/simple/<project>/index.html` (PEP 503, with PEP 592's
`data-yanked`, `data-requires-python` and PEP 658/714's `data-core-metadata`) and `index.json`
(PEP 691, API version 1.1: sizes and versions too) list exactly the files of
`<mirror_dir>/pypi/files/<project>/` that the sync verified, with their sha256. Links are
relative (`../../files/<project>/<file>`), so the pages work under any host and under
`/t/<token>/`. A page is written atomically (JSON first), and only when its bytes change; cas-server
chooses between the two by the client's Accept header.
"""

from __future__ import annotations

import html
import json
import shutil
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from casconsole.fsutil import atomic_write_bytes
from casconsole.layout import PYPI_DIR, PYPI_FILES, PYPI_PAGE_HTML, PYPI_PAGE_JSON, PYPI_SIMPLE
from casconsole.pypi.simple import DistFile

API_VERSION = "1.1"


@dataclass(frozen=True)
class Published:
    """A file as the mirror serves it: the upstream's facts and the verified digests."""

    dist: DistFile
    sha256: str
    size: int
    metadata_sha256: str | None  # the `.metadata` file beside it (PEP 658), if there is one


def simple_dir(mirror_dir: Path) -> Path:
    return Path(mirror_dir) / PYPI_DIR / PYPI_SIMPLE


def _href(project: str, filename: str) -> str:
    return f"../../{PYPI_FILES}/{urllib.parse.quote(project)}/{urllib.parse.quote(filename)}"


def html_page(project: str, files: list[Published]) -> bytes:
    out = [
        "<!DOCTYPE html>\n<html>\n<head>\n"
        f'<meta name="pypi:repository-version" content="{API_VERSION}">\n'
        f"<title>Links for {html.escape(project)}</title>\n</head>\n<body>\n"
        f"<h1>Links for {html.escape(project)}</h1>\n"
    ]
    for f in files:
        attrs = [f'href="{html.escape(_href(project, f.dist.filename))}#sha256={f.sha256}"']
        if f.dist.requires_python:
            attrs.append(f'data-requires-python="{html.escape(f.dist.requires_python)}"')
        if f.dist.yanked is not None:
            attrs.append(f'data-yanked="{html.escape(f.dist.yanked)}"')
        if f.metadata_sha256:
            value = f"sha256={f.metadata_sha256}"
            attrs.append(f'data-core-metadata="{value}" data-dist-info-metadata="{value}"')
        out.append(f"<a {' '.join(attrs)}>{html.escape(f.dist.filename)}</a><br>\n")
    out.append("</body>\n</html>\n")
    return "".join(out).encode("utf-8")


def json_page(project: str, files: list[Published]) -> bytes:
    entries = []
    for f in files:
        metadata: bool | dict[str, str] = {"sha256": f.metadata_sha256} if f.metadata_sha256 else False
        entry = {
            "filename": f.dist.filename,
            "url": _href(project, f.dist.filename),
            "hashes": {"sha256": f.sha256},
            "requires-python": f.dist.requires_python,
            "yanked": f.dist.yanked if f.dist.yanked else f.dist.yanked is not None,
            "core-metadata": metadata,
            "dist-info-metadata": metadata,
            "size": f.size,
        }
        if f.dist.upload_time:
            entry["upload-time"] = f.dist.upload_time
        entries.append(entry)
    versions = sorted({f.dist.version for f in files})
    doc = {
        "meta": {"api-version": API_VERSION},
        "name": project,
        "versions": [str(v) for v in versions],
        "files": entries,
    }
    return json.dumps(doc, indent=1).encode("utf-8") + b"\n"


def write_project(mirror_dir: Path, project: str, files: list[Published]) -> bool:
    """Write the project's two pages (or remove its folder when no file is left); whether
    anything changed on disk."""
    folder = simple_dir(mirror_dir) / project
    if not files:
        if folder.exists():
            shutil.rmtree(folder)
            return True
        return False
    files = sorted(files, key=lambda f: (f.dist.version, f.dist.filename))
    changed = False
    for name, data in (
        (PYPI_PAGE_JSON, json_page(project, files)),
        (PYPI_PAGE_HTML, html_page(project, files)),
    ):
        path = folder / name
        try:
            same = path.read_bytes() == data
        except OSError:
            same = False
        if not same:  # not fsynced one by one, as package files are not: a page cut short by a
            atomic_write_bytes(path, data, durable=False)  # power loss differs, so the next sync rewrites it
            changed = True
    return changed


def published_projects(mirror_dir: Path) -> list[str]:
    """The projects that have pages, sorted."""
    try:
        return sorted(p.name for p in simple_dir(mirror_dir).iterdir() if (p / PYPI_PAGE_HTML).is_file())
    except OSError:
        return []
