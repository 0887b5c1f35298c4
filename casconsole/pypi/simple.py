"""Reading an upstream project page of a simple index: PEP 691 JSON, or PEP 503 HTML.

A page is hostile input: the JSON is decoded by msgspec into typed structs (anything of the
wrong type is refused whole), the HTML read by the standard library's `html.parser` (anchors
only). Each file named is then screened: a plain file name (no path, no dot-name, no control
character, ASCII), a wheel or an sdist whose name is the page's project (`packaging.utils`
parses the names), a sha256 (or, from an old index, an md5) of the right form. A file that
fails is left out with the reason, for the plan's warnings; nothing from the page is ever
used as a path without this.
"""

from __future__ import annotations

import html.parser
import string
import urllib.parse
from dataclasses import dataclass, field

import msgspec
from packaging.tags import Tag
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from casconsole.errors import NetworkError

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "application/vnd.pypi.simple.v1+html"
# what we ask an index for: JSON first, HTML (either name) as the fallback
ACCEPT = f"{JSON_TYPE}, {HTML_TYPE};q=0.2, text/html;q=0.01"
SDIST_SUFFIXES = (".tar.gz", ".zip")
MAX_NAME = 250
_HEX = frozenset(string.hexdigits.lower())


class PageError(NetworkError):
    """An index page that cannot be read; the message names its URL."""


@dataclass(frozen=True)
class DistFile:
    """One file of a project as the upstream index offers it, screened."""

    project: NormalizedName
    filename: str
    url: str  # absolute, without the fragment
    version: Version
    kind: str  # "wheel" or "sdist"
    tags: frozenset[Tag]  # a wheel's tags; empty for an sdist
    sha256: str | None
    md5: str | None = None
    size: int | None = None  # PEP 691 1.1 gives it; otherwise learned before the download
    requires_python: str | None = None
    yanked: str | None = None  # None: not yanked; the reason ("" when none was given)
    metadata_sha256: str | None = None  # PEP 658: the .metadata file's sha256 ("" when offered unhashed)
    upload_time: str | None = None

    @property
    def has_metadata(self) -> bool:
        """The index serves this file's core metadata at `<url>.metadata` (PEP 658/714)."""
        return self.metadata_sha256 is not None

    @property
    def metadata_url(self) -> str:
        return self.url + ".metadata"


@dataclass
class ProjectPage:
    """A project's page: its files, and the files left out with why."""

    name: NormalizedName
    url: str
    files: list[DistFile] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # "<file>: why"
    format: str = "json"  # or "html"


# ---------------------------------------------------------------- screening a file


def name_problem(filename: str) -> str | None:
    """Why `filename` cannot be a file of the mirror, or None."""
    if not filename or len(filename) > MAX_NAME:
        return "an empty or too long name"
    if not filename.isascii() or any(c in filename for c in "/\\:") or not filename.isprintable():
        return "a path, a colon, a control or non-ASCII character in the name"
    if filename.startswith((".", "-")) or ".." in filename:
        return "a name starting with a dot or a dash, or holding '..'"
    return None


def parse_dist(project: NormalizedName, filename: str) -> tuple[Version, str, frozenset[Tag]] | str:
    """(version, kind, tags) of a wheel or sdist of `project`; else why it is left out."""
    problem = name_problem(filename)
    if problem:
        return problem
    try:
        if filename.endswith(".whl"):
            name, version, _, tags = parse_wheel_filename(filename)
            kind = "wheel"
        elif filename.endswith(SDIST_SUFFIXES):
            name, version = parse_sdist_filename(filename)
            tags, kind = frozenset(), "sdist"
        else:
            return "neither a wheel nor an sdist (.tar.gz, .zip)"
    except (InvalidWheelFilename, InvalidSdistFilename) as exc:
        return f"not a valid distribution name ({exc})"
    if name != project:
        return f"a file of project {name!r}, not {project!r}"
    return version, kind, tags


def _digest(value: object, length: int) -> str | None:
    if isinstance(value, str) and len(value) == length and set(value.lower()) <= _HEX:
        return value.lower()
    return None


def make_file(
    project: NormalizedName,
    filename: str,
    url: str,
    hashes: dict[str, str],
    **extra: object,
) -> DistFile | str:
    """A screened DistFile, or why the file is left out."""
    parsed = parse_dist(project, filename)
    if isinstance(parsed, str):
        return parsed
    sha256 = _digest(hashes.get("sha256"), 64)
    md5 = _digest(hashes.get("md5"), 32)
    if sha256 is None and md5 is None:
        return "no sha256 (nor md5) given by the index: it could not be verified"
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        return f"a URL that is not http(s): {scheme or 'relative'}"
    version, kind, tags = parsed
    return DistFile(project, filename, url, version, kind, tags, sha256, md5, **extra)  # type: ignore[arg-type]


def _metadata_hash(value: bool | dict[str, str] | None) -> str | None:
    """PEP 658/714's core-metadata: false / absent (None), true (""), or {"sha256": ...}."""
    if value is True:
        return ""
    if isinstance(value, dict):
        return _digest(value.get("sha256"), 64) or ""
    return None


# ---------------------------------------------------------------- PEP 691 JSON


class _JsonMeta(msgspec.Struct):
    api_version: str = msgspec.field(name="api-version")


