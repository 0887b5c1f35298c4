"""The `.condarc` the mirror's users need: written by `cas-server --condarc` and the console's
Clients screen from the same settings, so both say the same thing.

Channels come in the administrator's order (`client_channels`): a channel of the mirror by name
(written as `<public_url>/<name>`, or `<public_url>/t/<TOKEN>/<name>` when it is private), a URL
written as given (`https://conda.anaconda.org/t/<token>/channel2`), or `defaults`. The rest of
the file (`default_channels`, `channel_alias`, `ssl_verify`, `proxy_servers`) keeps clients on
the mirror: `defaults` and bare channel names lead to it, never to the internet.

The text carries the secrets of the settings (a token in a channel URL, a proxy password), as
conda needs them; `text(hide_secrets=True)` is the form to show on a screen.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from casconsole.layout import find_channels
from casconsole.redact import redact_url

TOKEN_PLACEHOLDER = "<TOKEN>"


class ClientSettings(Protocol):
    """The settings a `.condarc` is made from (casconsole.settings.Settings has them all)."""

    mirror_dir: Path
    channel_name: str
    server_host: str
    server_port: int
    private_channels: list[str]
    public_url: str | None
    client_channels: list[str]
    client_default_channels: list[str]
    client_channel_alias: str | None
    client_ssl_verify: bool | str
    client_proxy_servers: dict[str, str] | None


@dataclass
class ClientChannel:
    """One entry of the clients' channel list: a channel of the mirror, a URL, or `defaults`."""

    entry: str
    use: bool = True
    private: bool = False  # a private channel of this mirror: reached through /t/<TOKEN>/

    @property
    def of_mirror(self) -> bool:
        return self.entry != "defaults" and "://" not in self.entry


def default_base_url(host: str, port: int) -> str:
    """Where clients reach cas-server when `public_url` is not set: a wildcard address is this
    machine's name."""
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn() or "localhost"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def base_url_of(settings: ClientSettings) -> str:
    return settings.public_url or default_base_url(settings.server_host, settings.server_port)


def is_loopback(url: str) -> bool:
    host = url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def client_channels(settings: ClientSettings, found: list[str]) -> list[ClientChannel]:
    """The clients' channels in the administrator's order, then the channels of the mirror the
    order leaves out (unused: the console offers them).

    With no `client_channels`: the mirrored channel, then every channel found under the mirror;
    private ones unused until chosen, since their users need a token.
    """
    private = set(settings.private_channels)
    listed = list(settings.client_channels)
    chosen = bool(listed)
    if not chosen:
        listed = [settings.channel_name, *found]
    channels: list[ClientChannel] = []
    seen: set[str] = set()
    for entry in [*listed, *found, *settings.private_channels]:
        if entry in seen:
            continue
        seen.add(entry)
        in_order = entry in listed
        use = in_order and (chosen or entry not in private)
        channels.append(ClientChannel(entry, use=use, private=entry in private))
    return channels


@dataclass
class Condarc:
    """What the clients' `.condarc` says; the console edits it in place before writing it."""

    base_url: str
    channels: list[ClientChannel]
    default_channels: list[str]  # entries, as in client_default_channels
    channel_alias: str | None = None  # None: base_url
    ssl_verify: bool | str = True
    proxy_servers: dict[str, str] | None = None
    mirrored: str = "pkgs"
    private: set[str] = field(default_factory=set)

    @classmethod
    def from_settings(cls, settings: ClientSettings, found: list[str] | None = None) -> Condarc:
        """From the settings; `found`: the channel folders under the mirror (looked up if None)."""
        if found is None:
            found = [p.name for p in find_channels(settings.mirror_dir)]
        private = set(settings.private_channels)
        return cls(
            base_url=base_url_of(settings),
            channels=client_channels(settings, found),
            default_channels=list(settings.client_default_channels) or [settings.channel_name],
            channel_alias=settings.client_channel_alias,
            ssl_verify=settings.client_ssl_verify,
            proxy_servers=dict(settings.client_proxy_servers) if settings.client_proxy_servers else None,
            mirrored=settings.channel_name,
            private=private,
        )

    # ---------------------------------------------------------------- URLs

    def url(self, entry: str) -> str:
        """What a channel entry becomes in the file: a mirror channel's URL, else the entry."""
        if entry == "defaults" or "://" in entry:
            return entry
        base = self.base_url.rstrip("/")
        return f"{base}/t/{TOKEN_PLACEHOLDER}/{entry}" if entry in self.private else f"{base}/{entry}"

    @property
    def used(self) -> list[ClientChannel]:
        return [c for c in self.channels if c.use]

    def data(self) -> dict[str, Any]:
        """The settings as conda reads them from the file."""
        data: dict[str, Any] = {
            "channels": [self.url(c.entry) for c in self.used],
            "default_channels": [self.url(e) for e in self.default_channels],
            "channel_alias": self.channel_alias or self.base_url.rstrip("/"),
            "ssl_verify": self.ssl_verify,
        }
        if self.proxy_servers:
            data["proxy_servers"] = dict(self.proxy_servers)
        return data

    # ---------------------------------------------------------------- the file

    def text(self, hide_secrets: bool = False) -> str:
        """The `.condarc` as YAML, with comments; `hide_secrets` for showing it on a screen."""
        shown = redact_url if hide_secrets else str
        data = self.data()
        base = self.base_url.rstrip("/")
        lines = [f"# .condarc for the users of the casconsole mirror at {shown(base)}"]
        lines += _list("channels", [shown(u) for u in data["channels"]], self._note)
        if all(_of_mirror(e) for e in self.default_channels):
            lines.append("# 'defaults' means the mirror, never the internet")
        lines += _list("default_channels", [shown(u) for u in data["default_channels"]], self._note)
        lines.append(f"channel_alias: {_scalar(shown(data['channel_alias']))}")
        lines.append(f"ssl_verify: {_scalar(data['ssl_verify'])}")
        if "proxy_servers" in data:
            lines.append("proxy_servers:")
            lines += [f"  {_scalar(k)}: {_scalar(shown(v))}" for k, v in data["proxy_servers"].items()]
        return "\n".join(lines) + "\n"

    def _note(self, url: str) -> str:
        return "  # private: put your token in" if f"/t/{TOKEN_PLACEHOLDER}/" in url else ""


def _of_mirror(entry: str) -> bool:
    return entry != "defaults" and "://" not in entry


def _list(key: str, items: list[str], note) -> list[str]:
    if not items:
        return [f"{key}: []"]
    return [f"{key}:"] + [f"  - {_scalar(item)}{note(item)}" for item in items]


def _scalar(value: Any) -> str:
    """`value` as one YAML scalar, quoted only where YAML needs it (a URL with `#` or `: `)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20, allow_unicode=True)
    return text.removesuffix("\n...\n").strip()
