"""cas-server: serve every channel folder under the mirror over HTTP.

A pre-fork server: the parent binds one listening socket per worker (SO_REUSEPORT, so the
kernel spreads connections evenly), forks the workers and supervises them; each worker runs
an event loop (`server_http`) over the shared tree (`server_site`). SIGTERM or SIGINT stop
accepting, let responses in flight finish (up to `grace` seconds), then exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from casconsole.errors import EXIT_FAILED, ServerError
from casconsole.index.publish import stale_staging
from casconsole.layout import GZIP_CACHE, state_dir
from casconsole.serve.gzipcache import GzipCache
from casconsole.serve.health import Health
from casconsole.serve.logs import AccessLog, loop_exception_handler
from casconsole.serve.site import Site
from casconsole.serve.tls import server_context, wrapper
from casconsole.serve.tokens import TokenChecker
from casconsole.serve.upload import UploadOptions, Uploads
from casconsole.serve.worker import Worker


@dataclass
class ServerOptions:
    root: Path  # a folder; for a bucket mirror, its URL (the files come through `bucket`)
    host: str = "127.0.0.1"
    port: int = 8080
    private_channels: Sequence[str] = ()
    channel: str | None = None  # the mirrored channel, also served at the root URL
    pypi_private: Sequence[str] = ()  # PyPI projects served only under /t/<token>/pypi/
    tls_cert: Path | None = None  # with tls_key: serve HTTPS
    tls_key: Path | None = None
    workers: int = 0  # 0: one per CPU
    access_log: str | None = "-"  # "-": standard output, None: no access log, else a file
    grace: float = 10.0  # seconds responses in flight get to finish on SIGTERM
    client_timeout: float = 60.0  # seconds a client may accept no data (see serve/http.py)
    upload_max_size: int = 4 << 30  # the largest upload taken (settings' upload_max_size)
    upload_timeout: float = 120.0  # seconds an upload's body may stall (settings' upload_timeout)
    gzip_cache: Path | None = None  # default: <root>/.cas/cache/gzip, or a temporary folder
    bucket: object = None  # storage.s3.S3Config of a bucket mirror (serve/bucket.py)
    s3_serve: str = "stream"  # or "redirect": presigned URLs
    redirect_seconds: int = 3600
    on_error: Callable[[str], None] = field(default=lambda m: print(f"cas-server: {m}", file=sys.stderr))


def worker_count(requested: int) -> int:
    if requested > 0:
        return requested
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def bind_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on one address; the port is checked free first.

    A plain bind comes first because SO_REUSEPORT alone would let a second cas-server (same
    user) silently share the port with a running one.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServerError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    family, _, _, _, addr = infos[0]
    if count > 1 and not hasattr(socket, "SO_REUSEPORT"):
        count = 1
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(addr)
    except OSError as exc:
        probe.close()
        raise ServerError(f"cannot listen on {_show(host, port)}: {exc.strerror}", EXIT_FAILED) from None
    addr = (addr[0], probe.getsockname()[1], *addr[2:])
    if count == 1:
        probe.listen(1024)
        return [probe]
    probe.close()
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(family, socket.SOCK_STREAM)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(addr)
            s.listen(1024)
    except OSError as exc:
        for s in socks:
            s.close()
        raise ServerError(f"cannot listen on {_show(host, port)}: {exc.strerror}", EXIT_FAILED) from None
    return socks


def _show(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def url_of(sock: socket.socket, tls: bool = False) -> str:
    host, port = sock.getsockname()[:2]
    return f"{'https' if tls else 'http'}://{_show(host, port)}/"


def private_channel_problems(root: Path, private: Sequence[str]) -> tuple[list[str], list[str]]:
    """(errors, warnings) of `private_channels` against the mirror's folders.

    Names are matched exactly: an entry whose folder exists only in another case protects
    nothing (`Internal` while the folder is `internal`), so it is an error; an entry with no
    folder at all is a warning (a channel not made yet is private from its first file on).
    """
    try:
        folders = {p.name for p in Path(root).iterdir() if p.is_dir()}
    except OSError:
        return [], []
    folded: dict[str, list[str]] = {}
    for name in folders:
        folded.setdefault(name.casefold(), []).append(name)
    errors, warnings = [], []
    for name in private:
        if name in folders:
            continue
        others = sorted(folded.get(name.casefold(), []))
        if others:
            errors.append(
                f"private_channels: {name!r} has no folder, but {', '.join(map(repr, others))} has: "
                "names are matched exactly, and that channel would be public"
            )
        else:
            warnings.append(f"private channel {name!r} has no folder under {root}")
    return errors, warnings


def _gzip_dir(options: ServerOptions) -> tuple[Path, bool]:
    """The gzip cache folder, and whether it is a temporary one to remove at exit."""
    wanted = options.gzip_cache or state_dir(options.root) / GZIP_CACHE
    try:
        wanted.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=wanted, prefix=".probe"):
            pass
        for stale in wanted.glob(".*.part"):  # left by a worker killed mid-compression
            stale.unlink(missing_ok=True)
        return wanted, False
    except OSError:
        return Path(tempfile.mkdtemp(prefix="cas-server-gzip-")), True


def _open_log(target: str | None) -> int | None:
    if target is None:
        return None
    if target == "-":
        return sys.stdout.fileno()
    try:
        return os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ServerError(f"cannot open access log {target}: {exc.strerror}") from None


def _raise_fd_limit() -> None:
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))


def run_worker(
    sock: socket.socket, options: ServerOptions, gzip_dir: Path | None, log_fd: int | None, wrap=None
) -> int:
    """Serve on `sock` in this process until SIGTERM/SIGINT; returns the exit status."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.set_exception_handler(loop_exception_handler)
    # a bucket's answers each hold a thread while the bucket answers (and a streamed body one
    # per chunk in flight); a folder's threads only compress JSON and list folders
    threads = 32 if options.bucket is not None else 2
    executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="cas-server")
    # uploads are published (checked, placed, indexed) apart from pages and gzip: never behind them
    publisher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cas-upload")
    stop = loop.create_future()

    def request_stop() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})

    def report(message: str) -> None:
        loop.call_soon_threadsafe(options.on_error, message)

    if options.bucket is not None:  # opened here, in the worker: a bucket client does not survive a fork
        from casconsole.serve.bucket import BucketHealth, BucketSite, BucketTokens
        from casconsole.storage.s3 import S3Storage

        storage = S3Storage(options.bucket)
        site: Site = BucketSite(
            storage, options.private_channels, BucketTokens(storage, on_error=report), executor,
            channel=options.channel, health=BucketHealth(storage), mode=options.s3_serve,
            redirect_seconds=options.redirect_seconds,
        )  # fmt: skip
    else:
        assert gzip_dir is not None
        site = Site(
            Path(options.root),
            options.private_channels,
            TokenChecker(Path(options.root), on_error=options.on_error),
            GzipCache(gzip_dir, executor, report),
            executor,
            channel=options.channel,
            health=Health(Path(options.root)),
            pypi_private=options.pypi_private,
        )
    # a bucket mirror takes no uploads (a PUT gets 405): packages go up with S3 tools, then cas-index
    uploads = (
        None
        if options.bucket is not None
        else Uploads(site, UploadOptions(options.upload_max_size, options.upload_timeout), publisher)
    )
    worker = Worker(sock, site, AccessLog(log_fd, loop), loop, wrap, options.client_timeout, uploads)
    try:
        worker.start()
        loop.run_until_complete(stop)
        worker.stop()
        loop.run_until_complete(worker.drain(options.grace))
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
        publisher.shutdown(wait=True)  # an upload whose body is in is published, not cut off
        loop.close()
    return 0


