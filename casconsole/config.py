"""Layered settings with provenance.

Six layers, lowest first: built-in defaults, the system file, the user file, a `--config` file,
`CAS_MIRROR_<KEY>` environment variables, command-line flags. A higher layer replaces a key as a
whole. Every effective value remembers the layer and the file:line (or variable, or flag) that
set it. Problems are collected across all layers and reported together.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import platform
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs
import yaml

from .fsutil import atomic_write_bytes

LAYERS = ("default", "system", "user", "file", "env", "cli")
ENV_PREFIX = "CAS_MIRROR_"
SYSTEM_CONFIG_ENV = "CAS_MIRROR_SYSTEM_CONFIG"
USER_CONFIG_ENV = "CAS_MIRROR_USER_CONFIG"

KNOWN_SUBDIRS = frozenset(
    {
        "noarch",
        "linux-32", "linux-64", "linux-aarch64", "linux-armv6l", "linux-armv7l",
        "linux-ppc64", "linux-ppc64le", "linux-riscv64", "linux-s390x", "linux-loongarch64",
        "osx-64", "osx-arm64",
        "win-32", "win-64", "win-arm64",
        "freebsd-64", "zos-z", "emscripten-wasm32", "wasi-wasm32",
    }
)  # fmt: skip


def machine_subdir() -> str:
    """The conda subdir of the running machine, e.g. `linux-64`."""
    system = {"Linux": "linux", "Darwin": "osx", "Windows": "win"}.get(platform.system(), "linux")
    machine = platform.machine().lower()
    arch = {
        "x86_64": "64", "amd64": "64", "i386": "32", "i686": "32", "x86": "32",
        "aarch64": "aarch64", "arm64": "arm64" if system == "osx" else "aarch64",
        "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64",
    }.get(machine, "64")  # fmt: skip
    if system == "win" and arch == "aarch64":
        arch = "arm64"
    return f"{system}-{arch}"


def default_mirror_dir() -> Path:
    return platformdirs.user_data_path("casconsole") / "mirror"


# ---------------------------------------------------------------- the schema


class _Invalid(ValueError):
    """A value of the wrong type or form; the message says what was expected."""


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _Invalid(f"expected a non-empty string, got {_show(v)}")
    return v.strip()


def _opt_str(v: Any) -> str | None:
    if v is None or v == "":
        return None
    return _str(v)


def _proxy(v: Any) -> str | None:
    url = _opt_str(v)
    if url is not None:
        from .sync_http import Proxy, ProxyError  # here: the settings need no HTTP code otherwise

        try:
            Proxy.parse(url)
        except ProxyError as exc:
            raise _Invalid(str(exc).removeprefix("proxy: ")) from None
    return url


def _str_list(v: Any) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _Invalid(f"expected a list of strings, got {_show(v)}")
    return [x.strip() for x in v if x.strip()]


def _entry_list(v: Any) -> list[str]:
    from .filters import Entry, EntryError  # deferred: filters needs this module's types

    entries = _str_list(v)
    for text in entries:
        try:
            Entry.parse(text)
        except EntryError as exc:
            raise _Invalid(str(exc)) from None
    return entries


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Invalid(f"expected true or false, got {_show(v)}")
    return v


def _nonneg_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise _Invalid(f"expected a whole number >= 0, got {_show(v)}")
    return v


def _pos_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise _Invalid(f"expected a whole number >= 1, got {_show(v)}")
    return v


def _port(v: Any) -> int:
    if _nonneg_int(v) > 65535:
        raise _Invalid(f"expected a port number 0-65535, got {_show(v)}")
    return v


def _pos_float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        raise _Invalid(f"expected a number of seconds > 0, got {_show(v)}")
    return float(v)


def _ssl_verify(v: Any) -> bool | str:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip():
        return v.strip()
    raise _Invalid(f"expected true, false or the path of a CA bundle, got {_show(v)}")


def _path(v: Any) -> Path:
    return Path(_str(v)).expanduser()


def _platforms(v: Any) -> list[str]:
    subdirs = _str_list(v)
    for subdir in subdirs:
        if subdir not in KNOWN_SUBDIRS:
            hint = difflib.get_close_matches(subdir, sorted(KNOWN_SUBDIRS), n=1)
            tip = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise _Invalid(f"unknown platform {subdir!r}{tip}")
    if not subdirs:
        raise _Invalid("expected at least one platform")
    return subdirs


def _remote_url(v: Any) -> str:
    url = _str(v).rstrip("/")
    return url


def _show(v: Any) -> str:
    kinds = {bool: "a boolean", int: "a number", float: "a number", str: "a string",
             list: "a list", dict: "a mapping", type(None): "nothing"}  # fmt: skip
    kind = kinds.get(type(v), type(v).__name__)
    text = repr(v)
    return f"{kind} ({text[:60]}{'...' if len(text) > 60 else ''})"


@dataclass(frozen=True)
class Key:
    name: str
    check: Callable[[Any], Any]
    default: Callable[[], Any]
    help: str
    kind: str  # how an environment variable's text is read: str, list, bool, int, float


SCHEMA: dict[str, Key] = {
    k.name: k
    for k in [
        Key("remote_url", _remote_url, lambda: "https://repo.anaconda.com/pkgs/main",
            "the upstream channel URL (http(s)://, file:// or a path)", "str"),
        Key("mirror_dir", _path, default_mirror_dir, "where the mirror and its channels live", "str"),
        Key("channel_name", _str, lambda: "pkgs", "the mirrored channel's folder under mirror_dir", "str"),
        Key("platforms", _platforms, lambda: [machine_subdir()],
            "subdirs to mirror (noarch is always added)", "list"),
        Key("license_blacklist", _str_list, list, "license families to drop (GPL covers GPL2, GPL3)", "list"),
        Key("blacklist", _entry_list, list, "names, globs or match specs to drop", "list"),
        Key("whitelist", _entry_list, list, "names, globs or match specs to add back", "list"),
        Key("whitelist_closure", _bool, lambda: False,
            "whitelisted records bring in their dependency closure", "bool"),
        Key("curated", _bool, lambda: False,
            "mirror only the whitelist entries and their dependency closure", "bool"),
        Key("newest_versions", _nonneg_int, lambda: 0,
            "keep only the newest N versions of each name per subdir (0: all)", "int"),
        Key("concurrency", _pos_int, lambda: 8, "parallel downloads", "int"),
        Key("timeout", _pos_float, lambda: 60.0, "seconds without progress before a request fails", "float"),
        Key("retries", _nonneg_int, lambda: 3, "retries per file after the first attempt", "int"),
        Key("ssl_verify", _ssl_verify, lambda: True, "verify TLS: true, false or a CA bundle path", "ssl"),
        Key("proxy", _proxy, lambda: None, "upstream proxy: http://[user:pass@]host:port", "str"),
        Key("prune", _bool, lambda: True, "delete mirrored files that left the plan", "bool"),
        Key("server_host", _str, lambda: "127.0.0.1", "address cas-server listens on", "str"),
        Key("server_port", _port, lambda: 8080, "port cas-server listens on", "int"),
        Key("private_channels", _str_list, list, "channels served only under /t/<token>/", "list"),
    ]
}  # fmt: skip


# ---------------------------------------------------------------- provenance


@dataclass(frozen=True)
class Origin:
    layer: str  # one of LAYERS
    source: str  # "file:line", an environment variable, a flag, or "built-in"

    def __str__(self) -> str:
        return f"{self.layer} ({self.source})"


@dataclass(frozen=True)
class Problem:
    where: str  # file:line, variable or flag
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class SettingsError(Exception):
    """Settings that cannot be used; `str()` is the message for the user, one line a problem."""

    def __init__(self, problems: list[Problem]):
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass
class Layer:
    """What one layer says: its values, each with its origin, and its own problems."""

    name: str
    path: Path | None = None
    exists: bool = False
    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, Origin] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def set(self, key: str, raw: Any, where: str, relative_to: Path | None = None) -> None:
        spec = SCHEMA.get(key)
        if spec is None:
            hint = difflib.get_close_matches(key, list(SCHEMA), n=1)
            tip = f" (did you mean {hint[0]!r}?)" if hint else ""
            self.problems.append(Problem(where, f"unknown key {key!r}{tip}"))
            return
        try:
            value = spec.check(raw)
        except _Invalid as exc:
            self.problems.append(Problem(where, f"{key}: {exc}"))
            return
        if isinstance(value, Path) and relative_to is not None and not value.is_absolute():
            value = relative_to / value
        self.values[key] = value
        self.origins[key] = Origin(self.name, where)


@dataclass(frozen=True)
class Settings:
    """The effective settings; `origins[key]` says where each value came from."""

    remote_url: str
    mirror_dir: Path
    channel_name: str
    platforms: list[str]
    license_blacklist: list[str]
    blacklist: list[str]
    whitelist: list[str]
    whitelist_closure: bool
    curated: bool
    newest_versions: int
    concurrency: int
    timeout: float
    retries: int
    ssl_verify: bool | str
    proxy: str | None
    prune: bool
    server_host: str
    server_port: int
    private_channels: list[str]
    origins: Mapping[str, Origin] = field(default_factory=dict, compare=False, repr=False)
    layers: tuple[Layer, ...] = field(default=(), compare=False, repr=False)

    @property
    def subdirs(self) -> list[str]:
        """The subdirs a sync touches: the platforms, and noarch always, in that order."""
        return [*dict.fromkeys([*self.platforms, "noarch"])]

    @property
    def channel_dir(self) -> Path:
        return self.mirror_dir / self.channel_name

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes` applied (each checked), their origin the `cli` layer."""
        layer = Layer("cli")
        for key, value in changes.items():
            layer.set(key, value, "console")
        if layer.problems:
            raise SettingsError(layer.problems)
        origins = {**self.origins, **layer.origins}
        return dataclasses.replace(self, **layer.values, origins=origins)

    def as_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in SCHEMA}

    def to_json(self) -> dict[str, dict[str, Any]]:
        """`{key: {"value", "layer", "source"}}`, as `cas-sync --show --json` prints it."""
        out = {}
        for key, value in self.as_dict().items():
            origin = self.origins[key]
            out[key] = {"value": _jsonable(value), "layer": origin.layer, "source": origin.source}
        return out


