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
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from casconsole.errors import Cancelled
from casconsole.settings.proxy import Proxy
from casconsole.upstream.http import USER_AGENT, Connections, LazyTLS

if TYPE_CHECKING:  # httpx is imported where a metadata client is made: download workers never need it
    import httpx

BACKOFF_BASE = 0.5  # seconds before the first retry; doubled each time, capped
BACKOFF_CAP = 30.0
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
T = TypeVar("T")


class Again(Exception):
    """A failure another attempt may cure: a timeout, a reset, a truncated body, a 5xx, 408 or
    429, bytes that do not match their record."""


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

    def again(self, url: str, exc: Exception, cancel: threading.Event) -> Exception:
        """What a read of `url` through upstream/http.py that timed out or broke (TimeoutError,
        TransferError) is: the cancel when one came with it, else an `Again` naming it."""
        if cancel.is_set():
            return Cancelled()
        if isinstance(exc, TimeoutError):
            return Again(f"{url}: timed out (no data for {self.timeout:g} s)")
        return Again(f"{url}: {exc}")

    def retrying(
        self,
        once: Callable[[], T],
        cancel: threading.Event,
        failed: Callable[[str], Exception],
        on_retry: Callable[[str, float], None] | None = None,
    ) -> T:
        """`once()` until it returns, tried again after an `Again` as the policy says (`retries`
        more times, waiting `backoff`); then `failed(message)` is raised, the message naming the
        attempts. `on_retry(reason, delay)` hears of each retry; `cancel` stops the waits, and a
        failure that comes with a cancel is the cancel (Cancelled)."""
        attempt = 0
        while True:
            attempt += 1
            if cancel.is_set():
                raise Cancelled
            try:
                return once()
            except Again as exc:
                if cancel.is_set():  # the failure was the abort
                    raise Cancelled from None
                if attempt > self.retries:
                    raise failed(f"{exc} (after {attempt} attempt{'s' * (attempt > 1)})") from None
                delay = self.backoff(attempt)
                if on_retry is not None:
                    on_retry(str(exc), delay)
                if cancel.wait(delay):
                    raise Cancelled from None
