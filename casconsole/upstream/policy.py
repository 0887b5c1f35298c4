"""The network policy: how every request to an upstream is made, from one place.

A `NetworkPolicy` holds what the settings say about the network (timeout, retries,
`ssl_verify`, `proxy`) and builds every client from it: the connections of `upstream/http.py`
that fetch the repodata and the package files, and the httpx client the installer uses. All
trust the same certificates (one TLS context, made when a first https URL needs it) and go
through the same proxy.

Environment variables: none is read here. `HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY`,
`SSL_CERT_FILE` and the like are ignored by every client, so the dry run, the console and the
sync (run from cron or systemd, with another environment) always reach upstream the same way.
The settings are the one place: `proxy` and `ssl_verify`, which `CAS_MIRROR_PROXY` and
`CAS_MIRROR_SSL_VERIFY` set like any key.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from casconsole.settings.proxy import Proxy
from casconsole.upstream.http import USER_AGENT, Connections, LazyTLS

if TYPE_CHECKING:  # httpx is imported where a metadata client is made: download workers never need it
    import httpx

BACKOFF_BASE = 0.5  # seconds before the first retry; doubled each time, capped
BACKOFF_CAP = 30.0
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class NetworkPolicy:
    """How to reach upstream; plain values, so it travels to the download workers as it is."""

    timeout: float = 60.0  # seconds without progress before a request fails
    retries: int = 3  # attempts after the first, for a file or a repodata
    ssl_verify: bool | str = True  # true, false, or a CA bundle path
    proxy: str | None = None  # http://[user:password@]host:port

    @classmethod
    def of(cls, settings) -> NetworkPolicy:
        return cls(settings.timeout, settings.retries, settings.ssl_verify, settings.proxy)

    def parsed_proxy(self) -> Proxy | None:
        return Proxy.parse(self.proxy) if self.proxy else None

    def tls(self) -> LazyTLS:
        """A TLS context made on first use, to share among the connections of one process."""
        return LazyTLS(self.ssl_verify)

    def connections(self, tls: Callable | None = None) -> Connections:
        """One thread's kept-alive connections: the repodata and the package files."""
        return Connections(self.timeout, tls or self.tls(), self.parsed_proxy())

    def metadata_client(self, tls: LazyTLS | None = None) -> httpx.Client:
        """An httpx client for metadata other than the repodata (the installer's), redirects followed."""
        import httpx

        verify = (tls or self.tls())() if self.ssl_verify is not False else False
        return httpx.Client(
            timeout=httpx.Timeout(self.timeout),
            verify=verify,
            proxy=self.proxy,
            trust_env=False,  # the settings are the one place: see the module's docstring
            follow_redirects=True,
            headers={"User-Agent": USER_AGENT},
        )

    @staticmethod
    def backoff(attempt: int) -> float:
        """Seconds to wait after failed attempt `attempt` (1 = the first), with jitter."""
        return min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)
