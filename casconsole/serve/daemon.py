"""A cas-server running detached (`cas-server --detach`): found, asked, followed and stopped.

`cas-server --detach` starts the server as its own session, as `cas-sync --detach` starts a sync,
so it outlives the console and the SSH session that started it. What a later look needs is kept
under `<mirror_dir>/.cas/`: `server.pid` (a small JSON document the server writes once it listens:
its pid, its URL, when it started, its access log), `server.out` (what it printed) and
`server-access.log` (one line a request, in the access log format of `serve/http.py`). The
console's Server screen reads these to show the server, ask its health URL, follow its access log
with requests per second and bytes, and stop it (SIGTERM: responses in flight are finished).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from casconsole.errors import ServerError
from casconsole.fsutil import atomic_write_bytes
from casconsole.layout import SERVER_ACCESS_LOG, SERVER_OUTPUT, SERVER_PID, state_dir
from casconsole.procutil import pid_alive
from casconsole.serve.health import HEALTH_PATH


def pid_path(mirror_dir: Path | str) -> Path:
    return state_dir(mirror_dir) / SERVER_PID


def output_path(mirror_dir: Path | str) -> Path:
    return state_dir(mirror_dir) / SERVER_OUTPUT


def access_log_path(mirror_dir: Path | str) -> Path:
    return state_dir(mirror_dir) / SERVER_ACCESS_LOG


@dataclass(frozen=True)
class ServerRecord:
    """What a detached server wrote about itself once it listened."""

    pid: int
    url: str
    started: float
    access_log: str = ""

    @property
    def alive(self) -> bool:
        return pid_alive(self.pid)


def write_record(mirror_dir: Path | str, url: str, access_log: str) -> None:
    """Called by the detached server once its sockets listen (the pid is its own)."""
    doc = {"pid": os.getpid(), "url": url, "started": time.time(), "access_log": access_log}
    atomic_write_bytes(pid_path(mirror_dir), json.dumps(doc).encode() + b"\n")


def remove_record(mirror_dir: Path | str) -> None:
    """Called by the detached server as it exits: only its own record goes."""
    record = read_record(mirror_dir)
    if record is not None and record.pid == os.getpid():
        with contextlib.suppress(OSError):
            pid_path(mirror_dir).unlink()


def read_record(mirror_dir: Path | str) -> ServerRecord | None:
    """The detached server's record, None when there is none or it cannot be read as one."""
    try:
        doc = json.loads(pid_path(mirror_dir).read_bytes())
        pid, url, started = doc["pid"], doc["url"], doc["started"]
        if not (isinstance(pid, int) and pid > 0 and isinstance(url, str) and isinstance(started, float)):
            return None
        return ServerRecord(pid, url, started, str(doc.get("access_log", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running(mirror_dir: Path | str) -> ServerRecord | None:
    """The detached server of this mirror if its process is alive."""
    record = read_record(mirror_dir)
    return record if record is not None and record.alive else None


def stop(mirror_dir: Path | str, timeout: float = 15.0) -> ServerRecord | None:
    """SIGTERM the detached server and wait until it is gone; the record stopped, None when no
    server ran. ServerError when it is another user's or outlives `timeout`."""
    record = running(mirror_dir)
    if record is None:
        return None
    try:
        os.kill(record.pid, signal.SIGTERM)
    except ProcessLookupError:
        return record
    except PermissionError:
        raise ServerError(f"cas-server (pid {record.pid}) belongs to another user") from None
    deadline = time.monotonic() + timeout
    while record.alive:
        if time.monotonic() > deadline:
            raise ServerError(f"cas-server (pid {record.pid}) did not stop within {timeout:.0f} s")
        time.sleep(0.05)
    with contextlib.suppress(OSError):
        if read_record(mirror_dir) == record:
            pid_path(mirror_dir).unlink()
    return record


# ---------------------------------------------------------------- health


@dataclass
class HealthAnswer:
    """What the health URL said (or why it said nothing)."""

    ok: bool
    text: str  # one line for a person
    document: dict[str, Any] = field(default_factory=dict)


HEALTH_AGENT = "casconsole-health"  # the console's own checks: left out of its traffic figures


def ask_health(url: str, timeout: float = 2.0) -> HealthAnswer:
    """GET `<url>/.well-known/cas/health` (a wildcard address asked on the loopback)."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if parts.scheme == "https":
        import ssl

        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # our own server, asked locally
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, port, timeout=timeout, context=context
        )
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    where = f"{parts.scheme}://{host}:{port}{HEALTH_PATH}"
    try:
        connection.request("GET", HEALTH_PATH, headers={"User-Agent": HEALTH_AGENT})
        response = connection.getresponse()
        body = response.read(64 * 1024)
    except OSError as exc:
        return HealthAnswer(False, f"no answer at {where} ({exc.strerror or exc})")
    except http.client.HTTPException as exc:
        return HealthAnswer(False, f"{where} answers, but not HTTP ({type(exc).__name__})")
    finally:
        connection.close()
    if response.status != 200:
        return HealthAnswer(False, f"{where}: HTTP {response.status}")
    try:
        document = json.loads(body)
        status = document["status"]
        sync = document.get("sync") or {}
    except (ValueError, KeyError, TypeError):
        return HealthAnswer(False, f"{where}: not a cas-server health document")
    text = f"{status} (cas-server {document.get('version', '?')}); last sync: {sync.get('state', '?')}"
    return HealthAnswer(status == "ok", text, document)


# ---------------------------------------------------------------- the access log

# the line serve/http.py writes: addr - - [stamp] "request" status bytes "referer" "agent" seconds
_ACCESS_LINE = re.compile(
    r'^(?P<addr>\S+) - - \[(?P<stamp>[^\]]*)\] "(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+) '
    r'"(?P<referer>[^"]*)" "(?P<agent>[^"]*)" (?P<seconds>[\d.]+)$'
)
_OWN = f'"{HEALTH_AGENT}"'.encode()


@dataclass(frozen=True)
class AccessLine:
    addr: str
    stamp: str
    request: str
    status: int
    sent: int
    seconds: float

    @property
    def time(self) -> str:
        """The clock time of the stamp (`02/Dec/2026:01:02:03 +0000` -> `01:02:03`)."""
        return self.stamp.split(":", 1)[1].split(" ")[0] if ":" in self.stamp else self.stamp


def parse_access_line(line: str) -> AccessLine | None:
    match = _ACCESS_LINE.match(line)
    if match is None:
        return None
    return AccessLine(
        match["addr"],
        match["stamp"],
        match["request"],
        int(match["status"]),
        int(match["bytes"]),
        float(match["seconds"]),
    )


class AccessTail:
    """Follows an access log: the last lines, requests and bytes per second over a window.

    Each `poll()` reads what was appended since the last (a truncated or replaced file is read
    from its start); the rate counts the lines that arrived in the last `window` seconds, which
    is what a server writing its lines every fraction of a second makes of "per second".
    """

    def __init__(self, path: Path, keep: int = 200, window: float = 10.0, start_at_end: bool = True):
        self.path = path
        self.lines: deque[AccessLine] = deque(maxlen=keep)
        self.window = window
        self.requests = 0  # since following began
        self.bytes = 0
        self.errors = 0  # answers of 5xx
        self._arrivals: deque[tuple[float, int]] = deque()  # (monotonic time, bytes) of recent lines
        self._offset: int | None = None if start_at_end else 0
        self._inode: int | None = None
        self._tail = b""
        self._skip_partial = False
        self._history = start_at_end  # the first look's lines: shown, not counted as traffic
        self.added = 0  # lines ever added, so a follower can tell which are new

    def poll(self, now: float | None = None) -> bool:
        """Read what was appended; whether any request came (the first look's lines are kept in
        `lines` as what came before, not counted)."""
        now = time.monotonic() if now is None else now
        try:
            with open(self.path, "rb") as fh:
                st = os.fstat(fh.fileno())
                if self._offset is None:  # the first look: only what comes from now on, plus a little
                    self._offset = max(0, st.st_size - 8192)
                    self._inode = st.st_ino
                    self._skip_partial = self._offset > 0
                if st.st_ino != self._inode or st.st_size < self._offset:
                    self._offset, self._tail, self._inode = 0, b"", st.st_ino
                fh.seek(self._offset)
                data = fh.read(4 << 20)
        except OSError:  # not there yet, or unreadable: nothing new
            data = b""
        self._offset = (self._offset or 0) + len(data)
        data = self._tail + data
        raw = data.split(b"\n")
        self._tail = raw.pop()
        if self._skip_partial and raw:
            raw = raw[1:]  # the first line read from the middle of the file is a part of one
            self._skip_partial = False
        history, self._history = self._history, False
        came = 0
        for item in raw:
            if item.endswith(_OWN, 0, item.rfind(b" ")):
                continue  # the console asking for health, not a client
            line = parse_access_line(item.decode("utf-8", "replace"))
            if line is None:
                continue
            self.lines.append(line)
            self.added += 1
            if history:  # requests from before this look: context for the reader, not traffic now
                continue
            self.requests += 1
            self.bytes += line.sent
            self.errors += line.status >= 500
            self._arrivals.append((now, line.sent))
            came += 1
        while self._arrivals and self._arrivals[0][0] < now - self.window:
            self._arrivals.popleft()
        return came > 0

    def rate(self) -> tuple[float, float]:
        """(requests per second, bytes per second) over the window."""
        n = len(self._arrivals)
        return n / self.window, sum(b for _, b in self._arrivals) / self.window
