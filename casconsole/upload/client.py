"""cas-upload's core: conda packages PUT into a channel of a cas-server, streamed, with progress.

Each file is read locally first (its `info/index.json` says its subdir, and its name-version-build
must be its file name), so a mistake is found before a byte is sent; then it is streamed to
`<server>/t/<token>/<channel>/<subdir>/<file>` with its Content-Length (the server refuses one
too large before it is sent), and the server's answer says what happened: created, replaced,
unchanged (the same bytes were there), or why not. The server indexes the subdir before it
answers, so a package reported uploaded is installable at once.

As for every client of casconsole, no proxy or CA-bundle variable is read (HTTPS_PROXY,
SSL_CERT_FILE): the arguments say where and how. The one variable read is CAS_UPLOAD_TOKEN, the
token when `--token` is not given (a token in argv shows in `ps` and in shell history).
"""

from __future__ import annotations

import json
import os
import ssl
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from casconsole.conda.archive import ArchiveError, read_index_json
from casconsole.errors import EXIT_USAGE, CasError
from casconsole.events import Event, Sink, null_sink
from casconsole.layout import KNOWN_SUBDIRS, split_package_name
from casconsole.redact import redact_url

if TYPE_CHECKING:  # imported where a client is made: importing httpx loads rich (its command line)
    import httpx

CHUNK = 256 * 1024
OK_OUTCOMES = ("created", "replaced", "unchanged")


class UploadError(CasError):
    """Files that cannot be uploaded as given (nothing was sent), or a server never reached."""

    exit_status = EXIT_USAGE


@dataclass(frozen=True)
class UploadStarted(Event):
    kind = "upload_started"
    fn: str
    subdir: str
    size: int


@dataclass(frozen=True)
class UploadProgress(Event):
    kind = "upload_progress"
    fn: str
    sent: int  # bytes of this file sent so far
    size: int


@dataclass(frozen=True)
class UploadSent(Event):
    """Every byte is sent: the server now checks the package and indexes its subdir."""

    kind = "upload_sent"
    fn: str


@dataclass(frozen=True)
class UploadFinished(Event):
    kind = "upload_finished"
    fn: str
    subdir: str
    outcome: str  # created, replaced, unchanged, or failed
    message: str  # the server's reason when it failed; the index's size when not
    seconds: float


@dataclass(frozen=True)
class Package:
    """A local package file and where it goes."""

    path: Path
    subdir: str
    size: int

    @property
    def fn(self) -> str:
        return self.path.name


@dataclass
class UploadResult:
    package: Package
    outcome: str  # created, replaced, unchanged, or failed
    status: int  # the HTTP status (0: no answer)
    message: str
    history: str | None = None  # where the server kept the bytes it replaced


