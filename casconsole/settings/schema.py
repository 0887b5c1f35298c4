"""The settings' keys: each with its check, its default, its help and how its text is read."""

from __future__ import annotations

import difflib
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs

from casconsole.layout import KNOWN_SUBDIRS, BucketURL, channel_name_problem, machine_subdir
from casconsole.redact import redact_url
from casconsole.settings.proxy import Proxy, ProxyError


def default_mirror_dir() -> Path:
    return platformdirs.user_data_path("casconsole") / "mirror"


class Invalid(ValueError):
    """A value of the wrong type or form; the message says what was expected."""


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise Invalid(f"expected a non-empty string, got {_show(v)}")
    return v.strip()


def _opt_str(v: Any) -> str | None:
    if v is None or v == "":
        return None
    return _str(v)


def _proxy(v: Any) -> str | None:
    url = _opt_str(v)
    if url is not None:
        try:
            Proxy.parse(url)
        except ProxyError as exc:
            raise Invalid(str(exc).removeprefix("proxy: ")) from None
    return url


def _str_list(v: Any) -> list[str]:
    # a scalar where a list is expected is a one-item list: `license_blacklist: GPL`, as the
    # cas-mirror FAQ writes it (its text is not split: a match spec may hold a comma)
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise Invalid(f"expected a list of strings (or one string), got {_show(v)}")
    return [x.strip() for x in v if x.strip()]


def _entry_list(v: Any) -> list[str]:
    # here: match specs load py-rattler (50 ms), which only settings with entries need
    from casconsole.conda.specs import Entry, EntryError

    entries = _str_list(v)
    for text in entries:
        try:
            Entry.parse(text)
        except EntryError as exc:
            raise Invalid(str(exc)) from None
    return entries


def _channel_list(v: Any) -> list[str]:
    """Channel folder names, each as the channel-name rule has it. They are matched exactly
    (no case folding): `internal/` or `./internal` is an error rather than an entry that
    protects nothing; a case that matches no folder is cas-server's to refuse (it knows the
    folders)."""
    names = _str_list(v)
    for name in names:
        problem = channel_name_problem(name)
        if problem:
            raise Invalid(problem)
    return names


def _origin_list(v: Any) -> list[str]:
    origins = _str_list(v)
    for text in origins:
        parts = urllib.parse.urlsplit(text)
        try:
            parts.port  # noqa: B018 (raises on a bad port)
        except ValueError:
            raise Invalid(f"{text!r}: not a valid port") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path.strip("/"):
            raise Invalid(f"{text!r}: expected an origin, http(s)://host[:port]")
    return origins


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise Invalid(f"expected true or false, got {_show(v)}")
    return v


def _nonneg_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise Invalid(f"expected a whole number >= 0, got {_show(v)}")
    return v


def _pos_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise Invalid(f"expected a whole number >= 1, got {_show(v)}")
    return v


def _port(v: Any) -> int:
    if _nonneg_int(v) > 65535:
        raise Invalid(f"expected a port number 0-65535, got {_show(v)}")
    return v


def _pos_float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        raise Invalid(f"expected a number of seconds > 0, got {_show(v)}")
    return float(v)


_SIZE_UNITS = {None: 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])(?:i?b)?|b)?\s*$", re.IGNORECASE)


def _size(v: Any) -> int:
    """A size in bytes: a whole number, or a number with k, M, G or T (powers of 1024, as nginx's
    `client_max_body_size`; `MB`, `MiB` and `M` alike): `2G`, `500 MB`, `1.5GiB`."""
    if isinstance(v, int) and not isinstance(v, bool):
        if v < 1:
            raise Invalid(f"expected a size > 0 (bytes, or e.g. 4G, 500M), got {_show(v)}")
        return v
    match = _SIZE.match(v) if isinstance(v, str) else None
    if match is None:
        raise Invalid(f"expected a size (bytes, or e.g. 4G, 500M, 2 GiB), got {_show(v)}")
    unit = match.group(2)
    number = float(match.group(1)) * _SIZE_UNITS[unit.lower() if unit else None]
    if number < 1:
        raise Invalid(f"expected a size > 0 (bytes, or e.g. 4G, 500M), got {_show(v)}")
    return int(number)