def serve(options: ServerOptions, ready: Callable[[str, int], None] | None = None) -> int:
    """Bind, fork the workers and supervise them; returns the exit status.

    `ready(url, workers)` is called once the sockets listen (connections made from then on
    wait in the backlog until a worker takes them).
    """
    if options.bucket is not None:
        _probe_bucket(options.bucket)
    elif not Path(options.root).is_dir():
        raise ServerError(f"mirror folder {options.root} does not exist or is not a folder")
    wrap = None
    if options.tls_cert is not None or options.tls_key is not None:
        if options.tls_cert is None or options.tls_key is None:
            raise ServerError("TLS needs both a certificate and its key (--tls-cert and --tls-key)")
        wrap = wrapper(server_context(options.tls_cert, options.tls_key))
    count = worker_count(options.workers)
    socks = bind_sockets(options.host, options.port, count)
    log_fd = _open_log(options.access_log)
    gzip_dir, temporary = _gzip_dir(options) if options.bucket is None else (None, False)
    _raise_fd_limit()
    if options.bucket is None:
        _remove_stale_uploads(Path(options.root), options)
    try:
        if ready is not None:
            ready(url_of(socks[0], wrap is not None), len(socks))
        if len(socks) == 1:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
            return run_worker(socks[0], options, gzip_dir, log_fd, wrap)
        return _supervise(socks, options, gzip_dir, log_fd, wrap)
    finally:
        for s in socks:
            s.close()
        if temporary and gzip_dir is not None:
            shutil.rmtree(gzip_dir, ignore_errors=True)


