"""Volumes: the carried files as one byte stream cut into `bundle.001`, `bundle.002`, ...

Every volume but the last holds exactly the volume size, so a file may span two volumes and
no space is lost; the manifest gives each file's offset in the stream. FAT32, the filesystem
of most USB sticks, holds files of at most 4 GiB - 1 byte: the default volume size stays below
that, and an export onto a FAT filesystem refuses a larger one before writing anything.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
FAT_MAX_FILE = 4 * GiB - 1
DEFAULT_VOLUME_SIZE = 4 * GiB - MiB  # fits FAT32 with room to spare
MIN_VOLUME_SIZE = 1 * MiB
MAX_VOLUMES = 999  # bundle.001 ... bundle.999
FAT_TYPES = ("vfat", "msdos", "fat", "umsdos")
VOLUME_NAME = re.compile(r"^bundle\.[0-9]{3}$")
PART_SUFFIX = ".part"
COPY_CHUNK = 1 << 20

_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": KiB, "m": MiB, "g": GiB, "t": 1 << 40}


def parse_size(text: str) -> int:
    """`4G`, `4GiB`, `700M`, `1.5g`, `1048576` -> bytes (units are powers of 1024);
    ValueError with a message saying what is expected."""
    match = _SIZE.match(text or "")
    if not match:
        raise ValueError(f"{text!r} is not a size (e.g. 4G, 700M, 1.5G or a number of bytes)")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * _UNITS[unit])


def volume_name(number: int) -> str:
    """The name of volume `number` (1-based): bundle.001."""
    return f"bundle.{number:03d}"


def volumes_needed(total: int, volume_size: int) -> int:
    return -(-total // volume_size) if total else 0


# ---------------------------------------------------------------- the target's filesystem


def existing_ancestor(path: Path) -> Path:
    """`path`, or its nearest ancestor that exists (where a folder to be made would live)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def free_space(path: Path) -> int:
    """Bytes free for us on the filesystem that holds (or will hold) `path`."""
    return shutil.disk_usage(existing_ancestor(path)).free


def filesystem_type(path: Path) -> str:
    """The type of the filesystem holding `path` (`ext4`, `vfat`, `tmpfs`...), from
    /proc/self/mountinfo; "" where that cannot be told."""
    target = os.path.realpath(existing_ancestor(path))
    best, fstype = "", ""
    try:
        lines = Path("/proc/self/mountinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right.split():
            continue
        point = _unescape(fields[4])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, fstype = point, right.split()[0]
    return fstype


def _unescape(text: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def is_fat(fstype: str) -> bool:
    return fstype.lower() in FAT_TYPES


def fsync_folder(folder: Path) -> None:
    """Make a folder's new names durable (renames into it); best effort where it cannot be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---------------------------------------------------------------- writing


class VolumeWriter:
    """Writes a byte stream into volumes of `volume_size` bytes in `folder`.

    A volume is written as `.bundle.NNN.part`, fsynced (the stick will be pulled out) and
    renamed to `bundle.NNN` once complete. `volumes` lists (name, size) of those finished.
    """

    def __init__(self, folder: Path, volume_size: int):
        self.folder = folder
        self.volume_size = volume_size
        self.volumes: list[tuple[str, int]] = []
        self._fh = None
        self._written = 0

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            if self._fh is None:
                self._open()
            room = self.volume_size - self._written
            piece = view[:room]
            self._fh.write(piece)
            self._written += len(piece)
            view = view[len(piece) :]
            if self._written == self.volume_size:
                self._finish()

    def _open(self) -> None:
        name = volume_name(len(self.volumes) + 1)
        self._fh = open(self.folder / f".{name}{PART_SUFFIX}", "wb")  # noqa: SIM115 (closed in _finish)
        self._written = 0

    def _finish(self) -> None:
        name = volume_name(len(self.volumes) + 1)
        fh, self._fh = self._fh, None
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        os.replace(self.folder / f".{name}{PART_SUFFIX}", self.folder / name)
        self.volumes.append((name, self._written))

    def close(self) -> list[tuple[str, int]]:
        """Finish the last volume; the (name, size) of every volume."""
        if self._fh is not None:
            if self._written:
                self._finish()
            else:
                self.abort()
        return self.volumes

    def abort(self) -> None:
        """Drop the volume being written (a failed export)."""
        if self._fh is not None:
            name = volume_name(len(self.volumes) + 1)
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None
            with contextlib.suppress(OSError):
                (self.folder / f".{name}{PART_SUFFIX}").unlink()


# ---------------------------------------------------------------- reading


class VolumeProblem(ValueError):
    """A volume missing, truncated or too long; the message names it."""


class VolumeReader:
    """Reads ranges of the stream held by the volumes (name, size) in `folder`."""

    def __init__(self, folder: Path, volumes: list[tuple[str, int]]):
        self.folder = folder
        self.volumes = volumes
        self.starts: list[int] = []
        offset = 0
        for _, size in volumes:
            self.starts.append(offset)
            offset += size
        self.total = offset
        self._open: tuple[int, object] | None = None

    def check(self) -> None:
        """Every volume is there with its exact size (VolumeProblem names the first that is not)."""
        for number, (name, size) in enumerate(self.volumes, 1):
            path = self.folder / name
            try:
                st = path.stat()
            except FileNotFoundError:
                raise VolumeProblem(
                    f"{path}: volume {number} of {len(self.volumes)} is missing (copy every bundle.NNN)"
                ) from None
            except OSError as exc:
                raise VolumeProblem(f"{path}: {exc.strerror}") from None
            if st.st_size < size:
                raise VolumeProblem(f"{path}: truncated ({st.st_size:,} of {size:,} bytes)")
            if st.st_size > size:
                raise VolumeProblem(f"{path}: {st.st_size:,} bytes, the manifest says {size:,}")

    def read(self, offset: int, size: int) -> Iterator[memoryview]:
        """The bytes of [offset, offset + size) in chunks, across volumes as needed."""
        if offset + size > self.total:
            raise VolumeProblem(f"range {offset:,}+{size:,} lies past the end of the volumes")
        buffer = bytearray(COPY_CHUNK)
        while size > 0:
            index = self._volume_at(offset)
            fh = self._file(index)
            inside = offset - self.starts[index]
            fh.seek(inside)
            want = min(size, COPY_CHUNK, self.volumes[index][1] - inside)
            got = fh.readinto(memoryview(buffer)[:want])
            if not got:
                raise VolumeProblem(f"{self.folder / self.volumes[index][0]}: ended early (truncated?)")
            yield memoryview(buffer)[:got]
            offset += got
            size -= got

    def _volume_at(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, offset) - 1

    def _file(self, index: int):
        if self._open is not None and self._open[0] == index:
            return self._open[1]
        self.close()
        fh = open(self.folder / self.volumes[index][0], "rb")  # noqa: SIM115 (closed in close())
        self._open = (index, fh)
        return fh

    def close(self) -> None:
        if self._open is not None:
            with contextlib.suppress(OSError):
                self._open[1].close()
            self._open = None

    def __enter__(self) -> VolumeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