def _fraction(v: Any) -> float:
    """A share of a subdir's files: a fraction (0.1) or a percentage ("10%")."""
    text = v.strip() if isinstance(v, str) else None
    try:
        if text is not None and text.endswith("%"):
            value = float(text[:-1]) / 100
        elif text is not None:
            value = float(text)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            value = float(v)
        else:
            raise ValueError
    except ValueError:
        raise Invalid(f"expected a fraction (0.1) or a percentage (10%), got {_show(v)}") from None
    if not 0 <= value <= 1:
        hint = f" (for a percentage write '{value:g}%')" if 1 < value <= 100 else ""
        raise Invalid(f"expected a share between 0 and 1 (0%-100%), got {_show(v)}{hint}")
    return value


def _ssl_verify(v: Any) -> bool | str:
    if isinstance(v, bool):
        return v
    if not isinstance(v, str) or not v.strip():
        raise Invalid(f"expected true, false or the path of a CA bundle, got {_show(v)}")
    path = Path(v.strip()).expanduser()
    if not path.is_file():
        why = "is not a file" if path.exists() else "does not exist"
        raise Invalid(f"expected true, false or the path of a CA bundle file; {str(path)!r} {why}")
    return str(path)


def _path(v: Any) -> Path:
    return Path(_str(v)).expanduser()


def _opt_path(v: Any) -> Path | None:
    return None if _opt_str(v) is None else _path(v)


def _mirror_dir(v: Any) -> Path | BucketURL:
    """A folder, or `s3://bucket/prefix`: a mirror kept in S3-compatible object storage."""
    text = _str(v)
    try:
        bucket = BucketURL.parse(text)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    return bucket if bucket is not None else _path(text)


def _s3_endpoint(v: Any) -> str | None:
    return None if _opt_str(v) is None else _url(v, ("http", "https"), "endpoint")


def _s3_serve(v: Any) -> str:
    text = _str(v).lower()
    if text not in ("stream", "redirect"):
        raise Invalid(f"expected stream or redirect, got {_show(v)}")
    return text


def _opt_secret(v: Any) -> str | None:
    if v is None or v == "":
        return None
    if not isinstance(v, str) or not v.strip() or any(c.isspace() for c in v.strip()):
        raise Invalid("expected a credential without spaces")  # never the value: it is a secret
    return v.strip()


def _platforms(v: Any) -> list[str]:
    subdirs = _str_list(v)
    for subdir in subdirs:
        if subdir not in KNOWN_SUBDIRS:
            hint = difflib.get_close_matches(subdir, sorted(KNOWN_SUBDIRS), n=1)
            tip = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise Invalid(f"unknown platform {subdir!r}{tip}")
    if not subdirs:
        raise Invalid("expected at least one platform")
    return subdirs


REMOTE_SCHEMES = ("http", "https", "file")


def _remote_url(v: Any) -> str:
    url = _str(v).rstrip("/")
    scheme = urllib.parse.urlsplit(url).scheme
    if len(scheme) > 1 and scheme.lower() not in REMOTE_SCHEMES:  # one letter: a Windows drive
        shown = redact_url(url)
        raise Invalid(f"unsupported URL scheme {scheme!r} in {shown!r} (use http, https, file:// or a path)")
    return url


# ---------------------------------------------------------------- what clients are told (.condarc)


