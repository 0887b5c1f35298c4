"""Helpers for the cas-server tests: a real server in a subprocess, raw HTTP on a socket."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

PRIVATE = "internal-pkgs"


def make_mirror(root: Path) -> Path:
    """A small mirror: a public channel, a private one, a hidden .cas folder, files of all sizes."""
    sub = root / "pkgs" / "linux-64"
    sub.mkdir(parents=True)
    (root / "pkgs" / "noarch").mkdir()
    records = {
        f"pkg{i}-1.0-0.tar.bz2": {"name": f"pkg{i}", "version": "1.0", "build": "0", "depends": []}
        for i in range(2000)
    }
    (sub / "repodata.json").write_text(json.dumps({"info": {"subdir": "linux-64"}, "packages": records}))
    (sub / "repodata.json.zst").write_bytes(b"\x28\xb5\x2f\xfd" + b"zst" * 100)
    (sub / "small-1.0-0.tar.bz2").write_bytes(bytes(range(256)) * 80)  # 20 KB
    (sub / "big-1.0-0.conda").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (root / "pkgs" / "noarch" / "repodata.json").write_text('{"packages": {}}')
    priv = root / PRIVATE / "noarch"
    priv.mkdir(parents=True)
    (priv / "repodata.json").write_text('{"info": {"subdir": "noarch"}, "packages": {}}')
    (priv / "secret-1.0-0.tar.bz2").write_bytes(b"private package bytes")
    (root / ".cas").mkdir()
    (root / ".cas" / "tokens.json").write_text('{"version": 1, "tokens": []}')
    (sub / ".repodata.json.abc.part").write_text("half written")
    return root


def server_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAS_MIRROR_")}
    env["CAS_MIRROR_SYSTEM_CONFIG"] = "/nonexistent/cas-mirror-system"
    env["CAS_MIRROR_USER_CONFIG"] = "/nonexistent/cas-mirror-user"
    env.update(extra)
    return env


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60):
    return subprocess.run(
        [sys.executable, "-m", "casconsole.cli.server", *args],
        capture_output=True,
        text=True,
        env=env or server_env(),
        timeout=timeout,
    )


class Server:
    """`cas-server` on 127.0.0.1 port 0 in a subprocess; the URL comes from its start line."""

    def __init__(self, root: Path, *args: str, workers: int = 2, private: str = PRIVATE, log=None, env=None):
        self.log = Path(log) if log else root.parent / f"access-{id(self)}.log"
        cmd = [
            sys.executable, "-m", "casconsole.cli.server", "--root", str(root), "--port", "0",
            "--workers", str(workers), "--access-log", str(self.log), *args,
        ]  # fmt: skip
        env = server_env(CAS_MIRROR_PRIVATE_CHANNELS=private, **(env or {}))
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()
        first = self.next_line(timeout=30)
        while first is not None and "warning:" in first:  # e.g. a private channel without a folder
            first = self.next_line(timeout=30)
        match = re.search(r" at (https?://\S+?)/? \(", first or "")
        if not match:
            self.proc.kill()
            raise AssertionError(f"cas-server did not start: {first!r} {self.stderr}")
        self.url = match.group(1)
        self.port = int(self.url.rsplit(":", 1)[1])

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.stderr.append(line)
            self.lines.put(line)

    def next_line(self, timeout: float) -> str | None:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def log_lines(self, count: int, timeout: float = 5) -> list[str]:
        """The access log once it has at least `count` lines (it is flushed every 0.2 s)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.log.read_text().splitlines() if self.log.exists() else []
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def raw(port: int, request: bytes, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Send `request` as is on a new connection; read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def get(port: int, target: bytes, headers: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    return raw(port, b"GET " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + headers + b"\r\n")
