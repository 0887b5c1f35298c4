"""One writer per bucket mirror: a lock object with a lease, `<prefix>/.cas/sync.lock`.

A folder mirror's lock is an `flock`, which the kernel drops when its holder dies. A bucket has
no such thing, so its lock is an object that says who holds it and until when:

    {"host": "...", "pid": 1234, "token": "...", "heartbeat": 1733.0, "lease": 60, "released": false}

- taken with a conditional create (If-None-Match: *), or by replacing a released or expired one
  with If-Match on the ETag read: of two contenders exactly one wins;
- kept alive by a heartbeat every BEAT seconds (If-Match on the ETag of the last beat);
- given back by writing it `released` (If-Match again), so a holder never frees a lock that
  was taken over from it.

When the holder dies (SIGKILL, a power cut, a lost network), its heartbeat stops. On the same
host a dead pid frees the lock at once; elsewhere the lock is free once neither its heartbeat
(the holder's clock) nor the object's Last-Modified (the storage's clock) is younger than the
lease: a minute, so clocks must agree within that (NTP). A holder whose beat is refused because
the lock was taken over from it (it was cut off longer than the lease) stops writing: `lost` is
set and `on_lost` is called, and every repodata it writes is conditional anyway.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

from casconsole.errors import CasError, StorageError
from casconsole.procutil import pid_alive
from casconsole.storage.base import Storage, WriteConflict

LOCK_KEY = ".cas/sync.lock"
LEASE = 60.0  # seconds a heartbeat vouches for its holder
BEAT = 10.0  # seconds between heartbeats


class LeaseHeld(StorageError):
    """Another process holds the bucket's lock; `holder` says who (host, pid, last heartbeat)."""

    def __init__(self, holder: dict, where: str):
        self.holder = holder
        self.where = where
        super().__init__(f"held by {describe(holder)} (lock {where})")


class LeaseLost(CasError):
    """The lock was taken over from this holder (its heartbeats failed for longer than the
    lease): it must stop writing."""


def describe(holder: dict) -> str:
    host, pid = holder.get("host") or "?", holder.get("pid") or "?"
    beat = holder.get("heartbeat")
    age = f", last heartbeat {max(0, time.time() - beat):.0f} s ago" if isinstance(beat, (int, float)) else ""
    return f"pid {pid} on {host}{age}"


def read_holder(storage: Storage, key: str = LOCK_KEY) -> dict | None:
    """Who holds the lock (its object's fields, `alive` added: the heartbeat is within the
    lease), or None when nobody does. For the health URL and `--status`."""
    found = storage.head(key)
    if found is None:
        return None
    try:
        data, info = storage.get(key)
    except StorageError:
        return None
    holder = _parse(data)
    if holder.get("released"):
        return None
    holder["alive"] = not _expired(holder, info.modified)
    return holder


def _parse(data: bytes) -> dict:
    try:
        holder = json.loads(data)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _expired(holder: dict, modified: float) -> bool:
    now = time.time()
    beat = holder.get("heartbeat")
    lease = holder.get("lease") if isinstance(holder.get("lease"), (int, float)) else LEASE
    beat_old = not isinstance(beat, (int, float)) or now - beat > lease
    return beat_old and now - modified > lease


class BucketLock:
    """`acquire()` (LeaseHeld when someone else holds it), `release()`; `stale` describes the
    dead holder whose lock was taken over, `lost` is set when the lock was taken from us."""

    def __init__(self, storage: Storage, key: str = LOCK_KEY, on_lost: Callable[[], None] | None = None):
        self.storage = storage
        self.key = key
        self.on_lost = on_lost
        self.stale: str | None = None
        self.lost = threading.Event()
        self._etag: str | None = None
        self._me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "token": uuid.uuid4().hex,
            "lease": LEASE,
        }
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _body(self, released: bool = False) -> bytes:
        return json.dumps({**self._me, "heartbeat": time.time(), "released": released}).encode() + b"\n"

    def acquire(self) -> BucketLock:
        try:
            self._etag = self.storage.put(self.key, self._body(), if_none_match=True)
        except WriteConflict:
            self._take_over()
        self._thread = threading.Thread(target=self._beat, name="cas-lease", daemon=True)
        self._thread.start()
        return self

    def _take_over(self) -> None:
        data, info = self.storage.get(self.key)
        holder = _parse(data)
        where = self.storage.where(self.key)
        if not holder.get("released"):
            same_host = holder.get("host") == self._me["host"]
            dead_here = same_host and not pid_alive(holder.get("pid"))
            if not dead_here and not _expired(holder, info.modified):
                raise LeaseHeld(holder, where)
            self.stale = describe(holder)
        try:
            self._etag = self.storage.put(self.key, self._body(), if_match=info.etag)
        except WriteConflict:  # another contender was quicker
            latest, _ = self.storage.get(self.key)
            raise LeaseHeld(_parse(latest), where) from None

    def _beat(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(BEAT):
            with self._lock:
                if self._stop.is_set():
                    return
                try:
                    self._etag = self.storage.put(self.key, self._body(), if_match=self._etag)
                    last_ok = time.monotonic()
                    continue
                except WriteConflict:
                    pass  # taken over: we were cut off longer than the lease
                except StorageError:
                    if time.monotonic() - last_ok < LEASE:
                        continue  # a passing failure: the lease still covers us
            self.lost.set()
            if self.on_lost is not None:
                self.on_lost()
            return

    def check(self) -> None:
        """LeaseLost if the lock was taken from us."""
        if self.lost.is_set():
            raise LeaseLost(f"{self.storage.where(self.key)}: the lock was taken over by another writer "
                            "(this one was cut off longer than the lease); stopped writing")  # fmt: skip

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=BEAT + 5)
            self._thread = None
        with self._lock:
            if self._etag is not None and not self.lost.is_set():
                with contextlib.suppress(StorageError):  # taken over, or unreachable: its lease ends it
                    self.storage.put(self.key, self._body(released=True), if_match=self._etag)
            self._etag = None

    def __enter__(self) -> BucketLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
