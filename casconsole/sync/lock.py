"""One sync per mirror: an exclusive lock on `<mirror_dir>/.cas/sync.lock` holding the pid.

The lock is an `flock` on the file, so the kernel drops it when the holder dies, however it
dies (SIGKILL included): a lock left by a dead process is simply taken over, and the pid it
left in the file is reported. The pid in the file is only ever informative.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from casconsole.errors import SyncError
from casconsole.layout import SYNC_LOCK, state_dir
from casconsole.procutil import pid_alive


class SyncLocked(SyncError):
    """Another sync holds the mirror; `pid` is its process id (None if it has not said yet)."""

    def __init__(self, pid: int | None, path: Path | str, who: str | None = None):
        self.pid = pid
        self.path = path
        who = who or (f"pid {pid}" if pid else "another process")
        super().__init__(f"another sync of this mirror is running ({who}; lock {path})")


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


class SyncLock:
    """`acquire()` or SyncLocked; `stale_pid` is the dead holder whose lock was taken over."""

    def __init__(self, mirror_dir: Path):
        self.path = state_dir(mirror_dir) / SYNC_LOCK
        self.stale_pid: int | None = None
        self._fd: int | None = None

    def acquire(self) -> SyncLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            for _ in range(20):  # the holder may be between taking the lock and writing its pid
                if pid:
                    break
                time.sleep(0.01)
                pid = _read_pid(fd)
            os.close(fd)
            raise SyncLocked(pid, self.path) from None
        except BaseException:
            os.close(fd)
            raise
        previous = _read_pid(fd)
        self.stale_pid = previous if previous and previous != os.getpid() else None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    @property
    def stale(self) -> str | None:
        """The dead holder whose lock was taken over, as a warning names it."""
        return f"pid {self.stale_pid}" if self.stale_pid else None

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> SyncLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_holder(mirror_dir: Path) -> int | None:
    """The pid of the sync holding the mirror's lock, or None when it is free.

    Reads the pid and checks the process is alive; it does not touch the lock, so it never
    gets in the way of a sync that is starting.
    """
    path = state_dir(mirror_dir) / SYNC_LOCK
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    pid = int(text)
    return pid if pid_alive(pid) else None
