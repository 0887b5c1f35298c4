"""The file a download is written to: unnamed until it needs a name, written around the page
cache where it can be.

A download is written to an unnamed file in its folder (O_TMPFILE) and linked to its name only
once verified; one that runs long, or is cut off, is given its name `.<fn>.part` first, so that
the next attempt resumes it. Why unnamed: creating a named file holds the folder's lock while
the filesystem finds an inode, and the download threads all create in one folder; measured on
this project's VM after a mirror was deleted, that wait and the rename after it were a fifth of
the sync's CPU, spent spinning on the lock.

Large files are written with O_DIRECT, around the page cache: a mirror writes far more than it
soon reads back, so caching it would only push the server's hot files (the repodata) out, and
filling fresh page-cache pages is most of the kernel's work in a sync (measured on this
project's 2-core VM: 1 GiB written buffered cost 1.6 to 2.6 s of CPU, with O_DIRECT 0.07 s).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from pathlib import Path
from typing import Protocol

BLOCK = 4096  # what O_DIRECT writes must be aligned to (a page: enough for any block device)


class Named(Protocol):
    """What a part file needs to know of its download (a sync.fetch.FileJob)."""

    fn: str

    @property
    def dest(self) -> str: ...

    @property
    def part(self) -> str: ...


def probe_unnamed(folder: str | Path) -> int | None:
    """`folder`'s descriptor if an unnamed file made there can be linked to a name, else None."""
    if not hasattr(os, "O_TMPFILE"):
        return None
    dirfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    probe = f".cas-probe-{os.getpid()}-{threading.get_ident()}"
    try:
        fd = os.open(".", os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC, 0o644, dir_fd=dirfd)
        try:
            _link_unnamed(fd, dirfd, probe)
        finally:
            os.close(fd)
        os.unlink(probe, dir_fd=dirfd)
        return dirfd
    except OSError:
        os.close(dirfd)
        return None


def _link_unnamed(fd: int, dirfd: int, name: str) -> None:
    # linkat(2) of the /proc magic link, following it: os.link does that only with a dir_fd
    os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=dirfd, follow_symlinks=True)


class Part:
    """Where a download is written: its `.part` file, or an unnamed file in the same folder
    until it needs a name."""

    def __init__(self, job: Named, fd: int, dirfd: int | None):
        self.job = job
        self.fd = fd
        self.dirfd = dirfd
        self.named = dirfd is None

    @classmethod
    def open(cls, job: Named, dirfd: int | None) -> Part:
        """The `.part` an earlier attempt left, else a new file: unnamed, in the folder of
        `dirfd`, when there is one."""
        try:
            return cls(job, os.open(job.part, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC), None)
        except FileNotFoundError:
            pass
        if dirfd is not None:
            fd = os.open(".", os.O_WRONLY | os.O_TMPFILE | os.O_CLOEXEC, 0o644, dir_fd=dirfd)
            return cls(job, fd, dirfd)
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        return cls(job, os.open(job.part, flags, 0o644), None)

    def _link(self, name: str) -> None:
        assert self.dirfd is not None
        _link_unnamed(self.fd, self.dirfd, name)

    def name(self) -> None:
        """Give the file its `.part` name (a no-op once named)."""
        if self.named:
            return
        name = f".{self.job.fn}.part"
        try:
            self._link(name)
        except FileExistsError:  # a stray one, made since this attempt began
            os.unlink(self.job.part)
            self._link(name)
        self.named = True

    def keep(self) -> None:
        """Name what a failed or cancelled attempt wrote, so that the retry or the next sync resumes."""
        with contextlib.suppress(OSError):  # then it starts over: no worse than without a name
            if not self.named and os.fstat(self.fd).st_size:
                self.name()

    def place(self) -> None:
        """Put the file under its final name, replacing whatever is there."""
        if not self.named:
            try:
                self._link(self.job.fn)
                return
            except FileExistsError:  # a bad copy being repaired: replaced in one step
                self.name()
        os.replace(self.job.part, self.job.dest)


class Writer:
    """Writes a download to its file descriptor, with O_DIRECT while the data stays aligned:
    whole buffers go around the page cache, a file's unaligned tail through it."""

    def __init__(self, fd: int, direct: bool):
        self.fd = fd
        self.direct = direct and self._set_direct(True)

    def _set_direct(self, on: bool) -> bool:
        flags = fcntl.fcntl(self.fd, fcntl.F_GETFL)
        try:
            fcntl.fcntl(self.fd, fcntl.F_SETFL, flags | os.O_DIRECT if on else flags & ~os.O_DIRECT)
        except OSError:  # a filesystem without O_DIRECT: buffered it is
            return False
        return on

    def write(self, view: memoryview, final: bool) -> int:
        """Write `view`, or with O_DIRECT its aligned part unless `final`; bytes written."""
        if not self.direct:
            return _write_all(self.fd, view)
        cut = len(view) - len(view) % BLOCK
        try:
            written = _write_all(self.fd, view[:cut])
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: this filesystem wants another alignment
                raise
            self.direct = self._set_direct(False)
            return _write_all(self.fd, view)
        if final and written < len(view):  # the file's tail: through the page cache
            self.direct = self._set_direct(False)
            written += _write_all(self.fd, view[written:])
        return written


def _write_all(fd: int, view: memoryview) -> int:
    total = len(view)
    while view:
        view = view[os.write(fd, view) :]
    return total
