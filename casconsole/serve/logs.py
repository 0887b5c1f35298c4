"""cas-server's logs: the access log (one line a request, shared by the workers) and one-line
error messages instead of tracebacks."""

from __future__ import annotations

import asyncio
import os
import sys
import time

_PRINTABLE = bytes(range(0x20, 0x7F))
_LOG_ESCAPE = {c: f"\\x{c:02x}" for c in range(256) if c not in _PRINTABLE or c in b'"\\'}


def log_text(value: bytes | None) -> str:
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


def request_line(data: bytes, url: bytes) -> bytes:
    """The raw request line of a refused request, for the log, at most 200 bytes: the line of
    `data` holding the target parsed so far, or (none parsed) the first line after the last
    complete head in `data`."""
    if url:
        i = data.find(url)
        if i < 0:
            return url[:200]
        start = data.rfind(b"\n", 0, i) + 1
        end = data.find(b"\n", i)
        line = data[start : end if end >= 0 else len(data)]
    else:
        parts = [part for part in data.split(b"\r\n\r\n") if part.strip()]
        line = parts[-1].split(b"\n", 1)[0] if parts else b""
    return line.rstrip(b"\r")[:200] or b"-"