def _url(v: Any, schemes: tuple[str, ...], what: str = "") -> str:
    """A URL of one of `schemes`, with a host (file: a path), no query or fragment; no trailing /."""
    url = _str(v).rstrip("/")
    what = f"{what} " if what else ""
    shown = redact_url(url)  # a message may be shown anywhere: no password or token in it
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as exc:
        raise Invalid(f"{what}{shown!r} is not a URL ({exc})") from None
    if parts.scheme not in schemes:
        starts = " or ".join(f"{s}://" for s in schemes)
        raise Invalid(f"{what}{shown!r}: expected a URL starting with {starts}")
    if parts.scheme != "file" and not parts.hostname:
        raise Invalid(f"{what}{shown!r} names no host")
    if parts.query or parts.fragment or any(c.isspace() for c in url):
        raise Invalid(f"{what}{shown!r}: expected no query, fragment or space")
    return url


def _public_url(v: Any) -> str | None:
    if _opt_str(v) is None:
        return None
    url = _url(v, ("http", "https"))
    if urllib.parse.urlsplit(url).username is not None:
        raise Invalid(f"{redact_url(url)!r}: put no user or password in it: every client sees it")
    return url


CLIENT_URL_SCHEMES = ("http", "https", "file")


def _client_channel(entry: str, allow_defaults: bool) -> str:
    """A channel of the clients' list: `defaults`, a URL, or the name of a channel of the mirror."""
    if entry == "defaults":
        if not allow_defaults:
            raise Invalid("'defaults' cannot be one of the default channels")
        return entry
    if "://" in entry:
        return _url(entry, CLIENT_URL_SCHEMES, "channel")
    problem = channel_name_problem(entry)
    if problem is not None or ":" in entry or any(c.isspace() for c in entry):
        raise Invalid(f"{entry!r} is neither a channel of the mirror (a folder name), 'defaults' nor a URL")
    return entry


def _client_channel_list(allow_defaults: bool) -> Callable[[Any], list[str]]:
    def check(v: Any) -> list[str]:
        entries = [_client_channel(e, allow_defaults) for e in _str_list(v)]
        seen = set()
        for entry in entries:
            if entry in seen:
                raise Invalid(f"{redact_url(entry)!r} is listed twice")
            seen.add(entry)
        return entries

    return check


def _client_channel_alias(v: Any) -> str | None:
    return None if _opt_str(v) is None else _url(v, CLIENT_URL_SCHEMES)


def _client_ssl_verify(v: Any) -> bool | str:
    # a CA bundle path on the clients' machines: not looked for here
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip():
        return v.strip()
    raise Invalid(f"expected true, false or the path of a CA bundle on the clients, got {_show(v)}")


_PROXY_KEY = re.compile(r"^(?:[a-z][a-z0-9+.-]*)(?:://[^\s/=]+)?$")
PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")


def _client_proxy_servers(v: Any) -> dict[str, str] | None:
    """conda's `proxy_servers`: {http: URL, https: URL} (or `scheme://host` keys). Also read as
    KEY=URL items (variables and flags), or one URL for both http and https."""
    if v is None or v == "" or v == [] or v == {}:
        return None
    if isinstance(v, str):
        v = [v]
    if isinstance(v, list):
        items = _str_list(v)
        pairs = [_proxy_pair(item) for item in items]
        if len(items) == 1 and pairs[0] is None:
            return {"http": _proxy_url(items[0]), "https": _proxy_url(items[0])}
        bad = [item for item, pair in zip(items, pairs) if pair is None]
        if bad:
            raise Invalid(f"expected KEY=URL (e.g. https=http://proxy:3128), got {redact_url(bad[0])!r}")
        v = dict(p for p in pairs if p is not None)
    if not isinstance(v, dict) or not all(isinstance(k, str) and isinstance(u, str) for k, u in v.items()):
        raise Invalid(f"expected a mapping of scheme: proxy URL, got {_show(redact_url(str(v)))}")
    servers = {}
    for key, url in v.items():
        if not _PROXY_KEY.match(key.strip()):
            raise Invalid(f"{key!r} is not a scheme (http, https) or scheme://host")
        servers[key.strip()] = _proxy_url(url)
    return servers


