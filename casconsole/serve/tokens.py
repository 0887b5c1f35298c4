"""Access tokens for private channels and uploads, stored hashed under the mirror.

A token is a random URL-safe string shown once, when it is added; the store keeps only its
SHA-256 (a fast hash is enough for 192 random bits: there is nothing to brute-force). The
file is `<mirror_dir>/.cas/tokens.json`, replaced atomically, so a running server picks up
additions and revocations on its next request without a restart.

A token opens its channel for reading; one added with upload rights (`"upload": true` in its
record) may also PUT packages into it. The key is optional, so files written before uploads
existed read as they are, and a server that predates uploads reads the new file and simply
grants no uploads.

A bucket mirror keeps the same file as the object `.cas/tokens.json` (`mirror` is then its
Storage): changed with If-Match on the version read, again from the fresh one when another
`cas-server token` changed it meanwhile; the servers read it again every REFRESH seconds
(serve/bucket.py), so a revocation applies there within that.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from casconsole.errors import StorageError
from casconsole.fsutil import atomic_write_bytes
from casconsole.layout import STATE_DIR, TOKENS, state_dir

_VERSION = 1


class TokenStoreError(StorageError):
    """The token file cannot be read or written; `str()` is the user-facing message."""


@dataclass(frozen=True)
class TokenRecord:
    id: str  # short public handle for `list` and `revoke`; says nothing about the token
    channel: str
    sha256: str
    created: str  # ISO 8601, UTC
    upload: bool = False  # may PUT packages into the channel (and read it)

    def as_json(self) -> dict:
        doc = {"id": self.id, "channel": self.channel, "sha256": self.sha256, "created": self.created}
        if self.upload:  # written only when set: a read token's record is as it always was
            doc["upload"] = True
        return doc

    @property
    def rights(self) -> str:
        return "read, upload" if self.upload else "read"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def store_path(mirror_dir: Path) -> Path:
    return state_dir(mirror_dir) / TOKENS


def _parse(data: bytes, path: Path | str) -> list[TokenRecord]:
    try:
        doc = json.loads(data)
        if doc.get("version") != _VERSION:
            raise ValueError(f"unsupported version {doc.get('version')!r}")
        records = []
        for t in doc["tokens"]:
            upload = t.get("upload", False)
            if not isinstance(upload, bool):
                raise ValueError(f"token {t.get('id')!r}: upload is {upload!r}, not true or false")
            records.append(
                TokenRecord(str(t["id"]), str(t["channel"]), str(t["sha256"]), str(t["created"]), upload)
            )
        return records
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TokenStoreError(f"{path}: not a valid token file ({exc})") from None


def read_tokens(mirror_dir) -> list[TokenRecord]:
    """All token records; a missing file means no tokens. `mirror_dir` is a folder or a
    bucket mirror's Storage."""
    if not isinstance(mirror_dir, (str, os.PathLike)):
        return _read_object(mirror_dir)[0]
    path = store_path(mirror_dir)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise TokenStoreError(f"{path}: cannot read ({exc.strerror})") from None
    return _parse(data, path)


