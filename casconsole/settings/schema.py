"""The settings' keys: each with its check, its default, its help and how its text is read."""

from __future__ import annotations

import difflib
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from casconsole.conda.specs import Entry, EntryError
from casconsole.layout import KNOWN_SUBDIRS, channel_name_problem, machine_subdir
from casconsole.settings.proxy import Proxy, ProxyError


def default_mirror_dir() -> Path:
    return platformdirs.user_data_path("casconsole") / "mirror"


class Invalid(ValueError):
    """A value of the wrong type or form; the message says what was expected."""


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise Invalid(f"expected a non-empty string, got {_show(v)}")
    return v.strip()


def _opt_str(v: Any) -> str | None:
    if v is None or v == "":
        return None
    return _str(v)


def _proxy(v: Any) -> str | None:
    url = _opt_str(v)
    if url is not None:
        try:
            Proxy.parse(url)
        except ProxyError as exc:
            raise Invalid(str(exc).removeprefix("proxy: ")) from None
    return url


def _str_list(v: Any) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise Invalid(f"expected a list of strings, got {_show(v)}")
    return [x.strip() for x in v if x.strip()]


def _entry_list(v: Any) -> list[str]:
    entries = _str_list(v)
    for text in entries:
        try:
            Entry.parse(text)
        except EntryError as exc:
            raise Invalid(str(exc)) from None
    return entries


def _channel_list(v: Any) -> list[str]:
    """Channel folder names, each as the channel-name rule has it. They are matched exactly
    (no case folding): `internal/` or `./internal` is an error rather than an entry that
    protects nothing; a case that matches no folder is cas-server's to refuse (it knows the
    folders)."""
    names = _str_list(v)
    for name in names:
        problem = channel_name_problem(name)
        if problem:
            raise Invalid(problem)
    return names


def _origin_list(v: Any) -> list[str]:
    origins = _str_list(v)
    for text in origins:
        parts = urllib.parse.urlsplit(text)
        try:
            parts.port  # noqa: B018 (raises on a bad port)
        except ValueError:
            raise Invalid(f"{text!r}: not a valid port") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
            raise Invalid(f"{text!r}: expected an origin, http(s)://host[:port]")
    return origins


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise Invalid(f"expected true or false, got {_show(v)}")
    return v


def _nonneg_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise Invalid(f"expected a whole number >= 0, got {_show(v)}")
    return v


def _pos_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise Invalid(f"expected a whole number >= 1, got {_show(v)}")
    return v


def _port(v: Any) -> int:
    if _nonneg_int(v) > 65535:
        raise Invalid(f"expected a port number 0-65535, got {_show(v)}")
    return v


def _pos_float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        raise Invalid(f"expected a number of seconds > 0, got {_show(v)}")
    return float(v)


def _ssl_verify(v: Any) -> bool | str:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip():
        return v.strip()
    raise Invalid(f"expected true, false or the path of a CA bundle, got {_show(v)}")


def _path(v: Any) -> Path:
    return Path(_str(v)).expanduser()


def _platforms(v: Any) -> list[str]:
    subdirs = _str_list(v)
    for subdir in subdirs:
        if subdir not in KNOWN_SUBDIRS:
            hint = difflib.get_close_matches(subdir, sorted(KNOWN_SUBDIRS), n=1)
            tip = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise Invalid(f"unknown platform {subdir!r}{tip}")
    if not subdirs:
        raise Invalid("expected at least one platform")
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
        Key("private_channels", _channel_list, list, "channels served only under /t/<token>/", "list"),
        Key("base_url_origins", _origin_list, list,
            "other origins (http(s)://host[:port]) upstream's info.base_url may send downloads to",
            "list"),
    ]
}  # fmt: skip


def describe_keys() -> str:
    """The keys and their meaning, for `--help` texts and the README."""
    width = max(map(len, SCHEMA))
    return "\n".join(f"  {k.name:<{width}}  {k.help}" for k in SCHEMA.values())