def _proxy_pair(item: str) -> tuple[str, str] | None:
    key, sep, url = item.partition("=")
    return (key.strip(), url.strip()) if sep and _PROXY_KEY.match(key.strip()) else None


def _proxy_url(v: Any) -> str:
    return _url(v, PROXY_SCHEMES, "proxy")


# ---------------------------------------------------------------- the pypi section


def _index_url(v: Any) -> str | None:
    return None if _opt_str(v) is None else _url(v, ("http", "https"), "index")


def _requirement_list(v: Any) -> list[str]:
    """PEP 508 requirements: a project name, optionally with extras and PEP 440 specifiers
    (`requests`, `attrs >=23`, `requests[socks] ==2.32.3`); markers and URLs are not mirrored."""
    from packaging.requirements import InvalidRequirement, Requirement

    entries = _str_list(v)
    for text in entries:
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            raise Invalid(f"{text!r} is not a PEP 508 requirement ({str(exc).splitlines()[0]})") from None
        if req.url or req.marker is not None:
            raise Invalid(f"{text!r}: give a project name and specifiers, without a URL or a marker")
    return entries


def _project_names(v: Any) -> list[str]:
    """Project names, normalized as PEP 503 says (`Foo_Bar` -> `foo-bar`)."""
    from packaging.utils import canonicalize_name

    names = _str_list(v)
    for name in names:
        if not name.replace("-", "").replace("_", "").replace(".", "").isalnum() or not name.isascii():
            raise Invalid(f"{name!r} is not a project name")
    return [canonicalize_name(name) for name in names]