def _jsonable(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


# ---------------------------------------------------------------- reading the layers


def _read_file_layer(name: str, path: Path, required: bool) -> Layer:
    layer = Layer(name, path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            layer.problems.append(Problem(str(path), "file not found"))
        return layer
    except (OSError, UnicodeDecodeError) as exc:
        layer.problems.append(Problem(str(path), f"cannot read: {getattr(exc, 'strerror', exc)}"))
        return layer
    layer.exists = True
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        layer.problems.append(Problem(f"{path}:{line}", f"YAML syntax error: {exc.problem}"))
        return layer
    except yaml.YAMLError as exc:
        layer.problems.append(Problem(str(path), f"YAML syntax error: {exc}"))
        return layer
    if root is None:
        return layer
    if not isinstance(root, yaml.MappingNode):
        layer.problems.append(
            Problem(f"{path}:{root.start_mark.line + 1}", "expected a mapping of key: value")
        )
        return layer
    constructor = yaml.SafeLoader("")
    for key_node, value_node in root.value:
        where = f"{path}:{key_node.start_mark.line + 1}"
        try:
            value = constructor.construct_object(value_node, deep=True)
        except yaml.YAMLError as exc:
            layer.problems.append(Problem(where, f"cannot read value: {exc}"))
            continue
        layer.set(str(key_node.value), value, where, relative_to=path.parent)
    return layer


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_text_value(key: str, text: str) -> Any:
    """Read a setting from text (environment variables, `--set`): lists are comma-separated."""
    kind = SCHEMA[key].kind if key in SCHEMA else "str"
    t = text.strip()
    if kind == "list":
        return [part.strip() for part in t.split(",") if part.strip()]
    if kind in ("bool", "ssl"):
        if t.lower() in _TRUE:
            return True
        if t.lower() in _FALSE:
            return False
        return t  # a CA bundle path for ssl; a type problem for bool
    if kind in ("int", "float"):
        try:
            return int(t)
        except ValueError:
            try:
                return float(t) if kind == "float" else t
            except ValueError:
                return t
    return t


def _env_layer(env: Mapping[str, str]) -> Layer:
    layer = Layer("env")
    for var, text in sorted(env.items()):
        if not var.startswith(ENV_PREFIX) or var in (SYSTEM_CONFIG_ENV, USER_CONFIG_ENV):
            continue
        key = var[len(ENV_PREFIX) :].lower()
        layer.set(key, parse_text_value(key, text), var)
    return layer


def _cli_layer(cli: Mapping[str, tuple[Any, str]]) -> Layer:
    layer = Layer("cli")
    for key, (value, flag) in cli.items():
        layer.set(key, value, flag)
    return layer


def system_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get(SYSTEM_CONFIG_ENV) or "/etc/cas-mirror").expanduser()


def user_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get(USER_CONFIG_ENV) or "~/.cas-mirror").expanduser()


