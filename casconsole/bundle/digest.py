"""The sha256 of what a bundle carries, taken as the bytes stream past: from a file, from a
bucket's object, into a volume, out of one."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable

from casconsole.bundle.events import BYTES_STEP
from casconsole.errors import Cancelled


def digest_chunks(
    chunks: Iterable[bytes],
    on_bytes: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
    out=None,
) -> tuple[int, str]:
    """(size, sha256) of a stream of chunks, each also written to `out` when given; `on_bytes(n)`
    every BYTES_STEP bytes (the caller's last event carries the rest), Cancelled between steps."""
    h = hashlib.sha256()
    size = pending = 0
    for chunk in chunks:
        h.update(chunk)
        if out is not None:
            out.write(chunk)
        size += len(chunk)
        pending += len(chunk)
        if pending >= BYTES_STEP:
            if cancel is not None and cancel.is_set():
                raise Cancelled
            if on_bytes is not None:
                on_bytes(pending)
            pending = 0
    return size, h.hexdigest()
