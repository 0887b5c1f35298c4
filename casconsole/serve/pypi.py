"""The PyPI mirror as a simple index: `/pypi/simple/` for pip, beside the conda channels.

- `/pypi/simple/`: the projects (PEP 503 HTML or PEP 691 JSON), listed from the folders of
  `<mirror_dir>/pypi/simple/` that hold a page, the private ones only for a token that opens them;
- `/pypi/simple/<project>/`: the page the sync wrote (`index.html` or `index.json`), chosen by
  the client's Accept header (PEP 691: `application/vnd.pypi.simple.v1+json`, `...v1+html`,
  `text/html`; q-values weigh; HTML when nothing is said; 406 when nothing we have is acceptable),
  with `Vary: Accept`; a name that is not normalized is redirected to its PEP 503 form;
- `/pypi/files/<project>/<file>` and its `.metadata` (PEP 658): the files, as every file is served
  (ranges, ETags, 304s).

Private projects (`pypi.private_projects`, or all of them when `pypi` is in `private_channels`)
answer only under `/t/<token>/pypi/...` to a token made for `pypi` (`cas-server token add pypi`),
and the same 404 as a missing project otherwise. Nothing here runs a selection or imports the sync.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Callable, Iterable
from urllib.parse import quote

from casconsole.layout import PYPI_DIR, PYPI_FILES, PYPI_PAGE_HTML, PYPI_PAGE_JSON, PYPI_SIMPLE

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "application/vnd.pypi.simple.v1+html"
# media type -> (format, content type answered)
_OFFERED = {
    JSON_TYPE: ("json", JSON_TYPE),
    "application/vnd.pypi.simple.latest+json": ("json", JSON_TYPE),
    HTML_TYPE: ("html", HTML_TYPE),
    "application/vnd.pypi.simple.latest+html": ("html", HTML_TYPE),
    "text/html": ("html", "text/html; charset=utf-8"),
}
_WILDCARDS = {"*/*": ("html", "text/html; charset=utf-8"), "text/*": ("html", "text/html; charset=utf-8")}


def negotiate(accept: bytes | None) -> tuple[str, str] | None:
    """(format, content type) the Accept header prefers; HTML without one; None when nothing
    offered is acceptable (406)."""
    if not accept or not accept.strip():
        return _OFFERED["text/html"]
    best: tuple[float, int, tuple[str, str]] | None = None
    for order, part in enumerate(accept.decode("latin-1").split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        media = media.lower()
        offer = _OFFERED.get(media) or _WILDCARDS.get(media)
        if offer is None:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        exact = media in _OFFERED
        key = (q, exact, -order)
        if q > 0 and (best is None or key > best[:3]):
            best = (*key, offer)  # type: ignore[assignment]
    return best[3] if best is not None else None  # type: ignore[index,misc]


def normalize(name: str) -> str:
    """PEP 503: runs of -, _ and . become one -, lower case."""
    out, dash = [], False
    for c in name:
        if c in "-_.":
            dash = True
            continue
        if dash and out:
            out.append("-")
        dash = False
        out.append(c.lower())
    return "".join(out)


class PypiRoutes:
    """The `/pypi/...` part of the site; `site` helpers are passed in (no import of site.py)."""

    def __init__(self, root: str, private: Iterable[str], whole_private: bool):
        self.simple = os.path.join(root, PYPI_DIR, PYPI_SIMPLE)
        self.files = os.path.join(root, PYPI_DIR, PYPI_FILES)
        self.private = frozenset(normalize(n) for n in private)
        self.whole_private = whole_private  # `pypi` is in private_channels
        self._roots: dict[tuple, bytes] = {}

    def visible(self, project: str, granted: Callable[[], bool]) -> bool:
        """Public, or private and opened by the request's token (asked only then)."""
        return not (self.whole_private or project in self.private) or granted()

    def route(
        self,
        segs: list[str],
        trailing: bool,
        headers: dict[bytes, bytes],
        granted: Callable[[], bool],
    ) -> tuple[str, object]:
        """What to answer for `segs` (starting with "pypi"), as (kind, detail):
        ("redirect", segments), ("page", (path, content type)), ("root", (body, content type)),
        ("file", path), ("406", None) or ("404", None)."""
        if self.whole_private and not granted():
            return "404", None
        if len(segs) == 1 or (len(segs) == 2 and segs[1] == PYPI_SIMPLE and not trailing):
            return "redirect", [PYPI_DIR, PYPI_SIMPLE]
        kind = segs[1]
        if kind == PYPI_SIMPLE:
            return self._simple(segs[2:], trailing, headers, granted)
        if kind == PYPI_FILES and len(segs) == 4 and not trailing:
            project = segs[2]
            if project != normalize(project) or not self.visible(project, granted):
                return "404", None
            return "file", os.path.join(self.files, project, segs[3])
        return "404", None

    def _simple(self, rest: list[str], trailing: bool, headers, granted) -> tuple[str, object]:
        if len(rest) > 1:
            return "404", None
        offer = negotiate(headers.get(b"accept"))
        if not rest:
            if offer is None:
                return "406", None
            return "root", (self._root_page(offer[0], lambda: bool(self.private) and granted()), offer[1])
        name = rest[0]
        wanted = normalize(name)
        if not self.visible(wanted, granted):
            return "404", None
        if name != wanted or not trailing:
            if not os.path.isfile(os.path.join(self.simple, wanted, PYPI_PAGE_HTML)):
                return "404", None
            return "redirect", [PYPI_DIR, PYPI_SIMPLE, wanted]
        if offer is None:
            return "406", None
        page = PYPI_PAGE_JSON if offer[0] == "json" else PYPI_PAGE_HTML
        return "page", (os.path.join(self.simple, wanted, page), offer[1])

    def _root_page(self, fmt: str, granted: Callable[[], bool]) -> bytes:
        with_private = granted()
        try:
            st = os.stat(self.simple)
        except OSError:
            st = None
        key = (st.st_mtime_ns if st else 0, fmt, with_private)
        page = self._roots.get(key)
        if page is None:
            names = []
            try:
                with os.scandir(self.simple) as entries:
                    for entry in entries:
                        name = entry.name
                        if name[0] == "." or not self.visible(name, lambda: with_private):
                            continue
                        if os.path.isfile(os.path.join(entry.path, PYPI_PAGE_HTML)):
                            names.append(name)
            except OSError:
                pass
            names.sort()
            page = _json_root(names) if fmt == "json" else _html_root(names)
            if len(self._roots) > 16:
                self._roots.clear()
            self._roots[key] = page
        return page


def _html_root(names: list[str]) -> bytes:
    links = "".join(f'<a href="{quote(n)}/">{html.escape(n)}</a><br>\n' for n in names)
    return (
        '<!DOCTYPE html>\n<html>\n<head>\n<meta name="pypi:repository-version" content="1.1">\n'
        f"<title>Simple index</title>\n</head>\n<body>\n{links}</body>\n</html>\n"
    ).encode()


def _json_root(names: list[str]) -> bytes:
    doc = {"meta": {"api-version": "1.1"}, "projects": [{"name": n} for n in names]}
    return json.dumps(doc).encode() + b"\n"
