"""HTTPS for cas-server: the same connection loop over the standard library's SSL sockets.

A site that wants TLS without a web server in front gives a certificate and its key
(`--tls-cert`, `--tls-key`). Each accepted socket is wrapped without a handshake; the
handshake then runs on the event loop like the rest (want-read, want-write), within the
header timeout. Files cannot go through `sendfile` once they must be encrypted: they are
read in blocks and sent through the SSL socket.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from pathlib import Path

from casconsole.errors import ServerError
from casconsole.serve.http import RECV_SIZE, Connection
from casconsole.serve.worker import Worker

FILE_BLOCK = 256 * 1024  # bytes read from a file and encrypted at a time


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context for `cert` (a PEM chain) and `key`; ServerError says what is wrong."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    ctx.set_alpn_protocols(["http/1.1"])
    for path in (cert, key):
        if not Path(path).is_file():
            raise ServerError(f"TLS: {path}: no such file")
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except FileNotFoundError as exc:
        raise ServerError(f"TLS: {exc.filename or cert}: no such file") from None
    except PermissionError as exc:
        raise ServerError(f"TLS: {exc.filename or cert}: permission denied") from None
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise ServerError(f"TLS: cannot use certificate {cert} with key {key}: {reason}") from None
    return ctx


def wrapper(ctx: ssl.SSLContext):
    """The Worker's `wrap`: a TLS connection for each accepted socket."""

    def wrap(worker: Worker, sock: socket.socket, addr: str) -> Connection:
        tls = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return TLSConnection(worker, tls, addr)

    return wrap


class TLSConnection(Connection):
    """A Connection whose reads and writes go through an SSL socket, after its handshake."""

    __slots__ = ("accepted", "shaken")

    def __init__(self, worker: Worker, sock: ssl.SSLSocket, addr: str):
        self.shaken = False
        self.accepted = time.monotonic()
        super().__init__(worker, sock, addr)

    def _handshake(self) -> bool:
        """Go on with the handshake; True once it is done."""
        try:
            self.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._write_off()
            return False
        except ssl.SSLWantWriteError:
            self._write_on()
            return False
        except (ssl.SSLError, OSError):  # not TLS, a bad client hello, a reset
            self.close()
            return False
        self.shaken = True
        self._write_off()
        return True

    def check_timeout(self, now: float) -> None:
        if not self.shaken:
            if now - self.accepted > self.worker.timeout / 2:
                self.close()
            return
        super().check_timeout(now)

    def _recv(self) -> bytes | None:
        if not self.shaken and not self._handshake():
            return None
        try:
            data = self.sock.recv(RECV_SIZE)
            while data and self.sock.pending():  # decrypted bytes the selector cannot see
                data += self.sock.recv(RECV_SIZE)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError, InterruptedError):
            return None
        except ssl.SSLZeroReturnError:
            return b""
        except ssl.SSLError as exc:
            raise OSError(str(exc)) from None
        return data

    def _send(self, data, more: bool) -> int:
        try:
            return self.sock.send(data)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError, InterruptedError):
            return 0
        except ssl.SSLError as exc:
            raise OSError(str(exc)) from None

    def _on_writable(self) -> None:
        if not self.shaken:
            if self._handshake():
                self._on_readable()  # the client may have sent its request already
            return
        super()._on_writable()

    def _send_file(self) -> None:
        """The file in blocks, each sent whole (through `out`) before the next is read."""
        while self.file_fd >= 0 or self.out is not None:
            if self.out is None:
                try:
                    block = os.pread(self.file_fd, min(FILE_BLOCK, self.file_count), self.file_offset)
                except OSError:
                    block = b""
                if not block:  # the file shrank under us: the promised length cannot be sent
                    self._finish_log()
                    self.close()
                    return
                self.file_offset += len(block)
                self.file_count -= len(block)
                if self.file_count == 0:
                    os.close(self.file_fd)
                    self.file_fd = -1
                self.out = memoryview(block)
            try:
                n = self._send(self.out, False)
            except OSError:
                self._finish_log()
                self.close()
                return
            if n == 0:
                self._write_on()
                return
            self.last_sent = time.monotonic()
            self.sent += n
            self.out = self.out[n:] if n < len(self.out) else None
        self._sent()
