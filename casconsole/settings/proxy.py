"""The `proxy` setting's value: an http:// proxy URL, parsed once for every client."""

from __future__ import annotations

import base64
import urllib.parse
from dataclasses import dataclass

from casconsole.redact import redact_url


class ProxyError(ValueError):
    """The proxy setting is not a URL this client can use."""


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    authorization: str | None  # the Proxy-Authorization header, from the URL's user:password

    @classmethod
    def parse(cls, url: str) -> Proxy:
        parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            shown = redact_url(url)
            raise ProxyError(f"proxy: {shown!r} is not an http://host:port URL (the only kind supported)")
        try:
            port = parts.port or 80
        except ValueError:
            raise ProxyError(f"proxy: {redact_url(url)!r} has a bad port") from None
        authorization = None
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            authorization = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        return cls(parts.hostname, port, authorization)
