"""Secrets in URLs, hidden for anything shown: a password (`user:<hidden>@host`) and an
anaconda.org-style channel token (`/t/<hidden>/channel`).

Settings views (`cas-sync --show`, the console) and previews show values through here; the
files written for clients (a `.condarc`) carry the secrets, since conda needs them.
"""

from __future__ import annotations

import re

HIDDEN = "<hidden>"

# scheme://user:password@ -> scheme://user:<hidden>@ (a password may hold anything but '@' and '/')
_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*:)[^@/\s]+(?=@)")
# /t/<token>/ anywhere in a URL or path; a placeholder such as <TOKEN> is left as it is
_TOKEN = re.compile(r"(?P<head>/t/)(?!<[A-Za-z_-]*>/)[^/\s?#]+(?=/|$)")


def redact_url(text: str) -> str:
    """`text` with any URL password and `/t/<token>/` segment replaced by `<hidden>`."""
    text = _PASSWORD.sub(lambda m: m["head"] + HIDDEN, text)
    return _TOKEN.sub(lambda m: m["head"] + HIDDEN, text)


def has_secret(text: str) -> bool:
    """Whether `text` holds a URL password or a channel token (a real one, not a placeholder)."""
    return redact_url(text) != text


def redact_value(value: object) -> object:
    """A settings value for showing: every string in it (lists and mappings too) redacted."""
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v) for v in value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    return value
