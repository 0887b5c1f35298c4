"""What the settings ask of the PyPI side: projects with PEP 440 specifiers, from `pypi.projects`
and the requirements file `pypi.requirements` (one PEP 508 requirement a line, `#` comments,
`\\` continuations). Names are normalized as PEP 503 says (`Charset_Normalizer` is
`charset-normalizer`). A bad line is an error naming its file and line (exit 2)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import NormalizedName, canonicalize_name

from casconsole.errors import SettingsError
from casconsole.settings import Problem, PypiSettings

MAX_REQUIREMENTS_FILE = 4 << 20


@dataclass(frozen=True)
class Wanted:
    """One reason to mirror a project: its specifiers and extras, and where it was asked."""

    name: NormalizedName
    specifier: SpecifierSet
    extras: frozenset[str]
    source: str  # "pypi.projects", "requirements.txt:3", or "<project> <version> requires ..."

    @classmethod
    def of(cls, req: Requirement, source: str) -> Wanted:
        return cls(canonicalize_name(req.name), req.specifier, frozenset(req.extras), source)

    def __str__(self) -> str:
        extras = f"[{','.join(sorted(self.extras))}]" if self.extras else ""
        return f"{self.name}{extras}{self.specifier}"


def wanted_projects(pypi: PypiSettings) -> list[Wanted]:
    """Every requirement the settings name, in order (SettingsError for a bad requirements file)."""
    wanted = [Wanted.of(Requirement(text), "pypi.projects") for text in pypi.projects]
    if pypi.requirements is not None:
        wanted += read_requirements(Path(pypi.requirements))
    return wanted


def read_requirements(path: Path) -> list[Wanted]:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_REQUIREMENTS_FILE + 1)
    except OSError as exc:
        raise SettingsError(
            [Problem(str(path), f"pypi.requirements: cannot read ({exc.strerror})")]
        ) from None
    if len(data) > MAX_REQUIREMENTS_FILE:
        raise SettingsError([Problem(str(path), "pypi.requirements: larger than 4 MiB")])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SettingsError([Problem(str(path), "pypi.requirements: not UTF-8 text")]) from None
    wanted: list[Wanted] = []
    problems: list[Problem] = []
    for number, line in _logical_lines(text):
        where = f"{path}:{number}"
        if line.startswith("-"):
            problems.append(
                Problem(where, f"{line.split()[0]}: pip options are not read here, only requirements")
            )
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            problems.append(Problem(where, f"not a PEP 508 requirement ({str(exc).splitlines()[0]})"))
            continue
        if req.url:
            problems.append(Problem(where, f"{req.name} @ URL: only projects of the index can be mirrored"))
            continue
        wanted.append(Wanted.of(req, where))  # a marker is not a filter here: every target is served
    if problems:
        raise SettingsError(problems)
    return wanted


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each requirement: comments dropped, `\\` lines joined."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].split("\t#", 1)[0]
        if line.lstrip().startswith("#"):
            line = ""
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            out.append((start, line))
    if pending.strip():
        out.append((start, pending.strip()))
    return out