def read_layers(
    config_file: Path | str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cli: Mapping[str, tuple[Any, str]] | None = None,
) -> list[Layer]:
    """All six layers as they are, problems included; never raises for bad input."""
    env = os.environ if env is None else env
    defaults = Layer("default", exists=True)
    for key, spec in SCHEMA.items():
        defaults.values[key] = spec.default()
        defaults.origins[key] = Origin("default", "built-in")
    layers = [
        defaults,
        _read_file_layer("system", system_config_path(env), required=False),
        _read_file_layer("user", user_config_path(env), required=False),
    ]
    if config_file is not None:
        layers.append(_read_file_layer("file", Path(config_file).expanduser(), required=True))
    else:
        layers.append(Layer("file"))
    layers.append(_env_layer(env))
    layers.append(_cli_layer(cli or {}))
    return layers


def resolve(layers: list[Layer]) -> Settings:
    """The effective settings of `layers`; a key set by a higher layer replaces it whole."""
    values: dict[str, Any] = {}
    origins: dict[str, Origin] = {}
    for layer in layers:
        values.update(layer.values)
        origins.update(layer.origins)
    return Settings(**values, origins=origins, layers=tuple(layers))


def problems_of(layers: list[Layer]) -> list[Problem]:
    return [p for layer in layers for p in layer.problems]


