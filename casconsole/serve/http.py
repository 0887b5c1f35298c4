"""HTTP/1.1 connections of one cas-server worker, straight on the event loop's selector.

The server only answers GET and HEAD for files, so a request is a header block and nothing
else; parsing it by hand and writing with `send`/`sendfile` on the raw socket keeps the
per-request Python work to a few microseconds (asyncio transports and aiohttp cost several
times more, see bench/serve/RESULTS.md). Timeouts are enforced by one sweep per second
rather than a timer per request.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future

from casconsole.serve.site import Response, Site, error, token_redacted

MAX_HEAD = 16 * 1024  # request line + headers
RECV_SIZE = 64 * 1024
HEADER_TIMEOUT = 30.0  # a request's headers must arrive within this
IDLE_TIMEOUT = 60.0  # keep-alive connections without a request are closed after this
SEND_TIMEOUT = 60.0  # a client that accepts no bytes for this long is dropped
MAX_CONNECTIONS = 10000  # per worker; beyond it new connections wait in the kernel's backlog

_REASONS = {
    200: "OK",
    204: "No Content",
    206: "Partial Content",
    301: "Moved Permanently",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    416: "Range Not Satisfiable",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    505: "HTTP Version Not Supported",
}
_MSG_MORE = getattr(socket, "MSG_MORE", 0)
_PRINTABLE = bytes(range(0x20, 0x7F))
_LOG_ESCAPE = {c: f"\\x{c:02x}" for c in range(256) if c not in _PRINTABLE or c in b'"\\'}


def _log_text(value: bytes | None) -> str:
    """Header or target bytes made safe for a one-line log (no quotes, no control bytes)."""
    if not value:
        return "-"
    text = value.decode("latin-1")
    if value.translate(None, _PRINTABLE) or b'"' in value or b"\\" in value:
        text = "".join(_LOG_ESCAPE.get(ord(ch), ch) for ch in text)
    return text


class AccessLog:
    """One line per request, buffered and written in whole lines (several workers share the fd)."""

    def __init__(self, fd: int | None, loop: asyncio.AbstractEventLoop):
        self.fd = fd
        self.loop = loop
        self.lines: list[str] = []
        self.size = 0
        self.scheduled = False
        self._sec = -1
        self._stamp = ""

    def stamp(self, now: float) -> str:
        sec = int(now)
        if sec != self._sec:
            self._sec = sec
            self._stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(sec))
        return self._stamp

    def write(self, line: str) -> None:
        if self.fd is None:
            return
        self.lines.append(line)
        self.size += len(line)
        if self.size > 32 * 1024:
            self.flush()
        elif not self.scheduled:
            self.scheduled = True
            self.loop.call_later(0.2, self.flush)

    def flush(self) -> None:
        self.scheduled = False
        if not self.lines or self.fd is None:
            return
        lines, self.lines, self.size = self.lines, [], 0
        # chunks of whole lines up to PIPE_BUF, so workers' lines never interleave in a pipe
        chunk: list[bytes] = []
        n = 0
        for line in lines:
            data = line.encode("utf-8", "replace")
            if n + len(data) > 4096 and chunk:
                self._write(b"".join(chunk))
                chunk, n = [], 0
            chunk.append(data)
            n += len(data)
        if chunk:
            self._write(b"".join(chunk))

    def _write(self, data: bytes) -> None:
        try:
            while data:
                data = data[os.write(self.fd, data) :]
        except BlockingIOError:
            pass  # a stalled log reader must not stall serving; these lines are lost
        except OSError as exc:
            print(f"cas-server: access log: {exc.strerror}; logging stops", file=sys.stderr)
            self.fd = None


class Worker:
    """Accepts connections on one listening socket and serves them until `stop()`."""

    def __init__(self, sock: socket.socket, site: Site, log: AccessLog, loop):
        self.sock = sock
        self.site = site
        self.log = log
        self.loop = loop
        self.conns: set[Connection] = set()
        self.accepting = False
        self.stopping = False
        self._sweeper: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self.sock.setblocking(False)
        self._accept_on()
        self._sweeper = self.loop.call_later(1.0, self._sweep)

    def _accept_on(self) -> None:
        if not self.accepting and not self.stopping:
            self.loop.add_reader(self.sock.fileno(), self._accept)
            self.accepting = True

    def _accept_off(self) -> None:
        if self.accepting:
            self.loop.remove_reader(self.sock.fileno())
            self.accepting = False

    def _accept(self) -> None:
        for _ in range(64):
            if len(self.conns) >= MAX_CONNECTIONS:
                self._accept_off()
                return
            try:
                csock, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._accept_off()  # out of descriptors: retry on the next sweep
                    return
                if exc.errno == errno.ECONNABORTED:
                    continue
                raise
            csock.setblocking(False)
            if csock.family != socket.AF_UNIX:
                csock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(self, csock, addr[0] if isinstance(addr, tuple) else "-")
            self.conns.add(conn)

    def closed(self, conn: Connection) -> None:
        self.conns.discard(conn)
        if not self.accepting and not self.stopping and len(self.conns) < MAX_CONNECTIONS:
            self._accept_on()

    def _sweep(self) -> None:
        now = time.monotonic()
        for conn in list(self.conns):
            conn.check_timeout(now)
        if not self.stopping:
            if not self.accepting and len(self.conns) < MAX_CONNECTIONS:
                self._accept_on()
            self._sweeper = self.loop.call_later(1.0, self._sweep)

    def stop(self) -> None:
        """Stop accepting; idle connections close now, busy ones after their response."""
        self.stopping = True
        self._accept_off()
        self.sock.close()
        for conn in list(self.conns):
            conn.shutdown()

    async def drain(self, grace: float) -> None:
        deadline = time.monotonic() + grace
        while self.conns and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.conns):
            conn.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.log.flush()


class Connection:
    __slots__ = (
        "addr",
        "buf",
        "busy",
        "close_after",
        "closed",
        "fd",
        "file_count",
        "file_fd",
        "file_offset",
        "last",
        "loop",
        "out",
        "reading",
        "req",
        "resp",
        "sent",
        "sock",
        "started",
        "worker",
        "writing",
    )

    def __init__(self, worker: Worker, sock: socket.socket, addr: str):
        self.worker = worker
        self.loop = worker.loop
        self.sock = sock
        self.fd = sock.fileno()
        self.addr = addr
        self.buf = b""
        self.busy = False  # a response is being produced or sent
        self.close_after = False
        self.closed = False
        self.out: memoryview | None = None
        self.file_fd = -1
        self.file_offset = 0
        self.file_count = 0
        self.sent = 0
        self.req: tuple | None = None  # (method, target, version, headers, start) for the log
        self.resp: Response | None = None  # the response being sent, for the log
        self.last = time.monotonic()
        self.started = 0.0  # when the first byte of a pending request arrived
        self.reading = False
        self.writing = False
        self._read_on()

    # ---------------------------------------------------------------- selector plumbing

    def _read_on(self) -> None:
        if not self.reading and not self.closed:
            self.loop.add_reader(self.fd, self._on_readable)
            self.reading = True

    def _read_off(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.fd)
            self.reading = False

    def _write_on(self) -> None:
        if not self.writing:
            self.loop.add_writer(self.fd, self._on_writable)
            self.writing = True

    def _write_off(self) -> None:
        if self.writing:
            self.loop.remove_writer(self.fd)
            self.writing = False

    def close(self) -> None:
        if self.closed:
            return
        self._read_off()
        self._write_off()
        self.closed = True
        if self.file_fd >= 0:
            os.close(self.file_fd)
            self.file_fd = -1
        self.sock.close()
        self.worker.closed(self)

    def shutdown(self) -> None:
        """Graceful stop: finish the response in progress, then close."""
        if self.busy:
            self.close_after = True
        else:
            self.close()

    def check_timeout(self, now: float) -> None:
        if self.busy:
            sending = self.out is not None or self.file_fd >= 0
            if sending and now - self.last > SEND_TIMEOUT:
                self._finish_log()
                self.close()
        elif self.buf:
            if now - self.started > HEADER_TIMEOUT:
                self._send_error(408, "Request Timeout")
        elif now - self.last > IDLE_TIMEOUT:
            self.close()

    # ---------------------------------------------------------------- reading

    def _on_readable(self) -> None:
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._finish_log()
            self.close()
            return
        if not data:  # the client closed its side
            if self.busy:
                self.close_after = True
                self._read_off()
            else:
                self.close()
            return
        now = time.monotonic()
        if not self.buf:
            self.started = now
        self.last = now
        self.buf += data
        if self.busy:
            if len(self.buf) > MAX_HEAD:
                self._read_off()  # pipelined requests pile up: wait for this response
            return
        self._process()

    def _process(self) -> None:
        """Answer every complete request in the buffer until one needs to wait for the socket."""
        while not self.busy and not self.closed:
            buf = self.buf
            end = buf.find(b"\r\n\r\n")
            if end > MAX_HEAD:
                self._send_error(431, "Request Header Fields Too Large")
                return
            if end < 0:
                if len(buf) > MAX_HEAD:
                    self._send_error(431, "Request Header Fields Too Large")
                elif not self.reading and not self.close_after:
                    self._read_on()
                elif self.close_after and not buf:
                    self.close()
                return
            head = buf[:end]
            self.buf = buf[end + 4 :]
            if self.buf:
                self.started = time.monotonic()
            self._request(head)

    def _request(self, head: bytes) -> None:
        start = time.monotonic()
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            self.req = (b"-", lines[0][:200], b"", {}, start)
            status = 505 if len(parts) == 3 and parts[2].startswith(b"HTTP/") else 400
            self._send_error(status, _REASONS[status])
            return
        method, target, version = parts
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            # no colon, a space before it, or a folded continuation line: malformed
            if not colon or not name or name[-1:] in (b" ", b"\t") or name[:1] in (b" ", b"\t"):
                self.req = (method, target, version, headers, start)
                self._send_error(400, "Bad Request")
                return
            headers[name.lower()] = value.strip()
        self.req = (method, target, version, headers, start)
        conn_hdr = headers.get(b"connection", b"").lower()
        # HTTP/1.1 keeps the connection unless told otherwise; 1.0 only when asked
        keep = b"close" not in conn_hdr if version == b"HTTP/1.1" else b"keep-alive" in conn_hdr
        if b"transfer-encoding" in headers or headers.get(b"content-length", b"0") != b"0":
            self._send_error(400, "Bad Request")  # no request bodies here, and none is read
            return
        if method not in (b"GET", b"HEAD"):
            resp = error(405, text="Method Not Allowed")
            resp.headers.append("Allow: GET, HEAD")
            self._respond(resp, keep)
            return
        try:
            result = self.worker.site.handle(method, target, headers)
        except Exception as exc:  # one request fails, the worker serves on
            print(f"cas-server: {token_redacted(_log_text(target))}: {describe(exc)}", file=sys.stderr)
            result = error(500, text="Internal Server Error")
        if isinstance(result, Response):
            self._respond(result, keep)
        else:  # (future, finish): a directory page rendered in a thread
            fut, finish = result
            self.busy = True
            fut.add_done_callback(lambda f: self.loop.call_soon_threadsafe(self._deferred, f, finish, keep))

    def _deferred(self, fut: Future, finish: Callable, keep: bool) -> None:
        self.busy = False
        if self.closed:
            return
        exc = fut.exception()
        if exc is None:
            resp = finish(fut.result())
        elif isinstance(exc, OSError):
            resp = error(404, text="Not Found")
        else:
            print(f"cas-server: directory page: {describe(exc)}", file=sys.stderr)
            resp = error(500, text="Internal Server Error")
        self._respond(resp, keep)
        if not self.busy:
            self._process()

    # ---------------------------------------------------------------- writing

    def _send_error(self, status: int, reason: str) -> None:
        if self.req is None:
            self.req = (b"-", b"-", b"", {}, time.monotonic())
        self.buf = b""
        self._respond(error(status, text=reason), keep=False)

    def _respond(self, resp: Response, keep: bool) -> None:
        method = self.req[0] if self.req else b"GET"
        if resp.close or self.close_after or self.worker.stopping:
            keep = False
        status = resp.status
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
            f"Date: {_date()}\r\nServer: casconsole\r\n"
            + "".join(h + "\r\n" for h in resp.headers)
            + ("Connection: keep-alive\r\n\r\n" if keep else "Connection: close\r\n\r\n")
        ).encode("latin-1")
        if not keep:
            self.close_after = True
        self.busy = True
        self.sent = 0
        data = head + resp.body if resp.body and method != b"HEAD" else head
        self.file_fd = resp.fd
        self.file_offset = resp.offset
        self.file_count = resp.count
        self.resp = resp
        try:
            n = self.sock.send(data, _MSG_MORE if resp.fd >= 0 else 0)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            self._finish_log()
            self.close()
            return
        self.sent += n
        if n < len(data):
            self.out = memoryview(data)[n:]
            self._write_on()
            return
        self._send_file()

    def _on_writable(self) -> None:
        self.last = time.monotonic()
        if self.out is not None:
            try:
                n = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._finish_log()
                self.close()
                return
            self.sent += n
            if n < len(self.out):
                self.out = self.out[n:]
                return
            self.out = None
        self._send_file()

    def _send_file(self) -> None:
        while self.file_fd >= 0:
            try:
                n = os.sendfile(self.fd, self.file_fd, self.file_offset, self.file_count)
            except (BlockingIOError, InterruptedError):
                self._write_on()
                return
            except OSError:
                self._finish_log()
                self.close()
                return
            if n == 0:  # the file shrank under us: the promised length cannot be sent
                self._finish_log()
                self.close()
                return
            self.sent += n
            self.file_offset += n
            self.file_count -= n
            if self.file_count == 0:
                os.close(self.file_fd)
                self.file_fd = -1
        self._write_off()
        self._finish_log()
        self.busy = False
        self.last = time.monotonic()
        if self.close_after:
            self.close()
            return
        if self.buf:
            self._process()
        elif not self.reading:
            self._read_on()

    def _finish_log(self) -> None:
        req, self.req = self.req, None
        if req is None:
            return
        method, target, version, headers, start = req
        resp, self.resp = self.resp, None
        status = resp.status if resp is not None else 0
        path = resp.log_path if resp is not None and resp.log_path else None
        shown = path if path is not None else token_redacted(_log_text(target))
        now = time.time()
        self.worker.log.write(
            f'{self.addr} - - [{self.worker.log.stamp(now)}] "{_log_text(method)} '
            f'{_log_text(shown.encode("utf-8", "replace"))} {_log_text(version)}" {status} '
            f'{self.sent} "{_log_text(headers.get(b"referer"))}" '
            f'"{_log_text(headers.get(b"user-agent"))}" '
            f"{time.monotonic() - start:.4f}\n"
        )


def describe(exc: BaseException) -> str:
    """One line for the server's log: the error and where it was raised, no traceback."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f" ({tb.tb_frame.f_code.co_filename}:{tb.tb_lineno})" if tb is not None else ""
    return f"{exc!r}{where}"


def loop_exception_handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """Errors escaping a callback: one line on stderr instead of asyncio's traceback."""
    exc = context.get("exception")
    text = describe(exc) if exc is not None else context.get("message", "unknown error")
    print(f"cas-server: internal error: {text}", file=sys.stderr)


_date_sec = -1
_date_text = ""


def _date() -> str:
    global _date_sec, _date_text
    now = int(time.time())
    if now != _date_sec:
        _date_sec = now
        _date_text = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))
    return _date_text
