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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from casconsole.errors import SettingsError
from casconsole.layout import BucketURL
from casconsole.redact import HIDDEN, redact_value
from casconsole.settings.schema import SCHEMA, SECTIONS, Invalid, key_name

LAYERS = ("default", "system", "user", "file", "env", "cli")
ENV_PREFIX = "CAS_MIRROR_"
SYSTEM_CONFIG_ENV = "CAS_MIRROR_SYSTEM_CONFIG"
USER_CONFIG_ENV = "CAS_MIRROR_USER_CONFIG"

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
        key = key_name(key)
        spec = SCHEMA.get(key)
        if spec is None:
            hint = difflib.get_close_matches(key, list(SCHEMA), n=1)
            tip = f" (did you mean {hint[0]!r}?)" if hint else ""
            self.problems.append(Problem(where, f"unknown key {key!r}{tip}"))
            return
        try:
            value = spec.check(raw)
        except Invalid as exc:
            self.problems.append(Problem(where, str(redact_value(f"{key}: {exc}"))))
            return
        if isinstance(value, Path) and relative_to is not None and not value.is_absolute():
            value = relative_to / value
        self.values[key] = value
        self.origins[key] = Origin(self.name, where)


@dataclass(frozen=True)
class PypiSettings:
    """The `pypi` section: the PyPI subset mirror (docs/pypi.md). Each key is `pypi.<field>`."""

    index_url: str | None = None
    projects: list[str] = field(default_factory=list)
    requirements: Path | None = None
    python_versions: list[str] = field(default_factory=list)
    platforms: list[str] = field(default_factory=list)
    prereleases: bool = False
    yanked: bool = False
    newest: int = 0
    sdists: bool = True
    closure: bool = False
    proxy: str | None = None
    ssl_verify: bool | str = True
    private_projects: list[str] = field(default_factory=list)

    @property
    def enabled(self) -> bool:
        """Whether the section names anything to mirror."""
        return bool(self.projects) or self.requirements is not None


_SECTION_TYPES = {"pypi": PypiSettings}


def _nest(values: Mapping[str, Any], base: Settings | None = None) -> dict[str, Any]:
    """Flat key values (`pypi.closure`) as Settings fields (`pypi=PypiSettings(...)`); a
    section's keys not in `values` keep `base`'s value (or the section's default)."""
    fields: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        section, dot, sub = key.partition(".")
        if dot:
            sections.setdefault(section, {})[sub] = value
        else:
            fields[key] = value
    for section, changes in sections.items():
        current = getattr(base, section) if base is not None else _SECTION_TYPES[section]()
        fields[section] = dataclasses.replace(current, **changes)
    return fields


