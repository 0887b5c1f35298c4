"""The health URL, `/.well-known/cas/health`: the server is up, and how the last sync went.

A monitor (a load balancer, Nagios, a systemd timer with curl) asks cas-server rather than
logging in to run `cas-sync --status`. The answer is 200 with a small JSON document:

    {"status": "ok", "version": "0.1.0",
     "sync": {"state": "done", "started": "...Z", "finished": "...Z", "error": null,
              "packages": 1234, "downloaded": 12, "failed": 0, "removed": 1, "seconds": 8.2}}

`sync.state` is `none` (no sync has run), `running`, `interrupted` (its process is gone
without finishing), or how the last one finished (`done`, `failed`, `cancelled`, `error`).

It is read from the sync's status log (`<mirror_dir>/.cas/sync.jsonl`) here, not through
`sync/`: the server never imports the sync (docs/architecture.md). Only the `started` and
`finished` lines matter; the log is read backwards from its end the first time, then only
what was appended since, so a health check costs a stat while nothing changes.
"""

from __future__ import annotations

import json
import os
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from casconsole.layout import SYNC_LOG, state_dir
from casconsole.procutil import pid_alive

HEALTH_PATH = "/.well-known/cas/health"
_BLOCK = 1 << 20
_STARTED = b'{"event":"started"'
_FINISHED = b'{"event":"finished"'
_STATS = ("packages", "downloaded", "failed", "removed", "warnings", "seconds")


def package_version() -> str:
    try:
        return version("casconsole")
    except PackageNotFoundError:
        return "unknown"


def _iso(ts: Any) -> str | None:
    if not isinstance(ts, (int, float)):
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class Health:
    """The health document of one mirror, re-read when its status log changes."""

    def __init__(self, mirror_dir: Path):
        self.path = state_dir(mirror_dir) / SYNC_LOG
        self.version = package_version()
        self._inode: int | None = None
        self._offset = 0  # read up to here
        self._started: dict[str, Any] | None = None
        self._finished: dict[str, Any] | None = None

    def body(self) -> bytes:
        sync = self._sync()
        return json.dumps({"status": "ok", "version": self.version, "sync": sync}).encode() + b"\n"

    def _sync(self) -> dict[str, Any]:
        try:
            with open(self.path, "rb") as fh:
                st = os.fstat(fh.fileno())
                if st.st_ino != self._inode or st.st_size < self._offset:
                    self._inode, self._offset = st.st_ino, 0
                    self._started = self._finished = None
                    self._read_back(fh, st.st_size)
                elif st.st_size > self._offset:
                    fh.seek(self._offset)
                    self._take(fh.read(st.st_size - self._offset), self._offset)
        except FileNotFoundError:
            self._inode, self._offset, self._started, self._finished = None, 0, None, None
        except OSError as exc:
            return {"state": "unknown", "error": f"{self.path}: {exc.strerror}"}
        return self._summary()

    def _read_back(self, fh, size: int) -> None:
        """From the end backwards, a block at a time, until the last `started` line."""
        end = size
        # only whole lines: the last one may still be being written
        while end > 0 and self._started is None:
            start = max(0, end - _BLOCK)
            fh.seek(start)
            data = fh.read(end - start)
            if start > 0:
                cut = data.find(b"\n")
                if cut < 0:
                    end = start
                    continue
                start, data = start + cut + 1, data[cut + 1 :]
            self._take(data, start, backwards=True)
            end = start
        fh.seek(0, os.SEEK_END)

    def _take(self, data: bytes, at: int, backwards: bool = False) -> None:
        """Apply the `started` / `finished` lines of `data` (read from offset `at`)."""
        whole = data.rfind(b"\n") + 1
        if not backwards:
            self._offset = at + whole
        lines = data[:whole].split(b"\n")
        if backwards:
            lines.reverse()
            if not self._offset:
                self._offset = at + whole
        for line in lines:
            if line.startswith(_STARTED) or line.startswith(_FINISHED):
                try:
                    event = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a kill
                if not isinstance(event, dict):
                    continue
                if event.get("event") == "started":
                    if backwards:
                        self._started = event
                        return
                    self._started, self._finished = event, None
                elif backwards:
                    if self._finished is None:
                        self._finished = event
                else:
                    self._finished = event

    def _summary(self) -> dict[str, Any]:
        started, finished = self._started, self._finished
        if started is None:
            return {"state": "none"}
        out: dict[str, Any] = {
            "state": "running",
            "channel": started.get("channel"),
            "started": _iso(started.get("time")),
            "finished": None,
            "error": None,
        }
        if finished is None:
            if not pid_alive(started.get("pid")):
                out["state"] = "interrupted"
            return out
        stats = finished.get("stats") if isinstance(finished.get("stats"), dict) else {}
        out.update(state=finished.get("state"), finished=_iso(finished.get("time")))
        out["error"] = finished.get("error")
        out.update({key: stats.get(key) for key in _STATS})
        return out
