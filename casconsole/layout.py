"""Names on disk, defined once: `<mirror_dir>/<channel>/<subdir>/`, the state folder `.cas/`,
the known subdirs, and the rules a channel or subdir folder name must follow."""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

# every subdir conda knows; a folder of another name is not a subdir
KNOWN_SUBDIRS = frozenset(
    {
        "noarch",
        "linux-32", "linux-64", "linux-aarch64", "linux-armv6l", "linux-armv7l",
        "linux-ppc64", "linux-ppc64le", "linux-riscv32", "linux-riscv64", "linux-s390x",
        "linux-loongarch64",
        "osx-64", "osx-arm64",
        "win-32", "win-64", "win-arm64",
        "freebsd-64", "zos-z", "emscripten-wasm32", "wasi-wasm32",
    }
)  # fmt: skip

PACKAGE_SUFFIXES = (".conda", ".tar.bz2")


def split_package_name(fn: str) -> tuple[str, str] | None:
    """`numpy-1.0-0.conda` -> ("numpy-1.0-0", ".conda"); None when not a package file name."""
    for suffix in PACKAGE_SUFFIXES:
        if fn.endswith(suffix) and len(fn) > len(suffix):
            return fn[: -len(suffix)], suffix
    return None


# the mirror's own state, under <mirror_dir>/.cas/ (never served: dot-names are hidden)
STATE_DIR = ".cas"
SYNC_LOCK = "sync.lock"
WORKERS_LOCK = "sync-workers.lock"
SYNC_LOG = "sync.jsonl"
UPSTREAM_CACHE = "upstream"  # .cas/upstream/<channel>/<subdir>.cache
VERIFIED = "verified"  # .cas/verified/<channel>/<subdir>.tsv
TOKENS = "tokens.json"
# a cas-server started with --detach (the console's Server screen): its pid, output, access log
SERVER_PID = "server.pid"
SERVER_OUTPUT = "server.out"
SERVER_ACCESS_LOG = "server-access.log"
GZIP_CACHE = "cache/gzip"

# a channel's own index cache, under <channel>/.cache/
INDEX_CACHE_DIR = ".cache"

# the PyPI mirror, beside the channels (docs/pypi.md): <mirror_dir>/pypi/simple/<project>/ holds
# the project's pages (index.html, PEP 503; index.json, PEP 691), <mirror_dir>/pypi/files/<project>/
# its files and their PEP 658 `.metadata`; the verified files are .cas/verified/pypi/files.tsv
PYPI_DIR = "pypi"
PYPI_SIMPLE = "simple"
PYPI_FILES = "files"
PYPI_PAGE_HTML = "index.html"
PYPI_PAGE_JSON = "index.json"
PYPI_METADATA_SUFFIX = ".metadata"


# an S3 bucket name (the rules S3 and SeaweedFS share: 3-63 characters, lower case, digits, dots
# and hyphens, starting and ending with a letter or digit)
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class BucketURL:
    """A mirror kept in S3-compatible object storage: `s3://<bucket>/<key>` (`key` empty, or a
    prefix without leading or trailing slash).

    Deliberately not a path: `Path(BucketURL(...))` and `os.scandir` refuse it, so no code meant
    for a folder can quietly run on a bucket's name. `/` makes the URL of a key below it.
    """

    bucket: str
    key: str = ""

    @classmethod
    def parse(cls, text: str) -> BucketURL | None:
        """The bucket URL `text` names, None when it is not an `s3://` URL; ValueError (the
        reason) for an `s3://` URL that cannot name a bucket location."""
        if not text.lower().startswith("s3://"):
            return None
        bucket, _, key = text[5:].partition("/")
        if not _BUCKET_NAME.match(bucket) or ".." in bucket:
            raise ValueError(f"{bucket!r} is not a bucket name (3-63 of a-z, 0-9, '.', '-')")
        parts = [part for part in key.split("/") if part]
        if any(part in (".", "..") or any(ord(c) < 32 or c == "\\" for c in part) for part in parts):
            raise ValueError(f"{text!r}: the key may hold no '.', '..', backslash or control characters")
        return cls(bucket, "/".join(parts))

    def __truediv__(self, name: str) -> BucketURL:
        return BucketURL(self.bucket, f"{self.key}/{name}" if self.key else str(name))

    @property
    def name(self) -> str:
        return self.key.rpartition("/")[2]

    @property
    def parent(self) -> BucketURL:
        return BucketURL(self.bucket, self.key.rpartition("/")[0])

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"


def is_bucket(location: object) -> bool:
    return isinstance(location, BucketURL)


def state_dir(mirror_dir: Path | str) -> Path:
    """Where the mirror keeps its state: lock, status log, verified-file records, caches, tokens."""
    return Path(mirror_dir) / STATE_DIR


def upstream_cache_dir(mirror_dir: Path | str, channel: str) -> Path:
    return state_dir(mirror_dir) / UPSTREAM_CACHE / channel


def verified_path(mirror_dir: Path | str, channel: str, subdir: str) -> Path:
    return state_dir(mirror_dir) / VERIFIED / channel / f"{subdir}.tsv"


def machine_subdir() -> str:
    """The conda subdir of the running machine, e.g. `linux-64`."""
    system = {"Linux": "linux", "Darwin": "osx", "Windows": "win"}.get(platform.system(), "linux")
    machine = platform.machine().lower()
    arch = {
        "x86_64": "64", "amd64": "64", "i386": "32", "i686": "32", "x86": "32",
        "aarch64": "aarch64", "arm64": "arm64" if system == "osx" else "aarch64",
        "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64",
    }.get(machine, "64")  # fmt: skip
    if system == "win" and arch == "aarch64":
        arch = "arm64"
    return f"{system}-{arch}"


def channel_name_problem(name: object) -> str | None:
    """Why `name` cannot be a channel folder under the mirror, or None.

    A channel is one plain folder name: no path separator, not starting with a dot (dot-names
    are the mirror's own state and temporary files), not `.` or `..`.
    """
    if not isinstance(name, str) or not name:
        return "expected a channel folder name"
    if "/" in name or "\\" in name:
        return f"{name!r} holds a path separator: a channel is one folder name"
    if name.startswith("."):
        return f"{name!r} starts with a dot: dot-names are the mirror's own"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"{name!r} holds control characters"
    return None


def is_subdir_name(name: str) -> bool:
    return name in KNOWN_SUBDIRS


def subdir_folders(channel: Path) -> list[str]:
    """The subdir folders of a channel folder, sorted."""
    try:
        with os.scandir(channel) as entries:
            return sorted(e.name for e in entries if e.name in KNOWN_SUBDIRS and e.is_dir())
    except OSError:
        return []


def find_channels(mirror_dir: Path) -> list[Path]:
    """Every channel folder under `mirror_dir`: a folder with at least one subdir folder."""
    try:
        with os.scandir(mirror_dir) as entries:
            children = sorted(Path(e.path) for e in entries if not e.name.startswith(".") and e.is_dir())
    except OSError:
        return []
    return [child for child in children if subdir_folders(child)]