@dataclass(frozen=True)
class Settings:
    """The effective settings; `origins[key]` says where each value came from."""

    remote_url: str
    mirror_dir: Path | BucketURL
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
    max_prune: float
    server_host: str
    server_port: int
    private_channels: list[str]
    upload_max_size: int
    upload_timeout: float
    public_url: str | None
    client_channels: list[str]
    client_default_channels: list[str]
    client_channel_alias: str | None
    client_ssl_verify: bool | str
    client_proxy_servers: dict[str, str] | None
    bundle_trusted_key: Path | None
    base_url_origins: list[str]
    s3_endpoint_url: str | None
    s3_region: str | None
    s3_path_style: bool
    s3_profile: str | None
    s3_access_key_id: str | None
    s3_secret_access_key: str | None
    s3_session_token: str | None
    s3_ssl_verify: bool | str
    s3_work_dir: Path | None
    s3_serve: str
    s3_redirect_seconds: int
    pypi: PypiSettings = field(default_factory=PypiSettings)
    origins: Mapping[str, Origin] = field(default_factory=dict, compare=False, repr=False)
    layers: tuple[Layer, ...] = field(default=(), compare=False, repr=False)

    @property
    def subdirs(self) -> list[str]:
        """The subdirs a sync touches: the platforms, and noarch always, in that order."""
        return [*dict.fromkeys([*self.platforms, "noarch"])]

    @property
    def channel_dir(self) -> Path | BucketURL:
        return self.mirror_dir / self.channel_name

    @property
    def in_bucket(self) -> bool:
        """The mirror is kept in S3-compatible object storage (mirror_dir: s3://...)."""
        return isinstance(self.mirror_dir, BucketURL)

    @property
    def local_dir(self) -> Path:
        """The folder of the mirror's local state (`.cas/`: status log, upstream cache, download
        workers' lock): mirror_dir itself, or for a bucket its work folder (s3_work_dir)."""
        mirror = self.mirror_dir
        if not isinstance(mirror, BucketURL):
            return mirror
        if self.s3_work_dir is not None:
            return self.s3_work_dir
        import platformdirs

        where = platformdirs.user_cache_path("casconsole") / "s3" / mirror.bucket
        return where / mirror.key if mirror.key else where

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes` applied (each checked), their origin the `cli` layer."""
        layer = Layer("cli")
        for key, value in changes.items():
            layer.set(key, value, "console")
        if layer.problems:
            raise SettingsError(layer.problems)
        origins = {**self.origins, **layer.origins}
        return dataclasses.replace(self, **_nest(layer.values, self), origins=origins)

    def get(self, key: str) -> Any:
        """The value of a schema key, a section's (`pypi.closure`) included."""
        section, dot, sub = key.partition(".")
        return getattr(getattr(self, section), sub) if dot else getattr(self, key)

    def as_dict(self) -> dict[str, Any]:
        return {key: self.get(key) for key in SCHEMA}

    def to_json(self) -> dict[str, dict[str, Any]]:
        """`{key: {"value", "layer", "source"}}`, as `cas-sync --show --json` prints it; URL
        passwords and channel tokens hidden."""
        out = {}
        for key, value in self.as_dict().items():
            origin = self.origins[key]
            shown = shown_value(key, _jsonable(value))
            out[key] = {"value": shown, "layer": origin.layer, "source": origin.source}
        return out


def _jsonable(value: Any) -> Any:
    return str(value) if isinstance(value, (Path, BucketURL)) else value


def shown_value(key: str, value: Any) -> Any:
    """A settings value as any view shows it: a credential as <hidden> (when set), URL
    passwords and channel tokens hidden."""
    spec = SCHEMA.get(key)
    if spec is not None and spec.secret and value is not None:
        return HIDDEN
    return redact_value(value)


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
    _read_mapping(layer, root, path, "")
    return layer


def _read_mapping(layer: Layer, node: yaml.MappingNode, path: Path, prefix: str) -> None:
    """Set each key of a mapping node (`prefix` + key) with its file:line; a section's mapping
    (`pypi:`) is read the same way, its keys as `pypi.<key>`, each with its own line."""
    constructor = yaml.SafeLoader("")
    for key_node, value_node in node.value:
        key = f"{prefix}{key_node.value}"
        where = f"{path}:{key_node.start_mark.line + 1}"
        if not prefix and key in SECTIONS:
            if isinstance(value_node, yaml.MappingNode):
                _read_mapping(layer, value_node, path, f"{key}.")
            elif not (isinstance(value_node, yaml.ScalarNode) and value_node.tag.endswith(":null")):
                layer.problems.append(Problem(where, f"{key}: expected a mapping of key: value"))
            continue
        try:
            value = constructor.construct_object(value_node, deep=True)
        except yaml.YAMLError as exc:
            layer.problems.append(Problem(where, f"cannot read value: {exc}"))
            continue
        if key == FAQ_GUNICORN:
            _gunicorn(layer, value, where)
            continue
        if key == "upload_timeout" and "upload_timeout" in layer.values:
            layer.problems.append(Problem(where, "gunicorn.timeout and upload_timeout: give one of them"))
            continue
        layer.set(key, value, where, relative_to=path.parent)


# The cas-mirror FAQ raises the upload timeout of Anaconda Repository with `gunicorn: timeout:
# 120` (in its /etc/binstar/config.yaml); written in a settings file it sets upload_timeout.
FAQ_GUNICORN = "gunicorn"


def _gunicorn(layer: Layer, value: Any, where: str) -> None:
    if not isinstance(value, dict):
        layer.problems.append(Problem(where, "gunicorn: expected a mapping (gunicorn: {timeout: 120})"))
        return
    for name, item in value.items():
        if name == "timeout":
            if "upload_timeout" in layer.values:
                layer.problems.append(Problem(where, "gunicorn.timeout and upload_timeout: give one of them"))
            else:
                layer.set("upload_timeout", item, f"{where} (gunicorn.timeout)")
        else:
            only = "only gunicorn.timeout, the upload timeout, is read"
            layer.problems.append(Problem(where, f"gunicorn.{name}: unknown key ({only})"))


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_text_value(key: str, text: str) -> Any:
    """Read a setting from text (environment variables, `--set`): lists are comma-separated."""
    key = key_name(key)
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
    return Settings(**_nest(values), origins=origins, layers=tuple(layers))


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
