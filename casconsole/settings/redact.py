"""Secrets out of sight: the password of a URL's `user:password@` and anaconda.org-style
`/t/<token>/` path segments, replaced by `***` wherever a URL is shown (settings, logs, errors).

The settings keep the real values (a proxy needs its password); only what is shown to a person
or written to a log goes through `redact`.
"""

from __future__ import annotations

import re

HIDDEN = "***"

_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
# userinfo: up to the last '@' before the path; a password may itself hold an '@'
_USERINFO = re.compile(r"^(?P<scheme>[^:]+://)(?P<info>[^/?#]*)@")
_TOKEN = re.compile(r"/t/[^/?#]+")


def redact_url(url: str) -> str:
    """`url` with its password (or a user-only userinfo, often a token) and `/t/<token>` hidden."""

    def userinfo(match: re.Match[str]) -> str:
        user, colon, _ = match.group("info").partition(":")
        shown = f"{user}:{HIDDEN}" if colon else HIDDEN
        return f"{match.group('scheme')}{shown}@"

    url = _USERINFO.sub(userinfo, url, count=1)
    return _TOKEN.sub(f"/t/{HIDDEN}", url)


def redact(text: str) -> str:
    """`text` with every URL in it redacted (see `redact_url`)."""
    if "://" not in text:
        return text
    return _URL.sub(lambda m: redact_url(m.group(0)), text)
