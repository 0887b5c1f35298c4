"""HTTP/1.1 connections of one cas-server worker, straight on the event loop's selector.

Requests are parsed by llhttp (through httptools), the strict parser behind node and uvicorn:
heads and bodies (Content-Length and chunked) alike, so that no request that a lenient proxy
in front might frame differently is ever answered as if it were well formed. Responses are
written with `send` / `sendfile` on the raw socket, which keeps the per-request Python work
to a few microseconds (asyncio transports and aiohttp cost several times more, see
bench/serve/RESULTS.md). Timeouts are enforced by one sweep per second rather than a timer
per request. With TLS (`tls.py`), the same loop runs over an SSL socket.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING

import httptools

from casconsole.serve.logs import describe, log_text, request_line
from casconsole.serve.redact import redact
from casconsole.serve.request import MAX_HEAD, Refuse, Request, RequestParsing
from casconsole.serve.site import Response, error

if TYPE_CHECKING:
    from casconsole.serve.upload import Upload

MAX_PIPELINE = 32  # parsed requests waiting for their turn; beyond, the socket is not read
RECV_SIZE = 64 * 1024
# the client timeout (--client-timeout, 60 s by default): a client that accepts no bytes for
# this long is dropped, so is a keep-alive connection without a request; a request's head
# must arrive within half of it, and a body must not stall longer than that (an upload's body:
# not longer than upload_timeout, however long the whole takes)
CLIENT_TIMEOUT = 60.0
LINGER = 2.0  # after a 400, input is read and dropped this long so the client sees the answer

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
    409: "Conflict",
    411: "Length Required",
    413: "Content Too Large",
    416: "Range Not Satisfiable",
    422: "Unprocessable Content",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    507: "Insufficient Storage",
}
_MSG_MORE = getattr(socket, "MSG_MORE", 0)


class Connection(RequestParsing):
    __slots__ = (
        "addr",
        "busy",
        "close_after",
        "closed",
        "eof",
        "failed",
        "fd",
        "file_count",
        "file_fd",
        "file_offset",
        "last",
        "last_sent",
        "linger_until",
        "loop",
        "m_body",
        "m_bytes",
        "m_head",
        "m_headers",
        "m_open",
        "m_request",
        "m_size",
        "m_start",
        "m_upload",
        "m_url",
        "out",
        "parser",
        "pending",
        "reading",
        "req",
        "resp",
        "sent",
        "sock",
        "stopped_parsing",
        "stream",
        "worker",
        "writing",
    )

    def __init__(self, worker, sock: socket.socket, addr: str):  # worker: serve.worker.Worker
        self.worker = worker
        self.loop = worker.loop
        self.sock = sock
        self.fd = sock.fileno()
        self.addr = addr
        self.parser = httptools.HttpRequestParser(self)
        self.pending: deque[Request] = deque()
        self.failed: Request | None = None  # a request the parser refused, answered last
        self.stopped_parsing = False  # after a refused request nothing more is parsed
        self.eof = False  # the client closed its sending side
        self.busy = False  # a response is being produced or sent
        self.close_after = False
        self.closed = False
        self.linger_until = 0.0  # > 0: closing; input is read and dropped until then
        self.out: memoryview | None = None
        self.file_fd = -1
        self.file_offset = 0
        self.file_count = 0
        self.stream = None  # a streamed body's chunks (a bucket's object), pulled in a thread
        self.sent = 0
        self.req: Request | None = None  # the request being answered, for the log
        self.resp: Response | None = None  # the response being sent, for the log
        self.last = self.last_sent = time.monotonic()
        # the message being parsed
        self.m_open = False  # begun, not complete
        self.m_head = False  # its head is not complete
        self.m_start = 0.0
        self.m_bytes = 0  # bytes of its head so far (an upper bound), while it arrives
        self.m_size = 0  # bytes of its target and headers, as parsed
        self.m_url = b""
        self.m_headers: dict[bytes, bytes] = {}
        self.m_body: list[bytes] | None = None
        self.m_request: Request | None = None  # made once its head is complete
        self.m_upload: Upload | None = None  # an accepted upload whose body is arriving
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
        self.stream = None  # a pull in flight finds the connection closed and closes the stream
        self._drop_upload()
        for req in self.pending:  # complete uploads never answered: never published either
            if req.upload is not None:
                req.upload.abort()
        self.sock.close()
        self.worker.closed(self)

    def shutdown(self) -> None:
        """Graceful stop: finish the response in progress (or the upload arriving, which is
        then published and answered), then close."""
        if self.busy or self.m_upload is not None:
            self.close_after = True
        else:
            self.close()

    def _linger(self) -> None:
        """Close after an error answer without losing it: stop sending, read and drop what
        the client still sends for a moment (closing with unread input would reset the
        connection, and the client could lose the answer)."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            return
        self.linger_until = time.monotonic() + LINGER
        self._read_on()

    def check_timeout(self, now: float) -> None:
        if self.linger_until:
            if now > self.linger_until:
                self.close()
        elif self.busy:
            sending = self.out is not None or self.file_fd >= 0  # not while a chunk is pulled
            if sending and now - self.last_sent > self.worker.timeout:  # only accepted bytes count
                self._finish_log()
                self.close()
        elif self.m_open:
            if self.m_upload is not None:  # a large upload over a slow link: only a stall counts
                if now - self.last > self.worker.uploads.timeout:
                    self._refuse(408)
            elif (now - self.m_start if self.m_head else now - self.last) > self.worker.timeout / 2:
                self._refuse(408)
        elif not self.pending and now - self.last > self.worker.timeout:
            self.close()

    # ---------------------------------------------------------------- reading

    def _recv(self) -> bytes | None:
        """Bytes from the socket, b"" at its end, None when there are none now."""
        try:
            return self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return None

    def _on_readable(self) -> None:
        try:
            data = self._recv()
        except OSError:
            self._finish_log()
            self.close()
            return
        if data is None:
            return
        if self.linger_until:  # closing: dropped, until the client closes too
            if not data:
                self.close()
            return
        if not data:  # the client closed its side: answer what is complete, then close
            self.eof = True
            self._read_off()
            if not self.busy:
                self._process()
            return
        self.last = time.monotonic()
        if self.stopped_parsing:
            return
        self._feed(data)
        if self.stopped_parsing or len(self.pending) >= MAX_PIPELINE:
            self._read_off()  # wait for the answers before reading more
        if not self.busy:
            self._process()

    def _feed(self, data: bytes) -> None:
        was_in_head = self.m_head
        began = self.m_start
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, Refuse):
                self._stop_parsing(cause.status, data, cause.answer)
            else:
                self._stop_parsing(400, data)
            return
        except httptools.HttpParserUpgrade:  # unreachable: upgrades are refused in a callback
            self._stop_parsing(400, data)
            return
        except httptools.HttpParserError:
            self._stop_parsing(400, data)
            return
        if self.m_head:  # a head still incomplete: bounded in size
            if was_in_head and began == self.m_start:
                self.m_bytes += len(data)
            else:  # it began in this chunk, after the last complete head (or body) in it
                end = data.rfind(b"\r\n\r\n")
                self.m_bytes = len(data) - (end + 4 if end >= 0 else 0)
            if self.m_bytes > MAX_HEAD:
                self._stop_parsing(431, data)

    def _stop_parsing(self, status: int, data: bytes, answer: Response | None = None) -> None:
        """The parser refused the request being parsed: nothing after it is read as HTTP."""
        self.stopped_parsing = True
        self._drop_upload()
        headers = self.m_headers if self.m_open else {}
        line = request_line(data, self.m_url if self.m_open else b"")
        self.failed = Request(b"-", line, b"", headers, False, time.monotonic(), b"", status, answer)
        self.m_open = False

    def _refuse(self, status: int) -> None:
        """Answer `status` now, close after it (a timeout while a request arrives)."""
        self.stopped_parsing = True
        self._drop_upload()
        now = time.monotonic()
        self.failed = Request(b"-", self.m_url or b"-", b"", self.m_headers, False, now, b"", status)
        self.m_open = False
        self._read_off()
        if not self.busy:
            self._process()

    def _process(self) -> None:
        """Answer the parsed requests in order until one needs to wait for the socket."""
        while not self.busy and not self.closed:
            if self.pending:
                req = self.pending.popleft()
                if not self.pending and (self.eof or self.stopped_parsing) and not self.failed:
                    req.keep = False  # the last one this connection will answer
                self._request(req)
                continue
            if self.failed is not None:
                req, self.failed = self.failed, None
                self.req = req
                answer = req.answer or error(req.status, text=_REASONS.get(req.status, "Error"))
                self._respond(answer, keep=False)
                return
            if self.eof or self.stopped_parsing:
                self.close()
                return
            if not self.reading:
                self._read_on()
            return

    def _request(self, req: Request) -> None:
        self.req = req
        method, target, keep = req.method, req.target, req.keep
        if req.upload is not None:  # published in a thread: the loop serves on meanwhile
            self.busy = True
            fut = self.worker.uploads.finish(req.upload)
            req.upload = None
            fut.add_done_callback(lambda f: self.loop.call_soon_threadsafe(self._deferred, f, _same, keep))
            return
        if method not in (b"GET", b"HEAD"):
            resp = error(405, text="Method Not Allowed")
            resp.headers.append("Allow: GET, HEAD")
            self._respond(resp, keep)
            return
        try:
            result = self.worker.site.handle(method, target, req.headers)
        except Exception as exc:  # one request fails, the worker serves on
            shown = self.worker.redact(log_text(target))
            print(f"cas-server: {shown}: {describe(exc)}", file=sys.stderr)
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

    def _send(self, data, more: bool) -> int:
        """Bytes of `data` the socket took (0 when it takes none now)."""
        try:
            return self.sock.send(data, _MSG_MORE if more else 0)
        except (BlockingIOError, InterruptedError):
            return 0

    def _respond(self, resp: Response, keep: bool) -> None:
        method = self.req.method if self.req else b"GET"
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
        self.stream = resp.stream if method != b"HEAD" else None
        self.resp = resp
        self.last_sent = time.monotonic()
        try:
            n = self._send(data, resp.fd >= 0)
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
        if self.out is not None:
            try:
                n = self._send(self.out, False)
            except OSError:
                self._finish_log()
                self.close()
                return
            if n:
                self.last_sent = time.monotonic()
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
            self.last_sent = time.monotonic()
            self.sent += n
            self.file_offset += n
            self.file_count -= n
            if self.file_count == 0:
                os.close(self.file_fd)
                self.file_fd = -1
        if self.stream is not None:
            self._pull()
            return
        self._sent()

    def _pull(self) -> None:
        """The next chunk of a streamed body, read in a thread (a bucket's read blocks): one at
        a time, once the client took the last, so a slow client slows the reading."""
        self._write_off()
        stream = self.stream
        future = self.worker.site.executor.submit(next, stream, None)
        future.add_done_callback(lambda f: self.loop.call_soon_threadsafe(self._pulled, f, stream))

    def _pulled(self, future: Future, stream) -> None:
        if self.closed or self.stream is not stream:
            if hasattr(stream, "close"):
                stream.close()
            return
        exc = future.exception()
        if exc is not None:  # the headers are out: the client sees a short body and a close
            print(f"cas-server: {describe(exc)}", file=sys.stderr)
            self._finish_log()
            self.close()
            return
        chunk = future.result()
        if chunk is None:
            self.stream = None
            self._sent()
            return
        self.last_sent = time.monotonic()
        try:
            n = self._send(chunk, False)
        except OSError:
            self._finish_log()
            self.close()
            return
        self.sent += n
        if n < len(chunk):
            self.out = memoryview(chunk)[n:]
            self._write_on()
            return
        self._pull()

    def _sent(self) -> None:
        """The response is out: log it, then the next request, or close."""
        self._write_off()
        self._finish_log()
        self.busy = False
        self.last = time.monotonic()
        if self.close_after:
            if not self.eof and (self.stopped_parsing or self.pending or self.m_open):
                self._linger()  # input the client sent after what was answered is unread
            else:
                self.close()
            return
        self._process()

    def _finish_log(self) -> None:
        req, self.req = self.req, None
        if req is None:
            return
        resp, self.resp = self.resp, None
        status = resp.status if resp is not None else 0
        path = resp.log_path if resp is not None and resp.log_path else None
        shown = path.encode("utf-8", "surrogateescape") if path is not None else req.target
        headers = req.headers
        is_token = self.worker.site.tokens.is_token
        referer, agent = headers.get(b"referer"), headers.get(b"user-agent")
        now = time.time()
        # method and version come from the parser: known tokens, nothing to hide or escape
        # a refused request is shown as the line it sent (as nginx's $request), redacted
        request = redact(log_text(shown), is_token)
        if req.version:
            request = f"{req.method.decode()} {request} {req.version.decode()}"
        self.worker.log.write(
            f'{self.addr} - - [{self.worker.log.stamp(now)}] "{request}" {status} '
            f'{self.sent} "{redact(log_text(referer), is_token) if referer else "-"}" '
            f'"{redact(log_text(agent), is_token) if agent else "-"}" '
            f"{time.monotonic() - req.start:.4f}\n"
        )


def _same(resp: Response) -> Response:
    return resp


_date_sec = -1
_date_text = ""


def _date() -> str:
    global _date_sec, _date_text
    now = int(time.time())
    if now != _date_sec:
        _date_sec = now
        _date_text = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))
    return _date_text
