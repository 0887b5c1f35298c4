"""Prefix replacement planned at build time, carried out at install time by the shell alone.

The target has no Python, perl or conda, so every placeholder occurrence is found here and the
file's new content is written down as a list of operations the installer's `sh` performs with
`head`, `tail` and `printf` (see `installer.sh`, `cas_edit`):

- `C start count`: the original bytes [start, start+count)
- `E start`: the original bytes from `start` to the end
- `P`: the new prefix
- `Z k L`: k × (L − len(prefix)) NUL bytes (the padding of a binary replacement)
- `X name`: literal bytes kept in the payload (`lit/<name>`)
- `B`: the prefix's last name (for a `#!` line shortened to `#!/usr/bin/env NAME`)

The semantics are conda's (`conda/core/portability.py`), so a prefix looks the same whichever
tool installed it:

- text: every occurrence of the placeholder becomes the prefix; the file's length changes.
  Then, as conda does, a first line `#!...` longer than the limit (127 bytes on linux, 512 on
  osx, as rattler has it) becomes `#!/usr/bin/env NAME OPTIONS`. Whether it is too long depends
  on the prefix, so such a file carries a second list of operations, chosen at install time.
- binary: each NUL-terminated string that holds the placeholder is rewritten with the prefix in
  its place and padded with NULs to its old length; the file keeps its length. A prefix longer
  than the placeholder cannot be padded: the installer refuses it before writing anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SHEBANG_MAX = {"linux": 127, "osx": 512}
# conda's: `#!`, spaces, the executable (an escaped space or no whitespace), the options
_SHEBANG = re.compile(rb"#!(?:[ ]*)(/(?:\\ |[^ \n\r\t])*)(.*)")

Op = tuple  # ("C", start, count) | ("E", start) | ("P",) | ("Z", k, L) | ("X", bytes) | ("B",)


@dataclass
class Edit:
    """How one file of a package becomes its installed self."""

    path: str  # relative to the prefix
    binary: bool
    placeholder_len: int
    ops: list[Op]
    mode: int = 0o644  # the file's permission bits, given back after the rewrite
    # the long-shebang alternative: taken when shebang_len + shebang_count × (len(prefix) −
    # placeholder_len) exceeds the platform's limit
    alt_ops: list[Op] = field(default_factory=list)
    shebang_len: int = 0
    shebang_count: int = 0

    @property
    def occurrences(self) -> int:
        return sum(1 for op in self.ops if op[0] == "P")


def find_all(data: bytes, needle: bytes, start: int = 0, end: int | None = None) -> list[int]:
    """Offsets of the non-overlapping occurrences of `needle`, left to right (as bytes.replace)."""
    end = len(data) if end is None else end
    found = []
    pos = data.find(needle, start, end)
    while pos != -1:
        found.append(pos)
        pos = data.find(needle, pos + len(needle), end)
    return found


def _copy(ops: list[Op], start: int, end: int) -> None:
    if end > start:
        ops.append(("C", start, end - start))


def _replaced(ops: list[Op], data: bytes, placeholder: bytes, start: int, end: int) -> None:
    """Ops for data[start:end] with every occurrence of the placeholder replaced."""
    pos = start
    for at in find_all(data, placeholder, start, end):
        _copy(ops, pos, at)
        ops.append(("P",))
        pos = at + len(placeholder)
    _copy(ops, pos, end)


def plan_edit(
    path: str, data: bytes, placeholder: str, binary: bool, platform: str, mode: int = 0o644
) -> Edit | None:
    """The edit of a file with a placeholder, or None when there is nothing to change."""
    ph = placeholder.encode("utf-8")
    if not ph:
        return None
    if binary:
        return _plan_binary(path, data, ph, mode)
    return _plan_text(path, data, ph, platform, mode)


def _plan_binary(path: str, data: bytes, ph: bytes, mode: int) -> Edit | None:
    ops: list[Op] = []
    pos = 0
    # conda's pattern: the placeholder, then the rest of its C string up to the NUL
    for match in re.finditer(re.escape(ph) + rb"([^\0]*?)\0", data):
        start, end = match.span()
        _copy(ops, pos, start)
        _replaced(ops, data, ph, start, end)
        ops.append(("Z", match.group().count(ph), len(ph)))
        pos = end
    if not ops:
        return None
    ops.append(("E", pos))
    return Edit(path, True, len(ph), _merge(ops), mode)


def _plan_text(path: str, data: bytes, ph: bytes, platform: str, mode: int) -> Edit | None:
    ops: list[Op] = []
    _replaced(ops, data, ph, 0, len(data))
    edit = Edit(path, False, len(ph), _merge(_ends_open(ops, len(data))), mode)
    newline = data.find(b"\n")
    line_end = len(data) if newline == -1 else newline
    match = _SHEBANG.fullmatch(data, 0, line_end)
    limit = SHEBANG_MAX["osx" if platform.startswith("osx") else "linux"]
    if match is not None and not re.search(rb"[ \t\r\n]", ph):
        alt = _env_shebang(data, ph, match, line_end)
        count = len(find_all(data, ph, 0, line_end))
        if count == 0:  # its length does not depend on the prefix: decide now
            if line_end > limit:
                edit.ops = alt
        else:
            edit.alt_ops, edit.shebang_len, edit.shebang_count = alt, line_end, count
    if edit.occurrences == 0 and not edit.alt_ops and edit.ops == [("E", 0)]:
        return None
    return edit


def _env_shebang(data: bytes, ph: bytes, match: re.Match, line_end: int) -> list[Op]:
    """The file with its first line as conda shortens it: `#!/usr/bin/env NAME OPTIONS`, NAME
    being what follows the last / of the executable once the prefix is in (from the file, or,
    when no / follows the last placeholder, the prefix's own last name: op `B`)."""
    exe_start, exe_end = match.span(1)
    last_end = max((at + len(ph) for at in find_all(data, ph, 0, exe_end)), default=exe_start)
    slash = data.rfind(b"/", last_end, exe_end)
    ops: list[Op]
    if slash != -1:
        ops = [("X", b"#!/usr/bin/env " + data[slash + 1 : exe_end])]
    else:
        ops = [("X", b"#!/usr/bin/env "), ("B",)]
        _copy(ops, last_end, exe_end)
    _replaced(ops, data, ph, match.start(2), line_end)
    _replaced(ops, data, ph, line_end, len(data))
    return _merge(_ends_open(ops, len(data)))


def _ends_open(ops: list[Op], size: int) -> list[Op]:
    """A final copy that runs to the end of the file is written `E`: no length to count."""
    if ops and ops[-1][0] == "C" and ops[-1][1] + ops[-1][2] == size:
        ops[-1] = ("E", ops[-1][1])
    elif not ops or ops[-1][0] != "E":
        ops.append(("E", size))
    return ops


def _merge(ops: list[Op]) -> list[Op]:
    """Adjacent copies of adjacent ranges become one (fewer processes at install time)."""
    out: list[Op] = []
    for op in ops:
        prev = out[-1] if out else None
        if prev and prev[0] == "C" and op[0] in ("C", "E") and prev[1] + prev[2] == op[1]:
            out[-1] = ("C", prev[1], prev[2] + op[2]) if op[0] == "C" else ("E", prev[1])
        else:
            out.append(op)
    return out


def entry_point_edit(path: str, python: str, body: bytes, placeholder: str) -> tuple[bytes, Edit]:
    """A noarch: python entry point script (content with the placeholder, and its edit).

    As conda writes them: `#!PREFIX/bin/pythonX.Y`, or, when that line would be too long for the
    kernel, a `/bin/sh` preamble that execs the interpreter (valid Python and valid sh at once).
    """
    ph = placeholder.encode()
    interpreter = b"/bin/" + python.encode()
    first = b"#!" + ph + interpreter + b"\n"
    content = first + body
    ops: list[Op] = [("X", b"#!"), ("P",), ("E", 2 + len(ph))]
    alt: list[Op] = [
        ("X", b"#!/bin/sh\n'''exec' \""),
        ("P",),
        ("X", interpreter + b'" "$0" "$@"\n' + b"' '''\n"),
        ("E", len(first)),
    ]
    # conda counts the shebang with its newline: len("#!" + executable + "\n") > limit
    return content, Edit(path, False, len(ph), ops, 0o755, alt, len(first), 1)


def render(edit: Edit, data: bytes, prefix: str, platform: str) -> bytes:
    """What the installer's shell writes for `edit` (the same operations, in Python): for
    checking plans against conda's own algorithm without running a shell."""
    new = prefix.encode()
    ops = edit.ops
    if edit.alt_ops:
        limit = SHEBANG_MAX["osx" if platform.startswith("osx") else "linux"]
        if edit.shebang_len + edit.shebang_count * (len(new) - edit.placeholder_len) > limit:
            ops = edit.alt_ops
    out = bytearray()
    for op in ops:
        kind = op[0]
        if kind == "C":
            out += data[op[1] : op[1] + op[2]]
        elif kind == "E":
            out += data[op[1] :]
        elif kind == "P":
            out += new
        elif kind == "Z":
            out += b"\0" * (op[1] * (op[2] - len(new)))
        elif kind == "B":
            out += new.rsplit(b"/", 1)[1]
        elif kind == "X":
            out += op[1]
    return bytes(out)