def _python_versions(v: Any) -> list[str]:
    """Python versions as major.minor (`3.11`): wheels and Requires-Python are checked against them."""
    versions = [str(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x for x in _as_list(v)]
    versions = _str_list(versions)
    for text in versions:
        parts = text.split(".")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise Invalid(f"{text!r}: expected a Python version as major.minor, e.g. 3.12")
    return versions


def _as_list(v: Any) -> Any:
    return [v] if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def _platform_tags(v: Any) -> list[str]:
    """Wheel platform tags (PEP 425): `manylinux_2_17_x86_64`, `win_amd64`, `macosx_11_0_arm64`."""
    tags = _str_list(v)
    for tag in tags:
        if not tag.isascii() or not tag.replace("_", "").replace(".", "").isalnum() or tag != tag.lower():
            raise Invalid(f"{tag!r} is not a wheel platform tag (e.g. manylinux_2_17_x86_64, win_amd64)")
    return tags


def _show(v: Any) -> str:
    kinds = {bool: "a boolean", int: "a number", float: "a number", str: "a string",
             list: "a list", dict: "a mapping", type(None): "nothing"}  # fmt: skip
    kind = kinds.get(type(v), type(v).__name__)
    text = repr(v)
    return f"{kind} ({text[:60]}{'...' if len(text) > 60 else ''})"


@dataclass(frozen=True)
class Key:
    name: str
    check: Callable[[Any], Any]
    default: Callable[[], Any]
    help: str
    kind: str  # how an environment variable's text is read: str, list, bool, int, float
    secret: bool = False  # a credential: shown as <hidden> everywhere, its text in no message


SCHEMA: dict[str, Key] = {
    k.name: k
    for k in [
        Key("remote_url", _remote_url, lambda: "https://repo.anaconda.com/pkgs/main",
            "the upstream channel URL (http(s)://, file:// or a path)", "str"),
        Key("mirror_dir", _mirror_dir, default_mirror_dir,
            "where the mirror and its channels live: a folder, or s3://bucket/prefix", "str"),
        Key("channel_name", _str, lambda: "pkgs", "the mirrored channel's folder under mirror_dir", "str"),
        Key("platforms", _platforms, lambda: [machine_subdir()],
            "subdirs to mirror (noarch is always added)", "list"),
        Key("license_blacklist", _str_list, list, "license families to drop (GPL covers GPL2, GPL3)", "list"),
        Key("blacklist", _entry_list, list, "names, globs or match specs to drop", "list"),
        Key("whitelist", _entry_list, list, "names, globs or match specs to add back", "list"),
        Key("whitelist_closure", _bool, lambda: False,
            "whitelisted records bring in their dependency closure", "bool"),
        Key("curated", _bool, lambda: False,
            "mirror only the whitelist entries and their dependency closure", "bool"),
        Key("newest_versions", _nonneg_int, lambda: 0,
            "keep only the newest N versions of each name per subdir (0: all)", "int"),
        Key("concurrency", _pos_int, lambda: 8, "parallel downloads", "int"),
        Key("timeout", _pos_float, lambda: 60.0, "seconds without progress before a request fails", "float"),
        Key("retries", _nonneg_int, lambda: 3, "retries per file after the first attempt", "int"),
        Key("ssl_verify", _ssl_verify, lambda: True, "verify TLS: true, false or a CA bundle path", "ssl"),
        Key("proxy", _proxy, lambda: None, "upstream proxy: http://[user:pass@]host:port", "str"),
        Key("prune", _bool, lambda: True, "delete mirrored files that left the plan", "bool"),
        Key("max_prune", _fraction, lambda: 0.1,
            "the most of a subdir's files one sync may delete (0.1 or 10%); more holds the subdir's "
            "pruning back", "str"),
        Key("server_host", _str, lambda: "127.0.0.1", "address cas-server listens on", "str"),
        Key("server_port", _port, lambda: 8080, "port cas-server listens on", "int"),
        Key("private_channels", _channel_list, list, "channels served only under /t/<token>/", "list"),
        Key("upload_max_size", _size, lambda: 4 << 30,
            "the largest package cas-server takes in an upload (bytes, or 4G, 500M)", "str"),
        Key("upload_timeout", _pos_float, lambda: 120.0,
            "seconds an upload may send no bytes before cas-server drops it (however long it takes)",
            "float"),
        Key("base_url_origins", _origin_list, list,
            "other origins (http(s)://host[:port]) upstream's info.base_url may send downloads to",
            "list"),
        Key("public_url", _public_url, lambda: None,
            "how users reach the mirror, e.g. https://conda.example.org (none: http://server_host:server_port)",
            "str"),
        Key("client_channels", _client_channel_list(True), list,
            "the clients' channels in order: mirror channels by name, URLs, defaults (none: all public)",
            "list"),
        Key("client_default_channels", _client_channel_list(False), list,
            "what 'defaults' means to clients (none: the mirrored channel)", "list"),
        Key("client_channel_alias", _client_channel_alias, lambda: None,
            "where clients look up bare channel names (none: public_url)", "str"),
        Key("client_ssl_verify", _client_ssl_verify, lambda: True,
            "the clients' ssl_verify: true, false or a CA bundle path on the clients", "ssl"),
        Key("client_proxy_servers", _client_proxy_servers, lambda: None,
            "the clients' proxy_servers: {http: URL, https: URL}, KEY=URL items, or one URL", "list"),
        Key("bundle_trusted_key", _opt_path, lambda: None,
            "Ed25519 public key: cas-sync --import refuses bundles it did not sign (none: unchecked)", "str"),
        # a mirror in a bucket (mirror_dir: s3://bucket/prefix); docs/scale-out.md
        Key("s3_endpoint_url", _s3_endpoint, lambda: None,
            "the S3 endpoint, e.g. http://seaweedfs:8333 (none: AWS_ENDPOINT_URL, the profile, AWS)", "str"),
        Key("s3_region", _opt_str, lambda: None,
            "the bucket's region (none: AWS_REGION, the profile's, or us-east-1)", "str"),
        Key("s3_path_style", _bool, lambda: True,
            "path-style requests (endpoint/bucket/key); false: virtual-hosted (bucket.endpoint/key)", "bool"),
        Key("s3_profile", _opt_str, lambda: None,
            "the profile of ~/.aws/credentials and ~/.aws/config to use (none: AWS_PROFILE or default)",
            "str"),
        Key("s3_access_key_id", _opt_secret, lambda: None,
            "the access key (none: AWS_ACCESS_KEY_ID or the profile); never shown", "str", secret=True),
        Key("s3_secret_access_key", _opt_secret, lambda: None,
            "its secret (none: AWS_SECRET_ACCESS_KEY or the profile); never shown", "str", secret=True),
        Key("s3_session_token", _opt_secret, lambda: None,
            "a temporary session token (none: AWS_SESSION_TOKEN or the profile); never shown", "str",
            secret=True),
        Key("s3_ssl_verify", _ssl_verify, lambda: True,
            "verify the endpoint's TLS: true, false or a CA bundle path", "ssl"),
        Key("s3_work_dir", _opt_path, lambda: None,
            "local folder of a bucket mirror's downloads in progress, caches and status log "
            "(none: the user cache folder)", "str"),
        Key("s3_serve", _s3_serve, lambda: "stream",
            "how cas-server serves a bucket: stream (through the server) or redirect (presigned URLs)",
            "str"),
        Key("s3_redirect_seconds", _pos_int, lambda: 3600,
            "how long a presigned URL of s3_serve: redirect stays valid", "int"),
        # the pypi section (`pypi:` in a file, a mapping): docs/pypi.md
        Key("pypi.index_url", _index_url, lambda: None,
            "the simple index mirrored from (PEP 691/503), e.g. the public PyPI's", "str"),
        Key("pypi.projects", _requirement_list, list,
            "projects to mirror, each with optional PEP 440 specifiers (requests, attrs >=23)", "list"),
        Key("pypi.requirements", _opt_path, lambda: None,
            "a requirements file naming more projects to mirror (one requirement a line)", "str"),
        Key("pypi.python_versions", _python_versions, list,
            "Python versions the files must serve (3.11, 3.12; none: all)", "list"),
        Key("pypi.platforms", _platform_tags, list,
            "wheel platform tags to keep (manylinux_2_17_x86_64, win_amd64; none: all)", "list"),
        Key("pypi.prereleases", _bool, lambda: False, "keep pre-release versions", "bool"),
        Key("pypi.yanked", _bool, lambda: False, "keep yanked files (PEP 592)", "bool"),
        Key("pypi.newest", _nonneg_int, lambda: 0, "keep only the newest N versions of each project (0: all)",
            "int"),
        Key("pypi.sdists", _bool, lambda: True, "keep source distributions (.tar.gz, .zip)", "bool"),
        Key("pypi.closure", _bool, lambda: False,
            "add the dependencies of the kept files, for the configured Pythons and platforms", "bool"),
        Key("pypi.proxy", _proxy, lambda: None,
            "proxy for the PyPI index only: http://[user:pass@]host:port (not the conda upstream's)", "str"),
        Key("pypi.ssl_verify", _ssl_verify, lambda: True,
            "verify the PyPI index's TLS: true, false or a CA bundle path", "ssl"),
        Key("pypi.private_projects", _project_names, list,
            "projects served only under /t/<token>/pypi/simple/ (a token for 'pypi')", "list"),
    ]
}  # fmt: skip


# sections: `pypi:` in a file is a mapping whose keys are read as `pypi.<key>`
SECTIONS = ("pypi",)
# `CAS_MIRROR_PYPI_CLOSURE` names `pypi.closure`: a variable's name cannot hold a dot
ALIASES = {key.replace(".", "_"): key for key in SCHEMA if "." in key}


def key_name(name: str) -> str:
    """The schema key `name` stands for: itself, or the dotted key of its underscore form."""
    return ALIASES.get(name, name)


def describe_keys() -> str:
    """The keys and their meaning, for `--help` texts and the README."""
    width = max(map(len, SCHEMA))
    return "\n".join(f"  {k.name:<{width}}  {k.help}" for k in SCHEMA.values())
