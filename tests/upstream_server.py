"""A loopback conda upstream for tests: real files over real HTTP(S), with faults on request.

`Upstream(root)` serves the directory `root` on 127.0.0.1 (an ephemeral port) from a
background thread. Without faults it behaves like a CDN: GET and HEAD, byte ranges, ETag and
Last-Modified with 304s (aiohttp's file response, sendfile included). Faults are queued per
path and consumed one per request, so "fails twice, then works" is
`upstream.inject("linux-64/a.conda", Fault.status(503), Fault.reset())`:

- `Fault.status(code)`     answer with that HTTP status and no file
- `Fault.reset()`          read the request, then drop the connection with a TCP reset
- `Fault.truncate(n)`      announce the full length, send `n` bytes, close
- `Fault.reset_after(n)`   announce the full length, send `n` bytes, wait a moment, reset
- `Fault.wrong_bytes()`    the full length, one byte in the middle flipped
- `Fault.stall(seconds)`   send half the file, then go silent for `seconds`
- `Fault.slow(bps)`        send the whole file paced at `bps` bytes a second

`upstream.ranges = False` makes it ignore Range headers (answering 200 with the whole file),
as some servers do; `upstream.gzip_json = True` sends `.json` files gzip-encoded and chunked (no
Content-Length), as web servers that compress on the fly do; `upstream.redirects[path] = url`
answers `path` with a 302 to `url`. `upstream.requests` lists every request seen (method, path,
Range, and the client's address: one per connection).
`make_channel(root, {subdir: [PackageSpec, ...]})` writes real archives and their repodata;
`ForwardProxy()` is a plain HTTP proxy that records what it forwarded; `mirror_problems(...)`
lists what breaks a sync's promises in a mirrored channel.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import hashlib
import http.client
import http.server
import random
import re
import select
import socket
import socketserver
import ssl
import struct
import threading
import urllib.parse
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path

from aiohttp import web

from casconsole.conda.archive import PackageSpec, build_package
from casconsole.conda.repodata import write_repodata


@dataclasses.dataclass(frozen=True)
class Fault:
    kind: str
    arg: float = 0

    @classmethod
    def status(cls, code: int) -> Fault:
        return cls("status", code)

    @classmethod
    def reset(cls) -> Fault:
        return cls("reset")

    @classmethod
    def truncate(cls, n: int) -> Fault:
        return cls("truncate", n)

    @classmethod
    def reset_after(cls, n: int) -> Fault:
        return cls("reset_after", n)

    @classmethod
    def wrong_bytes(cls) -> Fault:
        return cls("wrong_bytes")

    @classmethod
    def stall(cls, seconds: float) -> Fault:
        return cls("stall", seconds)

    @classmethod
    def slow(cls, bytes_per_second: float) -> Fault:
        return cls("slow", bytes_per_second)


@dataclasses.dataclass(frozen=True)
class Seen:
    method: str
    path: str
    range: str | None
    peer: tuple | None = None  # the client's address and port: one per connection


_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class Upstream:
    """A directory served on 127.0.0.1 with injectable faults; see the module docstring."""

    def __init__(self, root: Path, *, ssl_context: ssl.SSLContext | None = None):
        self.root = Path(root)
        self.ranges = True
        self.gzip_json = False
        self.redirects: dict[str, str] = {}
        self.requests: list[Seen] = []
        self._faults: dict[str, deque[Fault]] = {}
        self._always: dict[str, Fault] = {}
        self._lock = threading.Lock()
        self._ssl = ssl_context
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="upstream")
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ---- control (from the test's thread)

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl else 'http'}://127.0.0.1:{self.port}"

    def inject(self, path: str, *faults: Fault) -> None:
        """Queue faults for `path` (relative to root), one consumed per request."""
        with self._lock:
            self._faults.setdefault(path.lstrip("/"), deque()).extend(faults)

    def always(self, path: str, fault: Fault | None) -> None:
        """Apply `fault` to every request of `path` (None clears it)."""
        with self._lock:
            if fault is None:
                self._always.pop(path.lstrip("/"), None)
            else:
                self._always[path.lstrip("/")] = fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self._always.clear()
            self.requests.clear()

    def seen(self, path: str) -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if r.path == path.lstrip("/")]

    def start(self) -> Upstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> Upstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- serving (in the server's thread)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def _next_fault(self, path: str) -> Fault | None:
        with self._lock:
            queue = self._faults.get(path)
            if queue:
                return queue.popleft()
            return self._always.get(path)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        rng = request.headers.get("Range")
        peer = request.transport.get_extra_info("peername") if request.transport else None
        with self._lock:
            self.requests.append(Seen(request.method, path, rng, peer))
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405)
        if path in self.redirects:
            return web.Response(status=302, headers={"Location": self.redirects[path]})
        file = (self.root / path).resolve()
        if not file.is_relative_to(self.root.resolve()) or not file.is_file():
            return web.Response(status=404)
        fault = self._next_fault(path)
        if fault is None:
            if (
                self.gzip_json
                and path.endswith(".json")
                and "gzip" in request.headers.get("Accept-Encoding", "")
            ):
                response = web.StreamResponse(headers={"Content-Encoding": "gzip"})
                response.enable_chunked_encoding()
                await response.prepare(request)
                await response.write(gzip.compress(file.read_bytes()))
                await response.write_eof()
                return response
            if not self.ranges:  # the whole file, whatever was asked
                return web.Response(body=file.read_bytes(), content_type="application/octet-stream")
            return web.FileResponse(file)
        return await self._faulty(request, file, fault, rng)

    async def _faulty(
        self, request: web.Request, file: Path, fault: Fault, rng: str | None
    ) -> web.StreamResponse:
        if fault.kind == "status":
            return web.Response(status=int(fault.arg), text=f"injected {int(fault.arg)}\n")
        if fault.kind == "reset":
            self._reset(request)
            raise asyncio.CancelledError  # the handler's connection is gone
        data = file.read_bytes()
        start = 0
        match = _RANGE.match(rng or "") if self.ranges else None
        if match and int(match.group(1)) < len(data):
            start = int(match.group(1))
            end = int(match.group(2)) + 1 if match.group(2) else len(data)
            body = data[start:end]
            response = web.StreamResponse(status=206)
            response.headers["Content-Range"] = f"bytes {start}-{start + len(body) - 1}/{len(data)}"
        else:
            body = data
            response = web.StreamResponse(status=200)
        response.content_length = len(body)
        response.headers["Accept-Ranges"] = "bytes"
        await response.prepare(request)
        if fault.kind == "wrong_bytes":
            middle = len(body) // 2
            await response.write(body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1 :])
        elif fault.kind == "truncate":
            await response.write(body[: int(fault.arg)])
            self._drop(request)
            return response
        elif fault.kind == "reset_after":
            await response.write(body[: int(fault.arg)])
            await asyncio.sleep(0.3)  # read by the client before the reset, which would drop them
            self._reset(request)
            return response
        elif fault.kind == "stall":
            await response.write(body[: len(body) // 2])
            await asyncio.sleep(fault.arg)
            self._drop(request)
            return response
        elif fault.kind == "slow":
            step = max(1, int(fault.arg / 20))
            for i in range(0, len(body), step):
                await response.write(body[i : i + step])
                await asyncio.sleep(step / fault.arg)
        await response.write_eof()
        return response

    @staticmethod
    def _reset(request: web.Request) -> None:
        """Close with a TCP reset (linger 0), not a FIN."""
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if request.transport is not None:
            request.transport.close()

    @staticmethod
    def _drop(request: web.Request) -> None:
        if request.transport is not None:
            request.transport.close()


# ---------------------------------------------------------------- a forward proxy


class ForwardProxy:
    """An HTTP forward proxy on 127.0.0.1: absolute-URI GETs, and CONNECT tunnels for https.
    `seen` lists the URLs (and "CONNECT host:port"), `authorizations` the Proxy-Authorization
    headers received."""

    def __init__(self):
        proxy = self
        self.seen: list[str] = []
        self.authorizations: list[str | None] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_CONNECT(self) -> None:
                proxy.seen.append(f"CONNECT {self.path}")
                proxy.authorizations.append(self.headers.get("Proxy-Authorization"))
                host, _, port = self.path.rpartition(":")
                upstream = socket.create_connection((host, int(port)), timeout=30)
                self.send_response(200, "Connection established")
                self.end_headers()
                self.wfile.flush()
                ends = [self.connection, upstream]
                try:
                    while True:
                        readable, _, _ = select.select(ends, [], [], 30)
                        if not readable:
                            return
                        for end in readable:
                            data = end.recv(65536)
                            if not data:
                                return
                            (upstream if end is self.connection else self.connection).sendall(data)
                except OSError:
                    return
                finally:
                    upstream.close()
                    self.close_connection = True

            def do_GET(self) -> None:
                proxy.seen.append(self.path)
                proxy.authorizations.append(self.headers.get("Proxy-Authorization"))
                target = urllib.parse.urlsplit(self.path)
                upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
                hop = ("proxy-connection", "proxy-authorization", "host")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in hop}
                upstream.request("GET", target.path or "/", headers=headers)
                response = upstream.getresponse()
                body = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                upstream.close()

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True, name="proxy")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> ForwardProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


# ---------------------------------------------------------------- channels made by tests


def record_of(spec: PackageSpec, path: Path) -> dict:
    """The repodata record of a built package, as an indexer writes it."""
    data = path.read_bytes()
    record = spec.index_json()
    record.update(size=len(data), md5=hashlib.md5(data).hexdigest(), sha256=hashlib.sha256(data).hexdigest())
    return record


def make_channel(
    root: Path,
    packages: Mapping[str, Iterable[tuple[PackageSpec, str]] | Iterable[PackageSpec]],
    *,
    subdirs: Iterable[str] = ("noarch",),
) -> dict[str, dict]:
    """Build real archives under `root/<subdir>/` and write each subdir's repodata.

    `packages` maps subdir -> specs (built as `.conda`) or (spec, ".conda" | ".tar.bz2") pairs.
    Subdirs in `subdirs` get an (empty when unlisted) repodata too. Returns subdir -> the
    repodata object written, which a test may change and write again with `write_repodata`.
    """
    written: dict[str, dict] = {}
    for subdir in dict.fromkeys([*packages, *subdirs]):
        repodata: dict = {
            "info": {"subdir": subdir},
            "packages": {},
            "packages.conda": {},
            "removed": [],
            "repodata_version": 1,
        }
        for item in packages.get(subdir, ()):
            spec, fmt = item if isinstance(item, tuple) else (item, ".conda")
            path = build_package(root / subdir, spec, fmt)
            table = "packages.conda" if fmt == ".conda" else "packages"
            repodata[table][path.name] = record_of(spec, path)
        (root / subdir).mkdir(parents=True, exist_ok=True)
        write_repodata(root / subdir, repodata)
        written[subdir] = repodata
    return written


def spec(name: str, version: str = "1.0", subdir: str = "noarch", kb: int = 4, **kw) -> PackageSpec:
    """A small package with a payload of `kb` KiB of name-seeded bytes."""
    # random bytes seeded by the name: incompressible, so the archive keeps about that size
    payload = random.Random(f"{name}-{version}-{subdir}").randbytes(kb * 1024)
    return PackageSpec(
        name=name,
        version=version,
        build=kw.pop("build", "0"),
        subdir=subdir,
        files={f"share/{name}/data.bin": payload, **kw.pop("files", {})},
        **kw,
    )


# ---------------------------------------------------------------- checking a mirror


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def mirror_problems(channel_dir: Path, upstream_root: Path, subdirs: Iterable[str]) -> list[str]:
    """What breaks the sync's promises in a mirrored channel, checked against the upstream files.

    No file under a final name differs from upstream's; `repodata.json` and `.zst` name only
    files that are present and verified, with the upstream records.
    """
    import json

    import zstandard

    problems = []
    for subdir in subdirs:
        folder = channel_dir / subdir
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.name.startswith(".") or not path.name.endswith((".conda", ".tar.bz2")):
                continue
            source = upstream_root / subdir / path.name
            if not source.is_file() or sha256_of(path) != sha256_of(source):
                problems.append(f"{subdir}/{path.name}: differs from upstream under its final name")
        for name in ("repodata.json", "repodata.json.zst"):
            file = folder / name
            if not file.exists():
                continue
            data = file.read_bytes()
            if name.endswith(".zst"):
                data = zstandard.ZstdDecompressor().stream_reader(data).read()
            repodata = json.loads(data)
            for table in ("packages", "packages.conda"):
                for fn, record in repodata.get(table, {}).items():
                    path = folder / fn
                    if not path.is_file():
                        problems.append(f"{subdir}/{name} names {fn}, which is missing")
                    elif sha256_of(path) != record.get("sha256"):
                        problems.append(f"{subdir}/{name} names {fn}, which does not match its record")
    return problems