class _JsonFile(msgspec.Struct):
    filename: str
    url: str
    hashes: dict[str, str]
    requires_python: str | None = msgspec.field(default=None, name="requires-python")
    yanked: bool | str = False
    core_metadata: bool | dict[str, str] | None = msgspec.field(default=None, name="core-metadata")
    dist_info_metadata: bool | dict[str, str] | None = msgspec.field(default=None, name="dist-info-metadata")
    size: int | None = None
    upload_time: str | None = msgspec.field(default=None, name="upload-time")


class _JsonPage(msgspec.Struct):
    meta: _JsonMeta
    name: str
    files: list[_JsonFile]


def _check_version(version: str, url: str) -> None:
    """PEP 629: a major version other than 1 cannot be read; a newer minor one can."""
    major = version.split(".", 1)[0]
    if major != "1":
        raise PageError(f"{url}: simple API version {version!r}; only 1.x is understood")


def parse_json_page(data: bytes, url: str, project: NormalizedName) -> ProjectPage:
    try:
        doc = msgspec.json.decode(data, type=_JsonPage)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise PageError(f"{url}: not a PEP 691 project page ({exc})") from None
    _check_version(doc.meta.api_version, url)
    if canonicalize_name(doc.name) != project:
        raise PageError(f"{url}: the page is of project {doc.name!r}, not {project!r}")
    page = ProjectPage(project, url, format="json")
    for f in doc.files:
        yanked = None if f.yanked is False else ("" if f.yanked is True else f.yanked)
        size = f.size if f.size is not None and f.size >= 0 else None
        metadata = f.core_metadata if f.core_metadata is not None else f.dist_info_metadata
        made = make_file(
            project,
            f.filename,
            urllib.parse.urljoin(url, f.url).partition("#")[0],
            f.hashes,
            size=size,
            requires_python=f.requires_python or None,
            yanked=yanked,
            metadata_sha256=_metadata_hash(metadata),
            upload_time=f.upload_time,
        )
        _add(page, f.filename, made)
    return page


def _add(page: ProjectPage, filename: str, made: DistFile | str) -> None:
    if isinstance(made, str):
        page.refused.append(f"{filename[:80]!r}: {made}")
    else:
        page.files.append(made)


# ---------------------------------------------------------------- PEP 503 HTML


class _Anchors(html.parser.HTMLParser):
    """The anchors of a page (attributes, text) and its `<base href>` and repository version."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        self.base: str | None = None
        self.api_version: str | None = None
        self._open: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "a":
            self._open, self._text = attributes, []
        elif tag == "base" and self.base is None:
            self.base = attributes.get("href")
        elif tag == "meta" and attributes.get("name") == "pypi:repository-version":
            self.api_version = attributes.get("content")

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.anchors.append((self._open, "".join(self._text).strip()))
            self._open = None


def parse_html_page(data: bytes, url: str, project: NormalizedName) -> ProjectPage:
    parser = _Anchors()
    try:
        parser.feed(data.decode("utf-8"))
        parser.close()
    except UnicodeDecodeError as exc:
        raise PageError(f"{url}: not a UTF-8 HTML page ({exc.reason})") from None
    if parser.api_version:
        _check_version(parser.api_version, url)
    base = urllib.parse.urljoin(url, parser.base) if parser.base else url
    page = ProjectPage(project, url, format="html")
    for attrs, text in parser.anchors:
        href = attrs.get("href")
        if not href:
            continue
        absolute, _, fragment = urllib.parse.urljoin(base, href).partition("#")
        filename = urllib.parse.unquote(urllib.parse.urlsplit(absolute).path.rsplit("/", 1)[-1])
        algorithm, _, digest = fragment.partition("=")
        yanked = attrs.get("data-yanked")
        made = make_file(
            project,
            filename or text,
            absolute,
            {algorithm: digest} if digest else {},
            requires_python=attrs.get("data-requires-python") or None,
            yanked=None if "data-yanked" not in attrs else (yanked or ""),
            metadata_sha256=_html_metadata(attrs),
        )
        _add(page, filename or text, made)
    return page


def _html_metadata(attrs: dict[str, str | None]) -> str | None:
    """`data-core-metadata` (or the older `data-dist-info-metadata`): "true" or "sha256=<hex>"."""
    for name in ("data-core-metadata", "data-dist-info-metadata"):
        if name in attrs:
            value = attrs[name] or ""
            algorithm, _, digest = value.partition("=")
            if value == "true" or (algorithm == "sha256" and _digest(digest, 64) is None):
                return ""
            if algorithm == "sha256":
                return digest.lower()
            return None if value == "false" else ""
    return None


def parse_page(data: bytes, content_type: str, url: str, project: NormalizedName) -> ProjectPage:
    """A project page by its Content-Type: PEP 691 JSON, else PEP 503 HTML."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media == JSON_TYPE or media.startswith("application/vnd.pypi.simple.latest+json"):
        return parse_json_page(data, url, project)
    if media in (HTML_TYPE, "text/html", "application/vnd.pypi.simple.latest+html", ""):
        return parse_html_page(data, url, project)
    raise PageError(f"{url}: answered {media!r}, neither a PEP 691 JSON nor a PEP 503 HTML page")
