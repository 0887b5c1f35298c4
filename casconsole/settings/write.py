"""Writing one layer file: the console's toggles, saved with a diff shown first."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from casconsole.errors import SettingsError
from casconsole.fsutil import atomic_write_bytes
from casconsole.layout import BucketURL
from casconsole.settings.layers import Layer, Problem, Settings


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
    mirror = settings.mirror_dir
    values["mirror_dir"] = str(mirror if isinstance(mirror, BucketURL) else Path(mirror).resolve())
    for key in ("ssl_verify", "s3_ssl_verify", "s3_work_dir"):
        where = values[key]
        if isinstance(where, (str, Path)) and Path(where).exists():
            values[key] = str(Path(where).resolve())
    remote = values["remote_url"]
    if "://" not in remote:
        values["remote_url"] = str(Path(remote).expanduser().resolve())
    for key in ("pypi.ssl_verify", "pypi.requirements"):  # files: absolute, as above
        value = values[key]
        if isinstance(value, (str, Path)) and Path(value).exists():
            values[key] = str(Path(value).resolve())
    values = {k: str(v) if isinstance(v, (Path, BucketURL)) else v for k, v in values.items()}
    for key in [k for k in values if "." in k]:  # a section's keys as its mapping, as a person writes them
        section, _, sub = key.partition(".")
        values.setdefault(section, {})[sub] = values.pop(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        yaml.safe_dump(values, fh, sort_keys=False)
    return path
