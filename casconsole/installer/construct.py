"""The installer's description, `my-installer.yaml`: read strictly, every problem with its line.

The keys are cas-mirror's (and conda constructor's) own: `name`, `version`, `channels`,
`specs`, and optionally `license_file`, `welcome`, `default_prefix`, `post_install`. The FAQ's
examples must work as written, so `version: 1.0` (a YAML number) is the version `1.0` as typed
(the scalar's text is taken, never the float: `1.10` stays `1.10`), and `channels` and `specs`
may be a plain string for a list of one. Paths (`license_file`, `post_install`, local channel
folders) are relative to the YAML file's folder, so a build does not depend on where it runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from casconsole.errors import EXIT_USAGE, CasError
from casconsole.layout import KNOWN_SUBDIRS, machine_subdir

KEYS = ("name", "version", "channels", "specs", "license_file", "welcome", "default_prefix", "post_install")
REQUIRED = ("name", "version", "channels", "specs")
# a name and a version end up in a file name and in conda's history: keep them to plain words
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
MAX_TEXT = 1 << 20  # the license, the welcome text, the post_install script


class InstallerError(CasError):
    """An installer that cannot be built as described: bad YAML, a spec that cannot be solved,
    a channel that cannot be reached. The message names the file and line, the spec or the URL."""

    exit_status = EXIT_USAGE


@dataclass(frozen=True)
class InstallerSpec:
    """What `my-installer.yaml` asks for, checked."""

    name: str
    version: str
    channels: list[str]
    specs: list[str]
    platform: str
    source: Path | None = None  # the YAML file
    license_text: str | None = None
    license_name: str | None = None  # the license file's name, shown above it
    welcome: str | None = None
    default_prefix: str | None = None
    post_install: bytes | None = None
    post_install_name: str | None = None
    lines: dict[str, int] = field(default_factory=dict, compare=False)  # key -> line, for messages

    @property
    def file_name(self) -> str:
        return installer_file_name(self.name, self.version, self.platform)

    def where(self, key: str) -> str:
        """`file:line` of a key, for messages."""
        line = self.lines.get(key)
        if self.source is None:
            return key
        return f"{self.source}:{line}" if line else str(self.source)


def installer_file_name(name: str, version: str, platform: str) -> str:
    return f"{name}-{version}-{platform}.sh"


def check_platform(platform: str) -> str:
    """A platform an installer can be built for: a known linux-* or osx-* subdir."""
    if platform not in KNOWN_SUBDIRS or platform == "noarch":
        known = ", ".join(sorted(s for s in KNOWN_SUBDIRS if s.startswith(("linux-", "osx-"))))
        raise InstallerError(f"--platform {platform}: not a platform (one of {known})")
    if not platform.startswith(("linux-", "osx-")):
        raise InstallerError(
            f"--platform {platform}: cas-installer writes shell installers, for linux-* and osx-* only"
        )
    return platform


def read_spec(path: Path, platform: str | None = None) -> InstallerSpec:
    """Read and check `path`; InstallerError lists every problem found, one a line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InstallerError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    return parse_spec(text, path, platform or machine_subdir())


def parse_spec(text: str, path: Path, platform: str) -> InstallerSpec:
    check_platform(platform)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise InstallerError(
            f"{path}:{mark.line + 1 if mark else 1}: YAML syntax error: {exc.problem}"
        ) from None
    except yaml.YAMLError as exc:
        raise InstallerError(f"{path}: YAML syntax error: {exc}") from None
    if not isinstance(root, yaml.MappingNode):
        line = root.start_mark.line + 1 if root is not None else 1
        raise InstallerError(
            f"{path}:{line}: expected a mapping of key: value (name, version, channels, specs)"
        )
    reader = _Reader(path)
    values: dict[str, object] = {}
    lines: dict[str, int] = {}
    for key_node, value_node in root.value:
        key = str(key_node.value)
        line = key_node.start_mark.line + 1
        if key not in KEYS:
            reader.problem(line, f"unknown key {key!r} (known: {', '.join(KEYS)})")
            continue
        if key in values:
            reader.problem(line, f"{key} given twice (first on line {lines[key]})")
            continue
        lines[key] = line
        values[key] = reader.value(key, value_node, line)
    for key in REQUIRED:
        if key not in values:
            reader.problem(None, f"{key} is required")
    reader.raise_problems()
    spec = InstallerSpec(
        name=values["name"],  # type: ignore[arg-type]
        version=values["version"],  # type: ignore[arg-type]
        channels=values["channels"],  # type: ignore[arg-type]
        specs=values["specs"],  # type: ignore[arg-type]
        platform=platform,
        source=path,
        welcome=values.get("welcome"),  # type: ignore[arg-type]
        default_prefix=values.get("default_prefix"),  # type: ignore[arg-type]
        lines=lines,
    )
    return reader.attach_files(spec, values, lines)


