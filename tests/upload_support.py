"""Helpers of the upload tests: real packages, a mirror with upload tokens, raw PUTs, the tree."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from test_server_support import PRIVATE, cli, server_env

from casconsole.conda.archive import PackageSpec, build_package

PUBLIC = "team-pkgs"  # a public channel that takes uploads


def package(folder: Path, name: str, version: str = "1.0", build: str = "h0_0", subdir: str = "linux-64",
            fmt: str = ".conda", payload: bytes | None = None, **extra) -> Path:  # fmt: skip
    """A real package built for `subdir`, with a small payload (`payload` makes other bytes)."""
    files = {f"share/{name}/data.txt": payload if payload is not None else f"{name} {version}\n".encode()}
    return build_package(folder, PackageSpec(name, version, build, subdir=subdir, files=files, **extra), fmt)


def upload_mirror(root: Path) -> Path:
    """A mirror: the mirrored channel `pkgs`, the private PRIVATE, nothing else yet."""
    (root / "pkgs" / "noarch").mkdir(parents=True)
    (root / "pkgs" / "noarch" / "repodata.json").write_text('{"info": {"subdir": "noarch"}, "packages": {}}')
    (root / PRIVATE / "noarch").mkdir(parents=True)
    return root


def add_token(mirror: Path, channel: str, upload: bool = True) -> str:
    result = cli("token", "add", channel, "--root", str(mirror), *(["--upload"] if upload else []))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def cas_upload(*args: str, env: dict[str, str] | None = None, timeout: float = 120):
    """cas-upload as a user runs it (stderr not a terminal: a line per file)."""
    return subprocess.run(
        [sys.executable, "-m", "casconsole.cli.upload", *args],
        capture_output=True,
        text=True,
        env={**server_env(), **(env or {})},
        timeout=timeout,
    )


def put_raw(port: int, target: str, body: bytes, headers: bytes = b"", timeout: float = 30) -> bytes:
    """One PUT with `body` as Content-Length'd bytes; the whole answer, until the server closes."""
    head = (
        f"PUT {target} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\nConnection: close\r\n".encode()
        + headers
        + b"\r\n"
    )
    return exchange(port, head + body, timeout)


def exchange(port: int, data: bytes, timeout: float = 30) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the body: the answer is still there to read
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
    return out


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def tree(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every file under `root` (relative path -> size, mtime) and folder (-> None): what a refused
    upload must leave as it was. The server's own gzip cache is left out."""
    found: dict[str, tuple[int, int] | None] = {}
    for folder, dirs, files in os.walk(root):
        rel = os.path.relpath(folder, root)
        for name in dirs:
            found[os.path.normpath(os.path.join(rel, name))] = None
        for name in files:
            try:
                st = os.lstat(os.path.join(folder, name))
            except FileNotFoundError:  # the server removing a refused upload's temporary file as we look
                found[os.path.normpath(os.path.join(rel, name))] = (-1, -1)
                continue
            found[os.path.normpath(os.path.join(rel, name))] = (st.st_size, st.st_mtime_ns)
    cache = os.path.join(".cas", "cache")
    return {path: value for path, value in found.items() if not path.startswith(cache)}
