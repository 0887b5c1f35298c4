"""Layered settings with provenance: the schema, the layers, writing one layer back.

The names below are loaded on first use, so that importing one light module of this package
(`settings.proxy`, in a download worker) does not load YAML and the schema's match specs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from casconsole.errors import SettingsError
    from casconsole.settings.layers import (
        ENV_PREFIX,
        LAYERS,
        Layer,
        Origin,
        Problem,
        PypiSettings,
        Settings,
        load_settings,
        parse_text_value,
        problems_of,
        read_layers,
        resolve,
        system_config_path,
        user_config_path,
    )
    from casconsole.settings.schema import SCHEMA, Key, default_mirror_dir, describe_keys
    from casconsole.settings.write import (
        preview_write,
        render_update,
        unified_diff,
        write_settings,
        write_snapshot,
    )

_WHERE = {
    "casconsole.errors": ["SettingsError"],
    "casconsole.settings.layers": [
        "ENV_PREFIX", "LAYERS", "Layer", "Origin", "Problem", "PypiSettings", "Settings", "load_settings",
        "parse_text_value", "problems_of", "read_layers", "resolve", "system_config_path",
        "user_config_path",
    ],
    "casconsole.settings.schema": ["SCHEMA", "Key", "default_mirror_dir", "describe_keys"],
    "casconsole.settings.write": [
        "preview_write", "render_update", "unified_diff", "write_settings", "write_snapshot",
    ],
}  # fmt: skip
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}
__all__ = [
    "ENV_PREFIX",
    "LAYERS",
    "SCHEMA",
    "Key",
    "Layer",
    "Origin",
    "Problem",
    "PypiSettings",
    "Settings",
    "SettingsError",
    "default_mirror_dir",
    "describe_keys",
    "load_settings",
    "parse_text_value",
    "preview_write",
    "problems_of",
    "read_layers",
    "render_update",
    "resolve",
    "system_config_path",
    "unified_diff",
    "user_config_path",
    "write_settings",
    "write_snapshot",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
