"""Taking the solved packages: read in place from a channel on disk, or downloaded over HTTP
through the settings' network policy; every file checked against its record's size and hash
(sha256, else md5) before it is used. A download cut short, reset, answered with a 5xx or with
the wrong bytes is tried again (the policy's retries, with backoff); then the build fails."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from casconsole.errors import Cancelled, CasError
from casconsole.installer.channels import mask_token
from casconsole.installer.solve import Chosen
from casconsole.upstream.policy import RETRY_STATUSES, Again, NetworkPolicy
from casconsole.upstream.screen import refuse_name

if TYPE_CHECKING:
    import httpx

CHUNK = 1 << 20


class PackageError(CasError):
    """A solved package that cannot be had, or is not what its record says."""


@dataclass(frozen=True)
class Taken:
    """A package file, checked: where it is, its hashes and how many bytes came over the network."""

    path: Path
    size: int
    sha256: str
    md5: str
    downloaded: int = 0


def take_package(
    chosen: Chosen,
    workdir: Path,
    policy: NetworkPolicy,
    client: httpx.Client | None,
    cancel: threading.Event | None = None,
) -> Taken:
    """The checked package file of `chosen` (downloaded into `workdir` when it is remote)."""
    reason = refuse_name(chosen.fn)
    if reason is not None:
        raise PackageError(f"{chosen.channel.shown}/{chosen.subdir}: refused {chosen.fn!r}: {reason}")
    if not (chosen.sha256 or chosen.md5):
        raise PackageError(f"{mask_token(chosen.url)}: its record has no sha256 or md5 to check it by")
    parts = urllib.parse.urlsplit(chosen.url)
    if parts.scheme == "file":
        path = Path(urllib.parse.unquote(parts.path))
        try:
            taken = _check(path, _hash_file(path, cancel), chosen)
        except Again as exc:
            raise PackageError(str(exc)) from None
        except OSError as exc:
            raise PackageError(f"{path}: cannot read ({exc.strerror or exc})") from None
        return taken
    if client is None:
        raise PackageError(f"{mask_token(chosen.url)}: no HTTP client")
    return _download(chosen, workdir / chosen.fn, policy, client, cancel or threading.Event())


def _hash_file(path: Path, cancel: threading.Event | None) -> tuple[int, str, str]:
    sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            if cancel is not None and cancel.is_set():
                raise Cancelled
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest(), md5.hexdigest()


def _check(path: Path, got: tuple[int, str, str], chosen: Chosen, downloaded: int = 0) -> Taken:
    size, sha256, md5 = got
    where = mask_token(chosen.url)
    if chosen.size is not None and size != chosen.size:
        raise Again(f"{where}: {size:,} bytes, its record says {chosen.size:,}")
    if chosen.sha256 and sha256 != chosen.sha256.lower():
        raise Again(f"{where}: sha256 {sha256}, its record says {chosen.sha256}")
    if not chosen.sha256 and chosen.md5 and md5 != chosen.md5.lower():
        raise Again(f"{where}: md5 {md5}, its record says {chosen.md5}")
    return Taken(path, size, sha256, md5, downloaded)


def _download(
    chosen: Chosen, target: Path, policy: NetworkPolicy, client: httpx.Client, cancel: threading.Event
) -> Taken:
    def once() -> Taken:
        try:
            return _download_once(chosen, target, client, cancel, policy)
        except Again:
            with contextlib.suppress(OSError):  # what a failed attempt wrote: the next starts over
                target.unlink()
            raise

    return policy.retrying(once, cancel, PackageError)


def _download_once(
    chosen: Chosen, target: Path, client: httpx.Client, cancel: threading.Event, policy: NetworkPolicy
) -> Taken:
    import httpx

    where = mask_token(chosen.url)
    sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
    try:
        with client.stream("GET", chosen.url) as response, target.open("wb") as out:
            if response.status_code in RETRY_STATUSES:
                raise Again(f"{where}: HTTP {response.status_code}")
            if response.status_code != 200:
                raise PackageError(f"{where}: HTTP {response.status_code}")
            for chunk in response.iter_raw():  # as it comes: a cancel is seen within a read
                if cancel.is_set():
                    raise Cancelled
                out.write(chunk)
                sha.update(chunk)
                md5.update(chunk)
                size += len(chunk)
    except httpx.TimeoutException:
        raise Again(f"{where}: timed out (no data for {policy.timeout:g} s)") from None
    except httpx.HTTPError as exc:
        raise Again(f"{where}: {exc or type(exc).__name__}") from None
    except OSError as exc:
        raise PackageError(f"{target}: cannot write ({exc.strerror or exc})") from None
    return _check(target, (size, sha.hexdigest(), md5.hexdigest()), chosen, size)
