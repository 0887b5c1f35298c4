"""The PyPI plan: every file of the projects asked for (and, with `pypi.closure`, of their
dependencies), each with its decision, compared with the files on disk.

`PypiPlan.build(settings, client)` fetches the pages of the projects the settings name, decides
every file (`select.py`), and, with the closure on, reads the metadata of each kept version
(PEP 658 from the index, or the wheel already mirrored) and adds the projects its requirements
name, until nothing new comes in. A version whose metadata is not known yet (a wheel the index
offers no PEP 658 file for, not downloaded yet) is listed in `unresolved`; the sync downloads it
and calls `resolve()` again, reading the wheel. A project the index does not know is a warning,
never an error.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.utils import NormalizedName
from packaging.version import Version

from casconsole.layout import PYPI_DIR, PYPI_FILES, PYPI_METADATA_SUFFIX
from casconsole.pypi.client import IndexClient
from casconsole.pypi.closure import MetadataError, environments, needed, requirements_of, wheel_metadata
from casconsole.pypi.select import FileDecision, Selector, newest_versions
from casconsole.pypi.simple import DistFile, ProjectPage
from casconsole.pypi.wanted import Wanted, wanted_projects
from casconsole.redact import redact_url
from casconsole.settings import Settings


def files_dir(mirror_dir: Path) -> Path:
    return Path(mirror_dir) / PYPI_DIR / PYPI_FILES


def scan_files(mirror_dir: Path) -> dict[str, os.stat_result]:
    """The distribution files mirrored: `<project>/<file>` -> stat (regular files, no dot-names,
    no `.metadata`)."""
    found: dict[str, os.stat_result] = {}
    root = files_dir(mirror_dir)
    try:
        projects = [e for e in os.scandir(root) if e.is_dir(follow_symlinks=False) and e.name[0] != "."]
    except FileNotFoundError:
        return found
    for project in projects:
        with os.scandir(project.path) as entries:
            for entry in entries:
                name = entry.name
                if name[0] == "." or name.endswith(PYPI_METADATA_SUFFIX):
                    continue
                if entry.is_file(follow_symlinks=False):
                    found[f"{project.name}/{name}"] = entry.stat(follow_symlinks=False)
    return found


@dataclass
class Funnel:
    """The counts of the PyPI plan, in the order the steps apply."""

    upstream: int = 0
    dropped_specifier: int = 0
    dropped_prerelease: int = 0
    dropped_yanked: int = 0
    dropped_sdists: int = 0
    dropped_python: int = 0
    dropped_platform: int = 0
    dropped_newest: int = 0
    added_closure: int = 0
    kept: int = 0
    download: int = 0
    download_bytes: int = 0
    present: int = 0
    delete: int = 0


@dataclass
class Row:
    """One file of a project page and its decision."""

    dist: DistFile
    decision: FileDecision

    @property
    def key(self) -> str:
        return f"{self.dist.project}/{self.dist.filename}"


@dataclass
class Project:
    name: NormalizedName
    wanted: list[Wanted]
    page: ProjectPage | None = None
    rows: list[Row] = field(default_factory=list)
    expanded: set[Version] = field(default_factory=set)  # versions whose requirements were read


class PypiPlan:
    """See the module docstring. `rows` lists every file of every project, in project order."""

    def __init__(self, settings: Settings, local: dict[str, int] | None = None):
        self.settings = settings
        self.pypi = settings.pypi
        self.selector = Selector(self.pypi)
        self.envs = environments(self.pypi.python_versions, self.pypi.platforms)
        self.projects: dict[NormalizedName, Project] = {}
        self.unknown: list[str] = []  # projects the index does not have
        self.page_warnings: list[str] = []
        self.metadata_warnings: dict[str, str] = {}  # "<project> <version>" -> why its deps are not known
        self.unresolved: list[DistFile] = []  # wheels to read once downloaded
        self.local = (
            local
            if local is not None
            else {k: st.st_size for k, st in scan_files(settings.mirror_dir).items()}
        )
        self.funnel = Funnel()

    @classmethod
    def build(cls, settings: Settings, client: IndexClient) -> PypiPlan:
        plan = cls(settings)
        for wanted in wanted_projects(settings.pypi):
            plan._want(wanted)
        plan.resolve(client)
        plan.learn_sizes(client)
        return plan

    def learn_sizes(self, client: IndexClient) -> None:
        """Ask the index (HEAD) the size of each kept file to download that its page did not
        give (a PEP 503 page never does): the plan's bytes and the download's check need it."""
        rows = [r for r in self.kept() if r.dist.size is None and not self.is_present(r)]
        sizes = client.sizes(r.dist for r in rows)
        for row in rows:
            row.dist = dataclasses.replace(row.dist, size=sizes[row.dist])
        if rows:
            self._tally()

    def _want(self, wanted: Wanted) -> bool:
        """Add a requirement; whether it is new for its project."""
        project = self.projects.get(wanted.name)
        if project is None:
            self.projects[wanted.name] = Project(wanted.name, [wanted])
            return True
        if any(w.specifier == wanted.specifier and w.extras == wanted.extras for w in project.wanted):
            return False
        project.wanted.append(wanted)
        return True

    # ---------------------------------------------------------------- deciding

    def resolve(self, client: IndexClient, on_disk: Callable[[DistFile], Path | None] | None = None) -> bool:
        """Fetch the pages not fetched yet, decide, follow the closure until nothing changes;
        whether anything was added. `on_disk(dist)` gives a downloaded wheel's path."""
        pending = set(self.projects)
        grew = False
        while pending:
            fresh = [n for n in pending if self.projects[n].page is None and n not in self.unknown]
            for name, page in client.pages(fresh).items():
                if page is None:
                    self.unknown.append(name)
                else:
                    self.projects[name].page = page
                    self.page_warnings += [f"{name}: left out {why}" for why in page.refused]
            for name in pending:
                self._decide(self.projects[name])
            grew = grew or bool(pending)
            pending = self._follow(client, on_disk) if self.pypi.closure else set()
        self._tally()
        return grew

    def _decide(self, project: Project) -> None:
        if project.page is None:
            project.rows = []
            return
        rows = [Row(d, self.selector.decide(d, project.wanted)) for d in project.page.files]
        kept_versions = {r.dist.version for r in rows if r.decision.kept}
        newest = newest_versions(kept_versions, self.pypi.newest)
        for row in rows:
            if row.decision.kept and row.dist.version not in newest:
                row.decision = FileDecision(False, "newest", f"older than the newest {self.pypi.newest}")
        project.rows = rows

    def _follow(self, client: IndexClient, on_disk: Callable[[DistFile], Path | None] | None) -> set[str]:
        """Read the requirements of the kept versions not read yet; the projects they changed."""
        todo: dict[tuple[NormalizedName, Version], list[DistFile]] = {}
        for project in self.projects.values():
            for row in project.rows:
                if row.decision.kept and row.dist.version not in project.expanded:
                    todo.setdefault((project.name, row.dist.version), []).append(row.dist)
        offered = {key: _pick(dists) for key, dists in todo.items()}
        fetched = client.metadata_of(d for d in offered.values() if d is not None and d.has_metadata)
        changed: set[str] = set()
        self.unresolved = []
        for (name, version), dist in offered.items():
            label = f"{name} {version}"
            data = fetched.get(dist) if dist is not None else None
            if data is None and dist is not None and on_disk is not None:
                path = on_disk(dist)
                if path is not None:
                    try:
                        data = wheel_metadata(path, name, str(version))
                    except MetadataError as exc:
                        self.metadata_warnings[label] = str(exc)
            if data is None:
                if dist is None:
                    self.metadata_warnings[label] = "only an sdist: its dependencies are not followed"
                    self.projects[name].expanded.add(version)
                else:
                    self.metadata_warnings[label] = "no PEP 658 metadata: read from the wheel once downloaded"
                    self.unresolved.append(dist)
                continue
            self.metadata_warnings.pop(label, None)
            self.projects[name].expanded.add(version)
            changed |= self._require(self.projects[name], version, data)
        return changed

    def _require(self, project: Project, version: Version, data: bytes) -> set[str]:
        try:
            reqs, bad = requirements_of(data)
        except MetadataError as exc:
            self.metadata_warnings[f"{project.name} {version}"] = str(exc)
            return set()
        if bad:
            self.metadata_warnings[f"{project.name} {version}"] = f"unreadable Requires-Dist: {bad[0]!r}"
        extras = frozenset().union(*(w.extras for w in project.wanted))
        changed = set()
        for req in reqs:
            if not needed(req, extras, self.envs):
                continue
            req.marker = None
            wanted = Wanted.of(req, f"closure: {project.name} {version} requires {req}")
            if self._want(wanted):
                changed.add(wanted.name)
        return changed

    # ---------------------------------------------------------------- the counts

    def _tally(self) -> None:
        f = Funnel()
        kept: set[str] = set()
        for row in self.rows:
            f.upstream += 1
            step = row.decision.step
            if row.decision.kept:
                kept.add(row.key)
                f.kept += 1
                f.added_closure += step == "closure"
                if self.is_present(row):
                    f.present += 1
                else:
                    f.download += 1
                    f.download_bytes += row.dist.size or 0
            else:
                attr = f"dropped_{step}"
                setattr(f, attr, getattr(f, attr) + 1)
        f.delete = sum(1 for key in self.local if key not in kept)
        self.funnel = f

    def rescan(self) -> None:
        """Look at the disk again (after a sync): what is present, to download, to delete."""
        self.local = {k: st.st_size for k, st in scan_files(self.settings.mirror_dir).items()}
        self._tally()

    def is_present(self, row: Row) -> bool:
        size = self.local.get(row.key)
        return size is not None and (row.dist.size is None or size == row.dist.size)

    @property
    def rows(self) -> list[Row]:
        return [row for name in sorted(self.projects) for row in self.projects[name].rows]

    def kept(self) -> list[Row]:
        return [row for row in self.rows if row.decision.kept]

    def delete(self) -> list[str]:
        kept = {row.key for row in self.kept()}
        return sorted(key for key in self.local if key not in kept)

    def warnings(self) -> list[str]:
        out = [f"unknown project {name!r}: the index has no page for it" for name in self.unknown]
        out += self.page_warnings
        out += [f"{label}: {why}" for label, why in sorted(self.metadata_warnings.items())]
        return out

    def to_json(self) -> dict[str, Any]:
        projects = {}
        for name in sorted(self.projects):
            project = self.projects[name]
            rows = project.rows
            projects[name] = {
                "requested": [f"{w} ({w.source})" for w in project.wanted],
                "included": [r.dist.filename for r in rows if r.decision.kept],
                "excluded": {
                    r.dist.filename: f"{r.decision.step}: {r.decision.reason}"
                    for r in rows
                    if not r.decision.kept
                },
                "download": [r.dist.filename for r in rows if r.decision.kept and not self.is_present(r)],
            }
        return {
            "index_url": redact_url(self.pypi.index_url or ""),
            "mirror": str(files_dir(self.settings.mirror_dir).parent),
            "funnel": dataclasses.asdict(self.funnel),
            "warnings": self.warnings(),
            "unknown": list(self.unknown),
            "projects": projects,
            "delete": self.delete(),
        }


def _pick(dists: list[DistFile]) -> DistFile | None:
    """The file of a version to read requirements from: a wheel, one with PEP 658 metadata and a
    pure one first; None when the version has only sdists."""
    wheels = [d for d in dists if d.kind == "wheel"]
    if not wheels:
        return None
    return min(
        wheels, key=lambda d: (not d.has_metadata, not any(t.platform == "any" for t in d.tags), d.filename)
    )