def _probe_bucket(config) -> None:
    """ServerError now, rather than a 502 per request, when the bucket cannot be listed: the
    endpoint unreachable, the credentials refused. Asked from a child process, so this one
    holds no bucket client when it forks its workers."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one listing, its error through the pipe
        status = 0
        try:
            os.close(read)
            from casconsole.storage.s3 import S3Storage

            S3Storage(config).list_dir("")
        except BaseException as exc:
            os.write(write, str(exc).encode()[:4000])
            status = 1
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode(errors="replace")
    _, wait_status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(wait_status) != 0:
        raise ServerError(message or f"{config.url}: cannot be listed", EXIT_FAILED)


def _remove_stale_uploads(root: Path, options: ServerOptions) -> None:
    """Staging folders of uploads cut off by a server killed mid-upload (a running server's own
    are written to at least every upload_timeout, so they are never this old)."""
    for folder in stale_staging(root, older_than=max(3600.0, 4 * options.upload_timeout)):
        shutil.rmtree(folder, ignore_errors=True)
        options.on_error(f"warning: removed {folder}: an upload cut off when a server stopped")


def _die_with_parent(parent: int) -> None:
    """Ask Linux to send SIGTERM when the parent dies, even by SIGKILL: no orphaned workers."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the call took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _supervise(socks, options: ServerOptions, gzip_dir: Path, log_fd: int | None, wrap) -> int:
    stopping = False
    children: dict[int, tuple[int, float]] = {}  # pid -> (socket index, start time)
    quick_deaths = 0

    parent = os.getpid()

    def spawn(index: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # worker: signals stay blocked until its loop handles them
            status = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                _die_with_parent(parent)
                for i, s in enumerate(socks):
                    if i != index:
                        s.close()
                status = run_worker(socks[index], options, gzip_dir, log_fd, wrap)
            except BaseException as exc:  # a worker must never fall back into the parent's code
                with contextlib.suppress(Exception):
                    options.on_error(f"worker {os.getpid()} failed: {exc!r}")
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(status)
        children[pid] = (index, time.monotonic())

    def on_signal(signum, frame) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for s in socks:  # the last reference once workers close theirs: new connections refused
            s.close()

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        for i in range(len(socks)):
            spawn(i)
    finally:
        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    status = 0
    try:
        while children:
            try:
                pid, wait_status = os.wait()
            except ChildProcessError:
                break
            index, started = children.pop(pid)
            code = os.waitstatus_to_exitcode(wait_status)
            if stopping:
                continue
            options.on_error(f"worker {pid} exited with status {code}; starting a new one")
            quick_deaths = quick_deaths + 1 if time.monotonic() - started < 2 else 0
            if quick_deaths >= 3:
                options.on_error("workers keep failing at start; stopping")
                status = 1
                on_signal(signal.SIGTERM, None)
                continue
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
            try:
                spawn(index)
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status