@dataclass
class UploadStats:
    results: list[UploadResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[UploadResult]:
        return [r for r in self.results if r.outcome not in OK_OUTCOMES]

    @property
    def bytes_sent(self) -> int:
        return sum(r.package.size for r in self.results if r.outcome in ("created", "replaced"))


def check_files(paths: Sequence[Path], subdir: str | None = None) -> list[Package]:
    """Every file read locally: UploadError naming each one that cannot be uploaded."""
    problems, packages = [], []
    seen: dict[str, Path] = {}
    for path in paths:
        try:
            packages.append(_package(Path(path), subdir))
        except UploadError as exc:
            problems.append(str(exc))
            continue
        if path.name in seen:
            problems.append(f"{path}: the same file name as {seen[path.name]}")
        seen[path.name] = path
    if problems:
        raise UploadError("\n".join(problems))
    return packages


def _package(path: Path, subdir: str | None) -> Package:
    stem = split_package_name(path.name)
    if stem is None:
        raise UploadError(f"{path}: not a conda package file name (NAME-VERSION-BUILD.conda or .tar.bz2)")
    try:
        size = path.stat().st_size
        index = read_index_json(path)
    except FileNotFoundError:
        raise UploadError(f"{path}: no such file") from None
    except ArchiveError as exc:
        inner = _inner_name(path)
        if inner is not None and inner != stem[0]:
            raise UploadError(f"{path}: it was built as {inner}, not {stem[0]} (renamed?)") from None
        raise UploadError(f"{path}: {exc.message.split(': ', 1)[-1]}") from None
    except OSError as exc:
        raise UploadError(f"{path}: {exc.strerror or exc}") from None
    says = "-".join(str(index.get(key)) for key in ("name", "version", "build"))
    if says != stem[0]:
        raise UploadError(f"{path}: its info/index.json names it {says}, not {stem[0]}")
    built_for = index.get("subdir")
    if subdir is not None and built_for not in (None, subdir):
        raise UploadError(f"{path}: built for {built_for}, not {subdir}")
    chosen = subdir or built_for
    if not isinstance(chosen, str) or chosen not in KNOWN_SUBDIRS:
        raise UploadError(f"{path}: its info/index.json names no known subdir; give --subdir")
    return Package(path, chosen, size)


def _inner_name(path: Path) -> str | None:
    """The name a `.conda` was built as (its one `info-<name>.tar.zst` member), if it has one."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.startswith("info-") and n.endswith(".tar.zst")]
    except (OSError, zipfile.BadZipFile):
        return None
    return names[0][len("info-") : -len(".tar.zst")] if len(names) == 1 else None


def tls_verify(value: bool | str) -> bool | ssl.SSLContext:
    """`--ssl-verify`: true, false, or a CA bundle file."""
    if isinstance(value, bool):
        return value
    try:
        return ssl.create_default_context(cafile=value)
    except (OSError, ssl.SSLError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise UploadError(f"--ssl-verify {value}: not a CA bundle ({why})") from None


def upload_packages(
    packages: Sequence[Package],
    server: str,
    channel: str,
    token: str,
    *,
    force: bool = False,
    timeout: float = 300.0,
    verify: bool | ssl.SSLContext = True,
    sink: Sink = null_sink,
) -> UploadStats:
    """PUT each package to the server, one after the other; a refused one does not stop the
    others. Returns what happened to each (UploadError only when the server cannot be reached)."""
    import httpx

    started = time.perf_counter()
    stats = UploadStats()
    base = f"{server.rstrip('/')}/t/{quote(token, safe='')}/{quote(channel, safe='')}"
    limits = httpx.Timeout(timeout, connect=min(timeout, 30.0))
    headers = {"User-Agent": "cas-upload"}
    with httpx.Client(timeout=limits, verify=verify, trust_env=False, headers=headers) as client:
        for package in packages:
            url = f"{base}/{package.subdir}/{quote(package.fn, safe='')}" + ("?force=1" if force else "")
            sink(UploadStarted(package.fn, package.subdir, package.size))
            began = time.perf_counter()
            result = _put(client, url, package, sink)
            stats.results.append(result)
            seconds = time.perf_counter() - began
            sink(UploadFinished(package.fn, package.subdir, result.outcome, result.message, seconds))
    stats.seconds = time.perf_counter() - started
    return stats


def _body(package: Package, sink: Sink) -> Iterator[bytes]:
    sent = 0
    with open(package.path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk
            sent += len(chunk)
            sink(UploadProgress(package.fn, sent, package.size))
    sink(UploadSent(package.fn))


def _put(client: httpx.Client, url: str, package: Package, sink: Sink) -> UploadResult:
    import httpx

    shown = redact_url(url)
    try:
        resp = client.put(url, content=_body(package, sink), headers={"Content-Length": str(package.size)})
    except httpx.ConnectError as exc:
        raise UploadError(f"{redact_url(url.split('/t/')[0])}: cannot connect ({_why(exc)})", 1) from None
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
        # the server answered before the body was sent and closed (a refusal whose answer was
        # lost): ask again with no body, which is judged by the same rules
        return _why_refused(client, url, package) or UploadResult(
            package, "failed", 0, f"{shown}: the server closed the connection during the upload ({_why(exc)})"
        )
    except httpx.TimeoutException:
        return UploadResult(package, "failed", 0, f"{shown}: no answer in time (--timeout)")
    except OSError as exc:
        return UploadResult(package, "failed", 0, f"{package.path}: {exc.strerror or exc}")
    return _result(package, resp)


def _why_refused(client: httpx.Client, url: str, package: Package) -> UploadResult | None:
    import httpx

    try:
        resp = client.put(url, content=b"")
    except httpx.HTTPError:
        return None
    if resp.status_code == 400 and "the body is empty" in resp.text:
        # everything but the body was fine: it was too large, or the server could not store it
        return UploadResult(
            package, "failed", 0,
            f"{package.subdir}/{package.fn}: the server stopped the upload: larger than its "
            "upload_max_size, or no space left (see its log)",
        )  # fmt: skip
    return _result(package, resp)


def _result(package: Package, resp: httpx.Response) -> UploadResult:
    if resp.status_code in (200, 201):
        try:
            doc = json.loads(resp.content)
            outcome = str(doc["status"])
            packages = int(doc["packages"])
        except (ValueError, KeyError, TypeError):
            return UploadResult(package, "failed", resp.status_code, "the server's answer is not understood")
        history = doc.get("history") if isinstance(doc.get("history"), str) else None
        message = f"{packages} package{'s' if packages != 1 else ''} in {package.subdir}"
        if history:
            message += f"; the old file kept as {history}"
        return UploadResult(package, outcome, resp.status_code, message, history)
    text = resp.text.strip().splitlines()[0] if resp.text.strip() else f"{resp.status_code}"
    text = text[:300]
    if resp.status_code == 404:
        text += ": no such channel, or not with this token"
    return UploadResult(package, "failed", resp.status_code, f"{package.subdir}/{package.fn}: {text}")


def _why(exc: Exception) -> str:
    cause = exc.__context__ or exc.__cause__
    return str(getattr(cause, "strerror", None) or exc or type(exc).__name__)


def token_from(value: str | None, env: dict[str, str] | None = None) -> str:
    """The token: `--token`, else CAS_UPLOAD_TOKEN (which keeps it out of `ps` and shell history)."""
    env = dict(os.environ) if env is None else env
    token = value or env.get("CAS_UPLOAD_TOKEN", "")
    if not token.strip():
        raise UploadError("give the token: --token T, or the variable CAS_UPLOAD_TOKEN")
    return token.strip()
