"""A request as llhttp hands it over: its head's limits, the parser's callbacks, the body.

`RequestParsing` is the half of a `serve.http.Connection` that llhttp calls back while it reads
(heads and bodies, Content-Length and chunked); the other half answers. A callback that finds the
request unacceptable raises `Refuse`: the parser stops, the request is answered with its status
and the connection closed, since what follows it on the connection cannot be trusted.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import TYPE_CHECKING

from casconsole.serve.logs import describe
from casconsole.serve.site import Response

if TYPE_CHECKING:
    from casconsole.serve.upload import Upload

MAX_HEAD = 16 * 1024  # request line + headers
MAX_HEADERS = 100
MAX_BODY = 1 << 20  # a body other than an upload's is read only to be refused

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_VERSIONS = {"1.1": b"HTTP/1.1", "1.0": b"HTTP/1.0"}


class Request:
    """One parsed request, waiting for its turn on its connection."""

    __slots__ = (
        "answer",
        "body",
        "headers",
        "keep",
        "method",
        "start",
        "status",
        "target",
        "upload",
        "version",
    )

    def __init__(self, method, target, version, headers, keep, start, body=b"", status=0, answer=None):
        self.method: bytes = method
        self.target: bytes = target
        self.version: bytes = version
        self.headers: dict[bytes, bytes] = headers
        self.keep: bool = keep
        self.start: float = start
        self.body: bytes = body
        self.status: int = status  # non-zero: answer with this error, then close
        self.answer: Response | None = answer  # the error's own answer, when it has one
        self.upload: Upload | None = None  # a PUT's body, complete in its staging file


class Refuse(Exception):
    """Raised in a parser callback: the request is answered with `status` and the connection
    closed (what follows it on the connection cannot be trusted)."""

    def __init__(self, status: int, answer: Response | None = None):
        super().__init__(status)
        self.status = status
        self.answer = answer


class RequestParsing:
    """llhttp's callbacks: the message being parsed kept in the connection's `m_*` slots, each
    complete request queued on `pending` for its turn."""

    __slots__ = ()

    def on_message_begin(self) -> None:
        self.m_open = self.m_head = True
        self.m_start = time.monotonic()
        self.m_url = b""
        self.m_headers = {}
        self.m_body = None
        self.m_size = 0

    def on_url(self, url: bytes) -> None:
        self.m_url += url
        self.m_size += len(url)
        if self.m_size > MAX_HEAD:
            raise Refuse(431)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.m_size += len(name) + len(value) + 4
        if self.m_size > MAX_HEAD:
            raise Refuse(431)
        headers = self.m_headers
        name = name.lower()
        value = value.strip(b" \t")
        if name in headers:
            if name == b"host":
                raise Refuse(400)  # two Hosts: which one a proxy used is anyone's guess
            headers[name] += b", " + value  # a list header sent in parts
        else:
            if len(headers) >= MAX_HEADERS:
                raise Refuse(431)
            headers[name] = value

    def on_headers_complete(self) -> None:
        self.m_head = False
        parser = self.parser
        version = _VERSIONS.get(parser.get_http_version())
        if version is None:
            raise Refuse(400)
        method = parser.get_method()
        headers = self.m_headers
        if (b"upgrade" in headers or method == b"CONNECT") and parser.should_upgrade():
            raise Refuse(405 if method == b"CONNECT" else 400)
        if b"transfer-encoding" in headers or headers.get(b"content-length", b"0") != b"0":
            if method in (b"GET", b"HEAD"):
                raise Refuse(400)  # a body where none belongs: refused, not skipped
            self.m_body = []
        if method == b"PUT":
            self._begin_upload(headers)
        self.m_request = Request(
            method, self.m_url, version, headers, parser.should_keep_alive(), self.m_start
        )

    def _begin_upload(self, headers: dict[bytes, bytes]) -> None:
        """Judge an upload by its head: refused before its body is read (and the connection
        closed after the answer), or its body goes to a staging file as it arrives."""
        uploads = self.worker.uploads
        if uploads is None:
            raise Refuse(405)
        try:
            got = uploads.begin(self.m_url, headers)
        except Exception as exc:  # a bug must not take the worker down
            print(f"cas-server: upload: {describe(exc)}", file=sys.stderr)
            raise Refuse(500) from None
        if isinstance(got, Response):
            raise Refuse(got.status, got)
        self.m_upload, self.m_body = got, None
        if headers.get(b"expect", b"").lower() == b"100-continue" and not self.busy and not self.pending:
            with contextlib.suppress(OSError):  # 14 bytes on an idle socket; if not, the client goes on
                self._send(_CONTINUE, False)

    def on_body(self, data: bytes) -> None:
        upload = self.m_upload
        if upload is not None:
            refused = upload.write(data)
            if refused is not None:  # too large, or the disk refused: already removed
                self.m_upload = None
                raise Refuse(refused.status, refused)
            return
        body = self.m_body
        if body is None:
            return
        body.append(data)
        if sum(map(len, body)) > MAX_BODY:
            raise Refuse(413)

    def on_message_complete(self) -> None:
        req = self.m_request
        if self.m_body:
            req.body = b"".join(self.m_body)
        req.upload, self.m_upload = self.m_upload, None
        self.pending.append(req)
        self.m_open = False

    def _drop_upload(self) -> None:
        """An upload whose body will not be complete: nothing of it is kept."""
        upload, self.m_upload = self.m_upload, None
        if upload is not None:
            upload.abort()