@contextlib.contextmanager
def _locked(mirror_dir: Path) -> Iterator[None]:
    """Serialise read-modify-write cycles of concurrent `cas-server token` commands."""
    lock = store_path(mirror_dir).with_suffix(".lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise TokenStoreError(f"{lock}: cannot open ({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write(mirror_dir: Path, records: list[TokenRecord]) -> None:
    doc = {"version": _VERSION, "tokens": [r.as_json() for r in records]}
    path = store_path(mirror_dir)
    try:
        atomic_write_bytes(path, json.dumps(doc, indent=1).encode() + b"\n")
        os.chmod(path, 0o600)  # the hashes are not secrets, but nobody else needs them
    except OSError as exc:
        raise TokenStoreError(f"{path}: cannot write ({exc.strerror})") from None


def _read_object(storage) -> tuple[list[TokenRecord], str | None]:
    """The records of a bucket mirror's token object and its ETag (None: there is none)."""
    from casconsole.storage import ObjectNotFound

    key = f"{STATE_DIR}/{TOKENS}"
    try:
        data, info = storage.get(key)
    except ObjectNotFound:
        return [], None
    return _parse(data, storage.where(key)), info.etag


def _update(mirror, change) -> None:
    """Apply `change(records) -> new records or None` under the store's lock (a folder), or
    conditionally on the version read (a bucket), again on the fresh one when it lost."""
    if isinstance(mirror, (str, os.PathLike)):
        with _locked(Path(mirror)):
            new = change(read_tokens(Path(mirror)))
            if new is not None:
                _write(Path(mirror), new)
        return
    from casconsole.storage import WriteConflict

    for _ in range(20):
        records, etag = _read_object(mirror)
        new = change(records)
        if new is None:
            return
        doc = {"version": _VERSION, "tokens": [r.as_json() for r in new]}
        data = json.dumps(doc, indent=1).encode() + b"\n"
        try:
            mirror.put(f"{STATE_DIR}/{TOKENS}", data, if_match=etag, if_none_match=etag is None)
            return
        except WriteConflict:
            continue
    raise TokenStoreError(f"{mirror.where(STATE_DIR + '/' + TOKENS)}: changed by others again and again")


def new_token() -> str:
    """A new token: 24 random bytes, URL-safe, never starting with `-` (one in 64 would, and
    `cas-upload --token -x...` is then read as an option)."""
    token = secrets.token_urlsafe(24)
    while token.startswith("-"):
        token = secrets.token_urlsafe(24)
    return token


def add_token(mirror_dir, channel: str, upload: bool = False) -> tuple[str, TokenRecord]:
    """Create a token for `channel` (with `upload`, one that may also upload packages into it);
    returns the plain token (shown once) and its record. `mirror_dir` is a folder or a bucket
    mirror's Storage."""
    token = new_token()
    made: list[TokenRecord] = []

    def change(records: list[TokenRecord]) -> list[TokenRecord]:
        ids = {r.id for r in records}
        tid = secrets.token_hex(4)
        while tid in ids:
            tid = secrets.token_hex(4)
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
        made[:] = [TokenRecord(tid, channel, hash_token(token), now.replace("+00:00", "Z"), upload)]
        return [*records, made[0]]

    _update(mirror_dir, change)
    return token, made[0]


def revoke_tokens(mirror_dir, channel: str, ids: list[str] | None) -> list[TokenRecord]:
    """Remove the channel's tokens with these ids (all of them when `ids` is None).

    Returns what was removed; an id that names no token of the channel is an error and
    nothing is changed.
    """
    gone: list[TokenRecord] = []

    def change(records: list[TokenRecord]) -> list[TokenRecord] | None:
        mine = [r for r in records if r.channel == channel]
        if ids is None:
            gone[:] = mine
        else:
            known = {r.id for r in mine}
            unknown = [i for i in ids if i not in known]
            if unknown:
                raise TokenStoreError(
                    f"no token {', '.join(unknown)} for channel {channel!r}"
                    f" (see `cas-server token list {channel}`)"
                )
            gone[:] = [r for r in mine if r.id in ids]
        return [r for r in records if r not in gone] if gone else None

    _update(mirror_dir, change)
    return gone


class TokenChecker:
    """The server's view of the store: re-read when the file changes, checked per request.

    A stat per check keeps revocation immediate; an unreadable or corrupt file denies every
    token (fail closed) and is reported once through `on_error`.
    """

    def __init__(self, mirror_dir: Path, on_error=None):
        self.path = store_path(mirror_dir)
        self._key: tuple[int, int, int] | None = None
        self._grants: dict[str, frozenset[str]] = {}
        self._uploads: dict[str, frozenset[str]] = {}
        self._on_error = on_error
        self._reported: str | None = None

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._key, self._grants, self._uploads = None, {}, {}
            return
        except OSError as exc:
            self._fail(f"{self.path}: cannot stat ({exc.strerror})")
            return
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        if key == self._key:
            return
        try:
            records = _parse(self.path.read_bytes(), self.path)
        except FileNotFoundError:
            self._key, self._grants, self._uploads = None, {}, {}
            return
        except (OSError, TokenStoreError) as exc:
            self._fail(str(exc) if isinstance(exc, TokenStoreError) else f"{self.path}: {exc}")
            return
        grants: dict[str, set[str]] = {}
        uploads: dict[str, set[str]] = {}
        for r in records:
            grants.setdefault(r.sha256, set()).add(r.channel)
            if r.upload:
                uploads.setdefault(r.sha256, set()).add(r.channel)
        self._grants = {h: frozenset(c) for h, c in grants.items()}
        self._uploads = {h: frozenset(c) for h, c in uploads.items()}
        self._key = key
        self._reported = None

    def _fail(self, message: str) -> None:
        self._key, self._grants, self._uploads = None, {}, {}
        if self._on_error is not None and message != self._reported:
            self._reported = message
            self._on_error(message)

    def channels(self, token: str) -> frozenset[str]:
        """The channels this token opens (empty for an unknown or revoked token)."""
        self._refresh()
        return self._grants.get(hash_token(token), frozenset())

    def allows(self, token: str, channel: str) -> bool:
        return channel in self.channels(token)

    def may_upload(self, token: str, channel: str) -> bool:
        """May this token PUT packages into `channel`? (Upload rights, not just read.)"""
        self._refresh()
        return channel in self._uploads.get(hash_token(token), frozenset())

    def is_token(self, candidate: str) -> bool:
        """Is `candidate` one of the stored tokens? (To hide tokens in log lines.)"""
        self._refresh()
        return hash_token(candidate) in self._grants
