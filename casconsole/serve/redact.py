"""Tokens never reach a log line: what cas-server writes to its access log and stderr.

Two rules, applied to the finished text of a line. A `/t/<anything>/` segment is shown as
`/t/<token>/` wherever it stands (a request target, a Referer, a malformed request line), in
any case and percent-encoded form of the `t`. And any run of token characters long enough to
hold a token is checked, window by window, against the token store: one that holds a real
token is shown as `<token>`, so a token a client put in a query, a header or a broken request
is hidden too, while long package names are logged as they are.
"""

from __future__ import annotations

import re
from collections.abc import Callable

TOKEN_LENGTH = 32  # secrets.token_urlsafe(24), as `cas-server token add` makes them
_LONGEST_CHECKED = 256  # longer runs of token characters are hidden whole, unchecked

_PREFIX = re.compile(r"(?i)((?:/|%2f)+(?:t|%74|%54)(?:/|%2f)+)[^/?#\s\"\\]+")
_RUN = re.compile("[A-Za-z0-9_-]{" + str(TOKEN_LENGTH) + ",}")


def redact(text: str, is_token: Callable[[str], bool] | None = None) -> str:
    """`text` (one field of a log line) with every token hidden (see the module's docstring).

    Cheap tests come first: this runs for every request, and most targets hold neither."""
    if "/t" in text or "/T" in text or "%" in text:
        text = _PREFIX.sub(r"\1<token>", text)
    if is_token is None or len(text) < TOKEN_LENGTH:
        return text
    return _RUN.sub(lambda m: _hide_run(m.group(0), is_token), text)


def _hide_run(run: str, is_token: Callable[[str], bool]) -> str:
    if len(run) > _LONGEST_CHECKED:
        return "<redacted>"
    for i in range(len(run) - TOKEN_LENGTH + 1):
        if is_token(run[i : i + TOKEN_LENGTH]):
            return "<token>"
    return run
