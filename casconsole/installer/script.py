"""The installer file: the shell script (`installer.sh`, filled in) followed by the payload tar.

The file's second line holds the SHA-256 of every byte after it (the rest of the script and
the payload), so the script finds a truncated or altered copy before it touches the prefix;
the script also knows its own total length, so a truncated copy fails at once. The third line
holds the installer's description as JSON, read back by `read_header` (the console's list).
The file is written beside its final name and renamed into place: never half-written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from casconsole.errors import StorageError

SHEBANG = b"#!/bin/sh\n"
SUM_TAG = b"# cas-installer-sha256 "
META_TAG = "# cas-installer-meta "
HEAD = len(SHEBANG) + len(SUM_TAG) + 64 + 1  # the two lines outside the checksum
CHUNK = 1 << 20


@dataclass(frozen=True)
class Header:
    """What the script is told about its installer."""

    name: str
    version: str
    platform: str
    default_prefix: str
    count: int
    max_prefix: int  # 0: any length
    shebang_max: int
    has_license: bool
    has_welcome: bool
    has_post_install: bool
    meta: dict  # the third line: shown by the console's list of installers

    @property
    def file_name(self) -> str:
        return f"{self.name}-{self.version}-{self.platform}.sh"


def sh_quote(text: str) -> str:
    """`text` as one single-quoted shell word."""
    return "'" + text.replace("'", "'\\''") + "'"


def render_script(header: Header, payload_size: int) -> bytes:
    """The script with its numbers filled in (the payload offset and the total length depend on
    the script's own length: rendered until they agree)."""
    template = resources.files("casconsole.installer").joinpath("installer.sh").read_text("utf-8")
    skip = 0
    while True:
        values = {
            "SHA256": "0" * 64,
            "META": json.dumps(header.meta, sort_keys=True, ensure_ascii=True),
            "TITLE": f"{header.name} {header.version} for {header.platform}",
            "FILE": header.file_name,
            "TOTAL": str(skip + payload_size),
            "NAME": sh_quote(header.name),
            "VERSION": sh_quote(header.version),
            "PLATFORM": sh_quote(header.platform),
            "DEFAULT_PREFIX": sh_quote(header.default_prefix),
            "COUNT": str(header.count),
            "HEAD": str(HEAD),
            "SKIP": str(skip),
            "MAX_PREFIX": str(header.max_prefix),
            "SHEBANG_MAX": str(header.shebang_max),
            "HAS_LICENSE": str(int(header.has_license)),
            "HAS_WELCOME": str(int(header.has_welcome)),
            "HAS_POST_INSTALL": str(int(header.has_post_install)),
        }
        text = template
        for key, value in values.items():
            text = text.replace(f"@@{key}@@", value)
        script = text.encode("utf-8")
        if len(script) == skip:
            assert script.startswith(SHEBANG + SUM_TAG) and script[HEAD - 1 : HEAD] == b"\n"
            return script
        skip = len(script)


def write_installer(target: Path, header: Header, payload: Path) -> tuple[int, str]:
    """Write the installer to `target` (atomically, mode 755); returns (size, its SHA-256)."""
    try:
        payload_size = payload.stat().st_size
        script = render_script(header, payload_size)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    except OSError as exc:
        raise StorageError(f"{exc.filename or target}: cannot write ({exc.strerror or exc})") from None
    try:
        checked = hashlib.sha256()
        whole = hashlib.sha256()
        with os.fdopen(fd, "w+b") as out, payload.open("rb") as source:
            out.write(script)
            checked.update(script[HEAD:])
            while chunk := source.read(CHUNK):
                out.write(chunk)
                checked.update(chunk)
            out.seek(len(SHEBANG) + len(SUM_TAG))
            out.write(checked.hexdigest().encode())
            out.flush()
            os.fsync(out.fileno())
            out.seek(0)
            while chunk := out.read(CHUNK):
                whole.update(chunk)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StorageError(f"{target}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return len(script) + payload_size, whole.hexdigest()


def read_header(path: Path) -> dict | None:
    """The description an installer carries on its third line, or None for another file."""
    try:
        with path.open("rb") as fh:
            head = fh.read(HEAD + 64 * 1024)
    except OSError:
        return None
    lines = head.split(b"\n", 3)
    if len(lines) < 4 or lines[0] + b"\n" != SHEBANG or not (lines[1] + b" ").startswith(SUM_TAG):
        return None
    line = lines[2].decode("utf-8", "replace")
    if not line.startswith(META_TAG):
        return None
    try:
        meta = json.loads(line[len(META_TAG) :])
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None
