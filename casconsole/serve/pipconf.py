"""The `pip.conf` the mirror's users need for its PyPI side: written by `cas-server --pip-conf`
and shown by the console's Clients screen, from the same settings as the `.condarc`.

pip then looks in the mirror's simple index only (`index-url`), never the internet. Over plain
http, pip wants the host named in `trusted-host`. Private projects (`pypi.private_projects`) are
reached through `/t/<TOKEN>/pypi/simple/`: the file shows that form where it is needed.
"""

from __future__ import annotations

import urllib.parse
from typing import Protocol

from casconsole.layout import PYPI_DIR, PYPI_SIMPLE
from casconsole.redact import redact_url
from casconsole.serve.condarc import TOKEN_PLACEHOLDER, ClientSettings, base_url_of, is_loopback


class PipSettings(ClientSettings, Protocol):
    pypi: object  # casconsole.settings.PypiSettings: private_projects


def simple_url(base: str, token: str | None = None) -> str:
    base = base.rstrip("/")
    return f"{base}/t/{token}/{PYPI_DIR}/{PYPI_SIMPLE}/" if token else f"{base}/{PYPI_DIR}/{PYPI_SIMPLE}/"


def pip_conf(settings: PipSettings, base_url: str | None = None, hide_secrets: bool = False) -> str:
    """The file's text; `base_url` as the Clients screen edits it (else the settings')."""
    base = (base_url or base_url_of(settings)).rstrip("/")
    shown = redact_url(base) if hide_secrets else base
    private = list(getattr(settings.pypi, "private_projects", []))
    whole_private = PYPI_DIR in settings.private_channels
    lines = [f"# pip.conf for the users of the casconsole mirror at {shown}",
             "# (~/.config/pip/pip.conf, or /etc/pip.conf for every user)",
             "[global]"]  # fmt: skip
    if whole_private:
        lines.append(f"index-url = {simple_url(shown, TOKEN_PLACEHOLDER)}")
        lines.append("# private: put your token in")
    else:
        lines.append(f"index-url = {simple_url(shown)}")
        if private:
            lines.append(f"# private projects ({', '.join(private)}): with a token, instead")
            lines.append(f"# index-url = {simple_url(shown, TOKEN_PLACEHOLDER)}")
    parts = urllib.parse.urlsplit(base)
    if parts.scheme == "http" and parts.hostname and not is_loopback(base):
        lines.append(f"trusted-host = {parts.hostname}")
    ssl_verify = settings.client_ssl_verify
    if isinstance(ssl_verify, str) and parts.scheme == "https":
        lines.append(f"cert = {ssl_verify}")
    return "\n".join(lines) + "\n"
