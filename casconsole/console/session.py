"""What the console works on: the settings layers, the working settings, the plan.

The working settings start as the files say (`saved`); the Plan screen's toggles change them
(`settings`) and re-plan at once; `save` writes the changed keys to one layer file (by default
the user file) and `discard` goes back. Nothing here draws anything: the screens read it.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from casconsole.selection.plan import Plan
from casconsole.settings import (
    LAYERS,
    SCHEMA,
    Layer,
    Problem,
    Settings,
    preview_write,
    problems_of,
    read_layers,
    resolve,
    system_config_path,
    user_config_path,
    write_settings,
)

if TYPE_CHECKING:
    from casconsole.pypi.plan import PypiPlan

# the keys the console changes by itself; saving writes those that differ from the files
TOGGLED_KEYS = ("blacklist", "whitelist")
_PLAIN_NAME = re.compile(r"^[a-z0-9_.\-]+$")


@dataclass
class Toggle:
    """What a `b` / `w` press did: the key, the name, whether it was added or taken out."""

    key: str
    name: str
    added: bool

    def __str__(self) -> str:
        return f"{self.name} {'added to' if self.added else 'taken out of'} the {self.key}"


@dataclass
class SaveTarget:
    """A layer file the console can write, with what a save would change in it."""

    layer: str
    path: Path
    updates: dict[str, Any]
    old_text: str = ""
    new_text: str = ""
    overridden: list[str] = field(default_factory=list)  # keys a higher layer sets anyway


class ConsoleState:
    """The settings layers as read, the effective settings, the working copy and its plan."""

    def __init__(
        self,
        config_file: Path | None = None,
        env: Mapping[str, str] | None = None,
        cli: Mapping[str, tuple[Any, str]] | None = None,
        layers: list[Layer] | None = None,
    ):
        import os

        self.config_file = config_file
        self.env: Mapping[str, str] = dict(os.environ if env is None else env)
        self.cli = dict(cli or {})
        self.layers: list[Layer] = layers if layers is not None else self._read()
        self.saved: Settings = resolve(self.layers)
        self.settings: Settings = self.saved
        self.plan: Plan | None = None
        self.plan_error: str | None = None
        self.pypi_plan: PypiPlan | None = None  # the pypi section's, when it names projects
        self.pypi_error: str | None = None

    def build_plan(
        self, progress: Callable[[str], None] | None = None, cancelled: Callable[[], bool] = bool
    ) -> Plan | None:
        """Fetch the upstream repodata of every subdir (through the mirror's cache) and decide
        every record; None when `cancelled()` turned true on the way."""
        from casconsole.upstream.repodata import fetch_upstream

        settings = self.settings
        say = progress or (lambda text: None)
        upstream = {}
        missing: dict[str, str] = {}  # platforms upstream does not carry: the plan warns of them
        for n, subdir in enumerate(settings.subdirs, 1):
            say(f"fetching {subdir} ({n}/{len(settings.subdirs)})")
            upstream.update(fetch_upstream(settings, [subdir], missing=missing))
            if cancelled():
                return None
        say("deciding every record")
        plan = Plan.build(settings, upstream, missing=missing)
        plan.prepare_updates()  # the toggles' re-plans stay fast
        if settings.pypi.enabled:
            say("reading the PyPI index")
            self.build_pypi_plan(settings)
        return plan

    def build_pypi_plan(self, settings: Settings) -> None:
        """The pypi section's plan, or why there is none (kept apart from the channel's: an
        unreachable index does not hide the channel's plan)."""
        from casconsole.errors import CasError
        from casconsole.pypi.client import IndexClient
        from casconsole.pypi.plan import PypiPlan

        try:
            with IndexClient(settings) as client:
                self.pypi_plan, self.pypi_error = PypiPlan.build(settings, client), None
        except CasError as exc:
            self.pypi_plan, self.pypi_error = None, str(exc)

    def _read(self) -> list[Layer]:
        return read_layers(self.config_file, env=self.env, cli=self.cli)

    @property
    def problems(self) -> list[Problem]:
        return problems_of(self.layers)

    # ---------------------------------------------------------------- reading the files again

    def reload(self) -> bool:
        """Read every layer again; whether the effective settings changed. Unsaved toggles are
        kept when the files did not change the keys they touch."""
        pending = self.pending()
        self.layers = self._read()
        old = self.saved
        self.saved = resolve(self.layers)
        self.settings = self.saved.replace(**pending) if pending else self.saved
        return old.as_dict() != self.saved.as_dict()

    # ---------------------------------------------------------------- toggles

    def pending(self) -> dict[str, list[str]]:
        """The toggled keys whose working value differs from the files'."""
        return {
            key: getattr(self.settings, key)
            for key in TOGGLED_KEYS
            if getattr(self.settings, key) != getattr(self.saved, key)
        }

    def pending_summary(self) -> str:
        parts = []
        for key, value in self.pending().items():
            before = getattr(self.saved, key)
            added = [e for e in value if e not in before]
            removed = [e for e in before if e not in value]
            parts += [f"{key} +{e}" for e in added] + [f"{key} -{e}" for e in removed]
        return ", ".join(parts)

    def toggle(self, key: str, name: str) -> Toggle:
        """Put `name` in the list `key` (blacklist or whitelist), or take it out; re-plan it."""
        entries = list(getattr(self.settings, key))
        added = name not in entries
        entries = [*entries, name] if added else [e for e in entries if e != name]
        self.settings = self.settings.replace(**{key: entries})
        if self.plan is not None:
            self.plan.update(self.settings, names={name})
        return Toggle(key, name, added)

    def discard(self) -> None:
        """Back to the settings as the files say; the plan follows."""
        changed: set[str] = set()
        for key in TOGGLED_KEYS:
            changed ^= set(getattr(self.settings, key)) ^ set(getattr(self.saved, key))
        self.settings = self.saved
        if self.plan is not None and changed:
            if all(_PLAIN_NAME.match(e) for e in changed):
                self.plan.update(self.settings, names=changed)
            else:
                self.plan.update(self.settings)

    # ---------------------------------------------------------------- saving

    def save_targets(self) -> list[tuple[str, Path]]:
        """The layer files a save may go to, the user file first."""
        targets = [("user", user_config_path(self.env))]
        if self.config_file is not None:
            targets.append(("file", Path(self.config_file).expanduser()))
        targets.append(("system", system_config_path(self.env)))
        return targets

    def preview_save(self, layer: str, path: Path) -> SaveTarget:
        """What saving the pending keys to `path` would do (SettingsError when it cannot)."""
        updates = dict(self.pending())
        old, new = preview_write(path, updates)
        overridden = [
            f"{key} is set by {self.saved.origins[key]}, which is above the {layer} file"
            for key in updates
            if key in self.saved.origins and LAYERS.index(self.saved.origins[key].layer) > LAYERS.index(layer)
        ]
        return SaveTarget(layer, path, updates, old, new, overridden)

    def save(self, target: SaveTarget) -> list[str]:
        """Write the pending keys to the target file (atomic, `.bak` kept) and read the layers
        again; the keys whose effective value is not what was saved (a higher layer sets them)."""
        write_settings(target.path, target.updates)
        wanted = dict(target.updates)
        self.layers = self._read()
        self.saved = resolve(self.layers)
        differs = [key for key, value in wanted.items() if getattr(self.saved, key) != value]
        working = self.settings
        self.settings = self.saved
        if self.plan is not None and any(working.get(k) != self.saved.get(k) for k in SCHEMA):
            self.plan.update(self.settings)
        return differs


# ---------------------------------------------------------------- the machine


def settle_heap() -> None:
    """Leave what is loaded now (a plan: millions of objects) out of future garbage collections.

    A plan of 500,000 records is a heap the cyclic collector would walk on each full collection:
    measured at half a second, landing on a random key press. It lives until the next plan, so
    it is moved to the permanent generation (`gc.freeze`); `reload_plan` unfreezes first.
    """
    gc.freeze()


def probe_server(host: str, port: int, timeout: float = 1.0) -> tuple[bool, str]:
    """(up, what was seen) for an HTTP server at host:port; a wildcard address is asked locally."""
    import http.client

    address = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    where = f"http://{address}:{port}/"
    connection = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        connection.request("HEAD", "/")
        status = connection.getresponse().status
    except OSError as exc:
        return False, f"not reachable at {where} ({exc.strerror or exc})"
    except http.client.HTTPException as exc:
        return False, f"{where} answers, but not HTTP ({type(exc).__name__})"
    finally:
        connection.close()
    return True, f"listening at {where} (HTTP {status})"
