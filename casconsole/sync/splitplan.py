"""The dry run in two processes: the platforms' half here, noarch's in a forked child.

Decoding, deciding and checking 500,000 records is Python work that holds the GIL from start to
end, so one process leaves the second core idle (threads measured no gain; a child forked later
paid in copy-on-write faults what it saved). Forked first, before either has read a byte, each
half fetches, decodes, decides and checks its own subdirs in its own memory. They meet at a few
fixed points, the `swap`s of DependencyCheck.run and Plan.build, to ask each other about what
their own records cannot answer: the specs none of their kept records meets, what dropped the
records an unmet spec names, the entries that match nothing. The child writes its subdirs' part
of the report into a memory file, which this half copies into its own output in its place, so
the report is the one-process report, byte for byte.

Used only where the halves make the same plan: not with a whitelist closure (its walk crosses
subdirs), and only from a process with no other thread (a fork copies the calling thread alone).
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading
import traceback
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, NoReturn

import msgspec

from casconsole.errors import EXIT_FAILED, EXIT_INTERRUPTED, CasError, DiskError
from casconsole.settings import Settings
from casconsole.sync.dryrun import make_plan

if TYPE_CHECKING:
    from casconsole.selection.plan import Plan, SubdirPlan

# writes one subdir's part of the report (the text section, or the JSON member) to a byte stream
Section = Callable[["Plan", "SubdirPlan", IO[bytes]], None]

_HEADER = struct.Struct("<Q")


class SplitError(CasError):
    """The other half ended without the answer this one waited for."""


def splittable(settings: Settings) -> bool:
    """Whether a dry run of `settings` can run in two halves and make the same plan."""
    closure = (settings.whitelist_closure or settings.curated) and settings.whitelist
    return (
        hasattr(os, "fork")
        and threading.active_count() == 1
        and "noarch" in settings.subdirs
        and len(settings.subdirs) > 1
        and not closure
    )


def make_split_plan(settings: Settings, section: Section) -> tuple[Plan, Half] | None:
    """This half's plan (the platforms), and the child's half, which has `section` write noarch's
    part of the report; None when no child could be started (the caller plans in one process).
    The caller checks `splittable` first, and stops the half when done."""
    platforms = tuple(s for s in settings.subdirs if s != "noarch")
    try:
        mine, theirs = socket.socketpair()
        part = _memory_file()
    except OSError:  # no file left to have: the plan is made in one process, as before
        return None
    # Ctrl-C held back across the fork: a KeyboardInterrupt in the child before its own handler
    # is set would unwind it into this function's caller, the parent's code
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        pid = os.fork()
    except OSError:
        pid = -1
    if pid == 0:  # the child: noarch's half; Ctrl-C ends it at once; it never returns
        signal.signal(signal.SIGINT, lambda *_: os._exit(EXIT_INTERRUPTED))
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        mine.close()
        _child(settings, _Channel(theirs, platforms), section, part)
    theirs.close()
    if pid < 0:  # no process left to have: one process, as before
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        mine.close()
        os.close(part)
        return None
    half = Half(pid, _Channel(mine, ("noarch",)), part)
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        return make_plan(settings, subdirs=list(platforms), elsewhere=half.channel), half
    except BaseException:
        half.stop()
        raise


class Half:
    """The child's half of a split plan, seen from the parent."""

    def __init__(self, pid: int, channel: _Channel, part: int):
        self.pid, self.channel, self.part = pid, channel, part

    def write_rest(self, out: IO[bytes]) -> None:
        """Copy the child's part of the report to `out` once it is written (its error, if it
        failed, raised here); the child is reaped."""
        try:
            self.channel.recv()
            os.lseek(self.part, 0, os.SEEK_SET)
            out.flush()
            while chunk := os.read(self.part, 1 << 20):
                out.write(chunk)
        finally:
            self.stop()

    def stop(self) -> None:
        """End the child (done already, as a rule), reap it, and let go of its part."""
        if self.pid:
            try:
                if os.waitpid(self.pid, os.WNOHANG) == (0, 0):
                    os.kill(self.pid, signal.SIGKILL)
                    os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.pid = 0
            os.close(self.part)
            self.channel.close()


def _child(settings: Settings, channel: _Channel, section: Section, part: int) -> NoReturn:
    status = 1
    try:
        try:
            plan = make_plan(settings, subdirs=["noarch"], elsewhere=channel)
            with open(part, "wb", closefd=False) as out:
                for sp in plan.subdirs.values():
                    section(plan, sp, out)
            channel.send("ok", None)
            status = 0
        except Exception as exc:  # told to the parent, which reports it as its own
            channel.send("error", _describe(exc))
        channel.wait()
    finally:
        os._exit(status)


def _describe(exc: Exception) -> list:
    """An exception as the parent raises it again: entry_point then reports it as it would
    have in one process (the same message and exit status)."""
    if isinstance(exc, OSError):
        exc = DiskError.of(exc)  # what entry_point reports an OSError as
    if isinstance(exc, CasError):
        return [exc.message, exc.exit_status]
    traceback.print_exc()  # a bug: its traceback, as one process would show it
    return [f"the dry run's noarch process failed: {type(exc).__name__}: {exc}", EXIT_FAILED]


class _Channel:
    """One end of the socket pair between the halves: length-prefixed msgpack messages, each
    `[kind, payload]`. A send runs in a thread, so that both halves can send at once (a
    question of 100,000 specs is more than a socket buffer) before each reads the other's."""

    def __init__(self, sock: socket.socket, subdirs: tuple[str, ...]):
        self.sock, self.subdirs = sock, subdirs
        self._sending: threading.Thread | None = None

    def swap(self, mine: Any) -> Any:
        self.send("ok", mine)
        return self.recv()

    def send(self, kind: str, payload: Any) -> None:
        self.wait()
        frame = msgspec.msgpack.encode([kind, payload])
        self._sending = threading.Thread(
            target=self._send_all, args=(_HEADER.pack(len(frame)), frame), daemon=True, name="dry-run-half"
        )
        self._sending.start()

    def _send_all(self, header: bytes, frame: bytes) -> None:
        try:
            self.sock.sendall(header)
            self.sock.sendall(frame)
        except OSError:  # the other half is gone: its absence is found by the next recv
            pass

    def close(self) -> None:
        self.sock.close()

    def wait(self) -> None:
        if self._sending is not None:
            self._sending.join()
            self._sending = None

    def recv(self) -> Any:
        (size,) = _HEADER.unpack(self._read(_HEADER.size))
        try:
            kind, payload = msgspec.msgpack.decode(self._read(size))
        except (msgspec.DecodeError, ValueError, TypeError):
            raise SplitError(
                f"the dry run's {'/'.join(self.subdirs)} process sent what it should not"
            ) from None
        if kind == "error":
            message, status = payload
            raise CasError(message, status)
        return payload

    def _read(self, size: int) -> bytearray:
        buf = bytearray(size)
        view, got = memoryview(buf), 0
        while got < size:
            n = self.sock.recv_into(view[got:])
            if n == 0:
                raise SplitError(f"the dry run's {'/'.join(self.subdirs)} process ended before it answered")
            got += n
        return buf


def _memory_file() -> int:
    """A file in memory for the child's part of the report (a temporary file where there is none)."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("cas-sync-dry-run", os.MFD_CLOEXEC)
    import tempfile

    return os.dup(tempfile.TemporaryFile().fileno())