class _Reader:
    """Turns value nodes into checked values, gathering every problem with its line."""

    def __init__(self, path: Path):
        self.path = path
        self.problems: list[str] = []

    def problem(self, line: int | None, message: str) -> None:
        self.problems.append(f"{self.path}:{line}: {message}" if line else f"{self.path}: {message}")

    def raise_problems(self) -> None:
        if self.problems:
            raise InstallerError("\n".join(self.problems))

    def value(self, key: str, node: yaml.Node, line: int) -> object:
        if key in ("channels", "specs"):
            items = self._string_list(key, node, line)
            if key == "specs":
                for spec in items:
                    problem = match_spec_problem(spec)
                    if problem:
                        self.problem(line, f"specs: {spec!r}: {problem}")
            return items
        if not isinstance(node, yaml.ScalarNode) or node.tag == "tag:yaml.org,2002:null":
            self.problem(line, f"{key}: expected a value, got {_kind(node)}")
            return None
        text = str(node.value)  # the text as typed: `version: 1.10` is "1.10", not 1.1
        if key in ("name", "version"):
            if not _WORD.fullmatch(text):
                self.problem(line, f"{key}: {text!r} must be letters, digits and . _ + - (it names the file)")
            return text
        if key == "welcome":
            if _CONTROL.search(text) or len(text) > MAX_TEXT:
                self.problem(line, "welcome: control characters, or longer than 1 MiB")
            return text
        if not text.strip() or "\n" in text or _CONTROL.search(text):
            self.problem(line, f"{key}: expected a path on one line, got {text!r}")
        elif key == "default_prefix" and re.search(r"\s", text.strip()):
            self.problem(
                line, f"default_prefix: {text!r} holds a space (the installer refuses such prefixes)"
            )
        return text.strip()

    def _string_list(self, key: str, node: yaml.Node, line: int) -> list[str]:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:str" and node.value.strip():
            return [node.value.strip()]  # `specs: python`, as the FAQ writes plain strings for lists
        if isinstance(node, yaml.SequenceNode):
            items = []
            for item in node.value:
                if not isinstance(item, yaml.ScalarNode) or not str(item.value).strip():
                    self.problem(item.start_mark.line + 1, f"{key}: expected a string, got {_kind(item)}")
                    continue
                items.append(str(item.value).strip())
            if not items:
                self.problem(line, f"{key}: the list is empty")
            return items
        self.problem(line, f"{key}: expected a list of strings, got {_kind(node)}")
        return []

    def attach_files(self, spec: InstallerSpec, values: dict, lines: dict[str, int]) -> InstallerSpec:
        """Read `license_file` and `post_install` now: a build never starts on a missing one."""
        import dataclasses

        changes: dict[str, object] = {}
        if values.get("license_file"):
            data = self._read(values["license_file"], lines["license_file"], "license_file")
            if data is not None:
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:
                    self.problem(lines["license_file"], "license_file: not UTF-8 text")
                else:
                    changes["license_text"] = text
                    changes["license_name"] = Path(values["license_file"]).name
        if values.get("post_install"):
            data = self._read(values["post_install"], lines["post_install"], "post_install")
            if data is not None:
                changes["post_install"] = data
                changes["post_install_name"] = Path(values["post_install"]).name
        self.raise_problems()
        return dataclasses.replace(spec, **changes)

    def _read(self, name: str, line: int, key: str) -> bytes | None:
        path = (self.path.parent / Path(name).expanduser()).resolve()
        try:
            with path.open("rb") as fh:
                data = fh.read(MAX_TEXT + 1)
        except OSError as exc:
            self.problem(line, f"{key}: {path}: {exc.strerror or exc}")
            return None
        if len(data) > MAX_TEXT:
            self.problem(line, f"{key}: {path}: larger than 1 MiB")
            return None
        return data


def match_spec_problem(text: str) -> str | None:
    """Why `text` is not a conda match spec, or None (read by the solver's own parser)."""
    import rattler
    from rattler.exceptions import InvalidMatchSpecError

    try:
        rattler.MatchSpec(text)
    except InvalidMatchSpecError as exc:
        return f"not a match spec ({str(exc).strip().splitlines()[0]})"
    return None


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if node.tag == "tag:yaml.org,2002:null":
        return "nothing"
    return repr(node.value)