def load_settings(
    config_file: Path | str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cli: Mapping[str, tuple[Any, str]] | None = None,
) -> Settings:
    """Read and resolve all layers; SettingsError lists every problem found."""
    layers = read_layers(config_file, env=env, cli=cli)
    problems = problems_of(layers)
    if problems:
        raise SettingsError(problems)
    return resolve(layers)


# ---------------------------------------------------------------- writing one layer


def _key_spans(text: str) -> dict[str, tuple[int, int]]:
    """Top-level key -> (first line, line after its value), 0-based, for a mapping document."""
    root = yaml.compose(text, Loader=yaml.SafeLoader) if text.strip() else None
    if root is None:
        return {}
    if not isinstance(root, yaml.MappingNode):
        raise ValueError("the file is not a mapping of key: value")
    spans = {}
    for key_node, value_node in root.value:
        end = value_node.end_mark
        stop = end.line if end.column == 0 else end.line + 1
        spans[str(key_node.value)] = (
            key_node.start_mark.line,
            max(stop, key_node.start_mark.line + 1),
        )
    return spans


def render_update(text: str, updates: Mapping[str, Any]) -> str:
    """`text` with the top-level `updates` replaced in place (or appended); other lines kept.

    A value of None removes the key.
    """
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    spans = _key_spans(text)
    # follow the file's own list style ("  - a" or "- a") so a save changes only what changed
    indented = not re.search(r"^- ", text, re.MULTILINE) or bool(re.search(r"^\s+- ", text, re.MULTILINE))
    appended: list[str] = []
    # replace from the bottom so earlier spans keep their line numbers
    for key in sorted(updates, key=lambda k: -spans.get(k, (-1, 0))[0]):
        value = updates[key]
        block = [] if value is None else _dump_key(key, value, indented)
        if key in spans:
            start, stop = spans[key]
            lines[start:stop] = block
        else:
            appended.extend(block)
    return "".join(lines + appended)


class _IndentedDumper(yaml.SafeDumper):
    """Writes list items indented under their key (`  - a`), as most people write YAML."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)


def _dump_key(key: str, value: Any, indented: bool = True) -> list[str]:
    value = str(value) if isinstance(value, Path) else value
    dumper = _IndentedDumper if indented else yaml.SafeDumper
    dumped = yaml.dump({key: value}, Dumper=dumper, default_flow_style=False, sort_keys=False)
    if isinstance(value, list) and not value:
        dumped = f"{key}: []\n"
    return dumped.splitlines(keepends=True)


def unified_diff(old: str, new: str, path: Path) -> str:
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            f"{path} (now)",
            f"{path} (new)",
        )
    )


def preview_write(path: Path, updates: Mapping[str, Any]) -> tuple[str, str]:
    """(current text, text after the update) of the layer file at `path`; checks the new values."""
    layer = Layer("check")
    for key, value in updates.items():
        if value is not None:
            layer.set(key, value, str(path))
    if layer.problems:
        raise SettingsError(layer.problems)
    try:
        old = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        old = ""
    try:
        new = render_update(old, updates)
    except (yaml.YAMLError, ValueError) as exc:
        raise SettingsError([Problem(str(path), f"cannot update this file: {exc}")]) from exc
    return old, new


def write_settings(path: Path, updates: Mapping[str, Any]) -> str:
    """Apply `updates` to the layer file at `path`: atomic replace, `.bak` of the old text kept.

    Returns the new text.
    """
    old, new = preview_write(path, updates)
    if path.exists():
        atomic_write_bytes(path.with_name(path.name + ".bak"), old.encode("utf-8"))
    atomic_write_bytes(path, new.encode("utf-8"))
    return new


def write_snapshot(settings: Settings, path: Path) -> Path:
    """Write every effective value as a settings file for a sync in another process.

    Paths are made absolute (the child may run elsewhere); the file is readable by its owner
    only, since it may hold a proxy password.
    """
    values = settings.as_dict()
    values["mirror_dir"] = str(Path(settings.mirror_dir).resolve())
    ssl_verify = values["ssl_verify"]
    if isinstance(ssl_verify, str) and Path(ssl_verify).exists():
        values["ssl_verify"] = str(Path(ssl_verify).resolve())
    remote = values["remote_url"]
    if "://" not in remote:
        values["remote_url"] = str(Path(remote).expanduser().resolve())
    values = {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        yaml.safe_dump(values, fh, sort_keys=False)
    return path


def describe_keys() -> str:
    """The keys and their meaning, for `--help` texts and the README."""
    width = max(map(len, SCHEMA))
    return "\n".join(f"  {k.name:<{width}}  {k.help}" for k in SCHEMA.values())
