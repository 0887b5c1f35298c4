"""The PyPI selection: which files of a project the mirror keeps, each decision with its reason.

The steps, in order; the first that drops a file names the reason:
1. `specifier`: the version matches none of the specifiers asked for the project;
2. `prerelease`: a pre-release, unless `pypi.prereleases` or a specifier names one;
3. `yanked`: a yanked file (PEP 592), unless `pypi.yanked`;
4. `sdists`: a source distribution, when `pypi.sdists` is false;
5. `python`: Requires-Python admits none of `pypi.python_versions`, or no wheel tag runs on
   any of them (CPython: `cp311`, `abi3` from its version on, `py3`, `py311`, ...);
6. `platform`: a wheel built for none of `pypi.platforms` (a manylinux / musllinux tag covers the
   older glibc / musl ones, a macOS tag the older macOS ones, as pip reads them);
7. `newest`: kept versions beyond the newest `pypi.newest` of the project.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from packaging import tags as tagging
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from casconsole.pypi.simple import DistFile
from casconsole.pypi.wanted import Wanted
from casconsole.settings import PypiSettings

# manylinux's legacy names and the glibc they stand for (PEP 600)
_LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


@dataclass(frozen=True)
class FileDecision:
    kept: bool
    step: str  # "kept", "closure", or the step that dropped it
    reason: str


def platform_tags(wanted: Iterable[str]) -> frozenset[str]:
    """The wheel platform tags a target of each of `wanted` can install."""
    out: set[str] = set()
    for tag in wanted:
        out.add(tag)
        glibc = _glibc_of(tag)
        if glibc is not None:
            (major, minor), arch = glibc
            out.update(f"manylinux_{major}_{m}_{arch}" for m in range(minor + 1))
            out.update(f"{name}_{arch}" for name, v in _LEGACY_MANYLINUX.items() if v <= (major, minor))
            out.add(f"linux_{arch}")
        elif tag.startswith("musllinux_"):
            _, major, minor, arch = tag.split("_", 3)
            if major.isdigit() and minor.isdigit():
                out.update(f"musllinux_{major}_{m}_{arch}" for m in range(int(minor) + 1))
                out.add(f"linux_{arch}")
        elif tag.startswith("macosx_"):
            _, major, minor, arch = tag.split("_", 3) if tag.count("_") >= 3 else (tag, "", "", "")
            if major.isdigit() and minor.isdigit():
                out.update(tagging.mac_platforms((int(major), int(minor)), arch))
    return frozenset(out)


def _glibc_of(tag: str) -> tuple[tuple[int, int], str] | None:
    for legacy, version in _LEGACY_MANYLINUX.items():
        if tag.startswith(legacy + "_"):
            return version, tag[len(legacy) + 1 :]
    if tag.startswith("manylinux_"):
        parts = tag.split("_", 3)
        if len(parts) == 4 and parts[1].isdigit() and parts[2].isdigit():
            return (int(parts[1]), int(parts[2])), parts[3]
    return None


def python_tags(version: str) -> frozenset[tuple[str, str]]:
    """(interpreter, abi) pairs of wheel tags CPython `version` (major.minor) runs."""
    major, minor = (int(p) for p in version.split("."))
    interpreter = f"cp{major}{minor}"
    pairs = {(t.interpreter, t.abi) for t in tagging.cpython_tags((major, minor), [interpreter], ["x"])}
    pairs |= {(t.interpreter, t.abi) for t in tagging.compatible_tags((major, minor), interpreter, ["x"])}
    return frozenset(pairs)


class Selector:
    """The filters of the settings, set up once, asked once per file."""

    def __init__(self, pypi: PypiSettings):
        self.settings = pypi
        self.pythons = list(pypi.python_versions)
        self.python_pairs = (
            frozenset().union(*(python_tags(v) for v in self.pythons)) if self.pythons else None
        )
        self.platforms = platform_tags(pypi.platforms) if pypi.platforms else None

    def decide(self, dist: DistFile, wanted: list[Wanted]) -> FileDecision:
        """The decision of steps 1 to 6 for one file of a project asked by `wanted`."""
        matching = [w for w in wanted if w.specifier.contains(dist.version, prereleases=True)]
        if not matching:
            specs = ", ".join(sorted({str(w) for w in wanted}))
            return FileDecision(False, "specifier", f"{dist.version} matches none of {specs}")
        allowed = self.settings.prereleases or any(_names_prerelease(w.specifier) for w in matching)
        if dist.version.is_prerelease and not allowed:
            return FileDecision(False, "prerelease", f"{dist.version} is a pre-release")
        if dist.yanked is not None and not self.settings.yanked:
            return FileDecision(False, "yanked", dist.yanked or "no reason given")
        if dist.kind == "sdist" and not self.settings.sdists:
            return FileDecision(False, "sdists", "a source distribution (pypi.sdists is false)")
        why = self._python(dist)
        if why:
            return FileDecision(False, "python", why)
        why = self._platform(dist)
        if why:
            return FileDecision(False, "platform", why)
        first = matching[0]
        step = "closure" if first.source.startswith("closure:") else "kept"
        return FileDecision(True, step, first.source.removeprefix("closure: "))

    def _python(self, dist: DistFile) -> str | None:
        if not self.pythons:
            return None
        if dist.requires_python:
            try:
                spec = SpecifierSet(dist.requires_python)
            except InvalidSpecifier:
                spec = None  # pip ignores one it cannot read, and so do we
            if spec is not None and not any(_admits(spec, v) for v in self.pythons):
                return f"Requires-Python {dist.requires_python} admits none of {', '.join(self.pythons)}"
        pairs = self.python_pairs
        if (
            dist.kind == "wheel"
            and pairs is not None
            and not any((t.interpreter, t.abi) in pairs for t in dist.tags)
        ):
            shown = ", ".join(sorted({f"{t.interpreter}-{t.abi}" for t in dist.tags}))
            return f"built for {shown}, not Python {', '.join(self.pythons)}"
        return None

    def _platform(self, dist: DistFile) -> str | None:
        if self.platforms is None or dist.kind != "wheel":
            return None
        plats = {t.platform for t in dist.tags}
        if "any" in plats or plats & self.platforms:
            return None
        return f"built for {', '.join(sorted(plats))}, not {', '.join(self.settings.platforms)}"


def _admits(spec: SpecifierSet, version: str) -> bool:
    """Whether some release of `version` (major.minor) satisfies `spec`."""
    return any(spec.contains(Version(f"{version}.{micro}"), prereleases=True) for micro in (0, 99))


def _names_prerelease(spec: SpecifierSet) -> bool:
    return any(Version(s.version.rstrip(".*")).is_prerelease for s in spec if _parses(s.version.rstrip(".*")))


def _parses(text: str) -> bool:
    try:
        Version(text)
    except ValueError:
        return False
    return True


def newest_versions(versions: Iterable[Version], newest: int) -> set[Version]:
    """The newest `newest` of `versions` (all of them when newest is 0)."""
    ordered = sorted(set(versions), reverse=True)
    return set(ordered if newest <= 0 else ordered[:newest])
