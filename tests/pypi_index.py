"""A loopback PyPI-like simple index for tests and bench/pypi: real wheels and sdists over HTTP.

`build_wheel(folder, name, version, requires=[...])` and `build_sdist(...)` write real
distributions of tiny projects with the standard library (zipfile, tarfile): a wheel pip can
install (METADATA, WHEEL, RECORD with hashes, one module). `SimpleIndex(files)` serves them on
127.0.0.1 from a thread:

- `/simple/<project>/`: PEP 691 JSON (API 1.1, sizes) when the client asks for
  `application/vnd.pypi.simple.v1+json`, else PEP 503 HTML (`data-requires-python`,
  `data-yanked`, `data-core-metadata`); `index.html_only = True` answers HTML to everyone and
  `index.no_size = True` leaves sizes out (as a PEP 691 1.0 index does);
- `/simple/`: the project list (PEP 691 JSON with `_last-serial`, as bandersnatch reads it);
- `/pypi/<project>/json`: the JSON API bandersnatch fetches metadata from;
- `/packages/<file>` and `/packages/<file>.metadata` (PEP 658), for the files marked `metadata=True`;
  a `Range: bytes=N-` gets a 206; a file named in `index.corrupt` is sent with a byte flipped.

`index.requests` counts the requests per path, `index.ranges` lists the ranges asked.
"""

from __future__ import annotations

import base64
import hashlib
import html
import http.server
import io
import json
import random
import tarfile
import threading
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

JSON_TYPE = "application/vnd.pypi.simple.v1+json"


def _metadata(name: str, version: str, requires: list[str], requires_python: str | None) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}", f"Summary: tiny {name}"]
    if requires_python:
        lines.append(f"Requires-Python: {requires_python}")
    lines += [f"Requires-Dist: {r}" for r in requires]
    return "\n".join(lines) + "\n\n"


def _record_line(path: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}"


def build_wheel(
    folder: Path,
    name: str,
    version: str,
    requires: list[str] = (),  # type: ignore[assignment]
    tag: str = "py3-none-any",
    requires_python: str | None = None,
    payload: int = 0,
) -> Path:
    """A real wheel of a tiny project `name` (module `<name>` with VERSION), installable by pip;
    `payload` bytes of incompressible filler make it about that much bigger."""
    module = name.replace("-", "_").lower()
    dist = f"{name.replace('-', '_')}-{version}"
    filler = random.Random(f"{name}-{version}").randbytes(payload // 2).hex()
    files = {
        f"{module}/__init__.py": f"VERSION = {version!r}\nPAYLOAD = {filler!r}\n".encode(),
        f"{dist}.dist-info/METADATA": _metadata(name, version, list(requires), requires_python).encode(),
        f"{dist}.dist-info/WHEEL": (
            f"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: {tag}\n"
        ).encode(),
    }
    record = [_record_line(p, d) for p, d in files.items()] + [f"{dist}.dist-info/RECORD,,"]
    files[f"{dist}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    path = Path(folder) / f"{dist}-{tag}.whl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in files.items():
            info = zipfile.ZipInfo(member, date_time=(2024, 1, 1, 0, 0, 0))
            archive.writestr(info, data)
    return path


def build_sdist(folder: Path, name: str, version: str, requires: list[str] = ()) -> Path:  # type: ignore[assignment]
    """A real sdist (`.tar.gz`, PKG-INFO and a pyproject.toml)."""
    base = f"{name.replace('-', '_')}-{version}"
    members = {
        f"{base}/PKG-INFO": _metadata(name, version, list(requires), None).encode(),
        f"{base}/pyproject.toml": f'[project]\nname = "{name}"\nversion = "{version}"\n'.encode(),
    }
    path = Path(folder) / f"{base}.tar.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size, info.mtime = len(data), 1704067200
            tar.addfile(info, io.BytesIO(data))
    return path


def wheel_metadata(path: Path) -> bytes:
    with zipfile.ZipFile(path) as archive:
        member = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return archive.read(member)


@dataclass
class Offered:
    """A file as the index offers it."""

    path: Path
    yanked: str | None = None
    requires_python: str | None = None
    metadata: bool = False  # serve `<file>.metadata` (PEP 658) and say so

    @property
    def project(self) -> str:
        name = self.path.name
        if name.endswith(".whl"):
            return parse_wheel_filename(name)[0]
        return parse_sdist_filename(name)[0]


@dataclass
class SimpleIndex:
    """The index: see the module docstring. Use as a context manager; `url` is its simple URL."""

    files: list[Offered]
    html_only: bool = False
    no_size: bool = False
    requests: Counter = field(default_factory=Counter)
    serial: int = 1
    corrupt: set[str] = field(default_factory=set)
    public_base: str | None = None  # the URL the files are reached at, when another server serves them
    ranges: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._server: http.server.ThreadingHTTPServer | None = None
        self._sha: dict[Path, str] = {}
        self._answers: dict[
            tuple[str, bool], tuple[int, str, bytes]
        ] = {}  # pages made once, as a CDN keeps them

    @property
    def base(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"{self.base}/simple/"

    def __enter__(self) -> SimpleIndex:
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms delayed-ACK stall

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self.do_GET(head=True)

            def do_GET(self, head: bool = False) -> None:
                index.requests[self.path] += 1
                status, ctype, body = index.answer(self.path, self.headers.get("Accept", ""))
                asked = self.headers.get("Range", "")
                extra = {}
                if status == 200 and asked.startswith("bytes=") and asked.endswith("-"):
                    index.ranges.append(f"{self.path} {asked}")
                    start = int(asked[6:-1])
                    extra["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
                    status, body = 206, body[start:]
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("X-PyPI-Last-Serial", str(index.serial))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def write_tree(self, root: Path) -> None:
        """Everything this index answers, as static files for a web server (bench/pypi's nginx):
        `simple/<p>/index.html` and `index.json`, `simple/index.json`, `pypi/<p>/json`, `packages/`."""
        names = list(self.projects())
        pages = ["/simple/", *(f"/simple/{n}/" for n in names)]
        for path in pages:
            for accept, name in ((JSON_TYPE, "index.json"), ("text/html", "index.html")):
                status, _, body = self._answer(path.rstrip("/") if path == "/simple/" else path, accept)
                if status == 200:
                    (root / path.strip("/")).mkdir(parents=True, exist_ok=True)
                    (root / path.strip("/") / name).write_bytes(body)
        for name in names:
            (root / "pypi" / name).mkdir(parents=True, exist_ok=True)
            (root / "pypi" / name / "json").write_bytes(self._answer(f"/pypi/{name}/json", "")[2])
        packages = root / "packages"
        packages.mkdir(parents=True, exist_ok=True)
        for f in self.files:
            (packages / f.path.name).write_bytes(f.path.read_bytes())
            if f.metadata:
                (packages / (f.path.name + ".metadata")).write_bytes(wheel_metadata(f.path))

    def sha256(self, path: Path) -> str:
        if path not in self._sha:
            self._sha[path] = hashlib.sha256(path.read_bytes()).hexdigest()
        return self._sha[path]

    def projects(self) -> dict[str, list[Offered]]:
        out: dict[str, list[Offered]] = {}
        for f in self.files:
            out.setdefault(f.project, []).append(f)
        return out

    def answer(self, path: str, accept: str) -> tuple[int, str, bytes]:
        key = (path, JSON_TYPE in accept and not self.html_only)
        if self.corrupt:  # faults are made afresh, and never kept
            return self._answer(path, accept)
        if key not in self._answers:
            self._answers[key] = self._answer(path, accept)
        return self._answers[key]

    def _answer(self, path: str, accept: str) -> tuple[int, str, bytes]:
        path = path.split("?", 1)[0]
        parts = [p for p in path.split("/") if p]
        projects = self.projects()
        if parts == ["simple"]:
            listed = [{"name": n, "_last-serial": self.serial} for n in sorted(projects)]
            doc = {"meta": {"api-version": "1.1", "_last-serial": self.serial}, "projects": listed}
            return 200, JSON_TYPE, json.dumps(doc).encode()
        if len(parts) == 2 and parts[0] == "simple":
            name = canonicalize_name(parts[1])
            if name not in projects:
                return 404, "text/plain", b"not found\n"
            if JSON_TYPE in accept and not self.html_only:
                return 200, JSON_TYPE, self.json_page(name, projects[name])
            return 200, "text/html", self.html_page(name, projects[name])
        if len(parts) == 3 and parts[0] == "pypi" and parts[2] == "json":
            name = canonicalize_name(parts[1])
            if name not in projects:
                return 404, "text/plain", b"not found\n"
            return 200, "application/json", self.api_json(name, projects[name])
        if len(parts) == 2 and parts[0] == "packages":
            for f in self.files:
                if parts[1] == f.path.name:
                    data = bytearray(f.path.read_bytes())
                    if f.path.name in self.corrupt:
                        data[len(data) // 2] ^= 0xFF
                    return 200, "application/octet-stream", bytes(data)
                if f.metadata and parts[1] == f.path.name + ".metadata":
                    return 200, "application/octet-stream", wheel_metadata(f.path)
        return 404, "text/plain", b"not found\n"

    def _metadata_hash(self, f: Offered) -> str:
        return hashlib.sha256(wheel_metadata(f.path)).hexdigest()

    def json_page(self, name: str, files: list[Offered]) -> bytes:
        entries = []
        for f in files:
            entry = {
                "filename": f.path.name,
                "url": f"../../packages/{f.path.name}",
                "hashes": {"sha256": self.sha256(f.path)},
                "requires-python": f.requires_python,
                "yanked": f.yanked if f.yanked else f.yanked is not None,
                "core-metadata": {"sha256": self._metadata_hash(f)} if f.metadata else False,
            }
            if not self.no_size:
                entry["size"] = f.path.stat().st_size
            entries.append(entry)
        api = "1.0" if self.no_size else "1.1"
        doc = {"meta": {"api-version": api}, "name": name, "files": entries, "versions": []}
        return json.dumps(doc).encode()

    def html_page(self, name: str, files: list[Offered]) -> bytes:
        out = [f"<!DOCTYPE html><html><body><h1>Links for {name}</h1>\n"]
        for f in files:
            attrs = [f'href="/packages/{f.path.name}#sha256={self.sha256(f.path)}"']
            if f.requires_python:
                attrs.append(f'data-requires-python="{html.escape(f.requires_python)}"')
            if f.yanked is not None:
                attrs.append(f'data-yanked="{html.escape(f.yanked)}"')
            if f.metadata:
                attrs.append(f'data-core-metadata="sha256={self._metadata_hash(f)}"')
            out.append(f"<a {' '.join(attrs)}>{f.path.name}</a><br>\n")
        return ("".join(out) + "</body></html>\n").encode()

    def api_json(self, name: str, files: list[Offered]) -> bytes:
        """PyPI's JSON API, as much of it as bandersnatch reads."""
        releases: dict[str, list] = {}
        for f in files:
            version = str(
                parse_wheel_filename(f.path.name)[1] if f.path.name.endswith(".whl")
                else parse_sdist_filename(f.path.name)[1]
            )  # fmt: skip
            digest = self.sha256(f.path)
            releases.setdefault(version, []).append(
                {
                    "filename": f.path.name,
                    "url": f"{self.public_base or self.base}/packages/{f.path.name}",
                    "digests": {"sha256": digest, "md5": hashlib.md5(f.path.read_bytes()).hexdigest()},
                    "size": f.path.stat().st_size,
                    "packagetype": "bdist_wheel" if f.path.name.endswith(".whl") else "sdist",
                    "requires_python": f.requires_python,
                    "yanked": f.yanked is not None,
                    "yanked_reason": f.yanked,
                    "upload_time_iso_8601": "2024-01-01T00:00:00.000000Z",
                    "upload_time": "2024-01-01T00:00:00",
                }
            )
        latest = max(releases, key=lambda v: parse_wheel_filename(f"x-{v}-py3-none-any.whl")[1])
        doc = {"info": {"name": name, "version": latest}, "last_serial": self.serial, "releases": releases,
               "urls": releases[latest]}  # fmt: skip
        return json.dumps(doc).encode()


# ---------------------------------------------------------------- the projects of the tests


def tiny_projects(folder: Path) -> list[Offered]:
    """Tiny projects with dependencies between them, each kind of file a filter decides:

    app 1.0 (PEP 658 metadata) requires lib>=1.0, helper on Python >= 3.8, winonly on Windows;
    lib 1.0 and 1.1 (no PEP 658: read from the wheel), 1.2 yanked, 2.0rc1 a pre-release;
    helper 0.5 as a wheel and an sdist; winonly 1.0; unselected 1.0 (nobody asks for it);
    private-tool 1.0 (served behind a token)."""

    def w(name, version, requires=()):
        return build_wheel(folder, name, version, list(requires))

    app_requires = ["lib>=1.0", "helper; python_version>='3.8'", "winonly; sys_platform=='win32'"]
    return [
        Offered(w("app", "1.0", app_requires), metadata=True),
        Offered(w("lib", "1.0")),
        Offered(w("lib", "1.1")),
        Offered(w("lib", "1.2"), yanked="broken build"),
        Offered(w("lib", "2.0rc1")),
        Offered(w("helper", "0.5")),
        Offered(build_sdist(folder, "helper", "0.5")),
        Offered(w("winonly", "1.0")),
        Offered(w("unselected", "1.0")),
        Offered(w("private-tool", "1.0")),
    ]  # fmt: skip


# requires-python of the real files, as PyPI gives it
REAL_REQUIRES_PYTHON = {
    "requests": ">=3.8", "charset_normalizer": ">=3.7.0", "idna": ">=3.6", "urllib3": ">=3.8",
    "certifi": ">=3.6", "attrs": ">=3.7", "packaging": ">=3.8",
}  # fmt: skip


def real_files(realdata: Path, metadata: bool = True) -> list[Offered]:
    """The real PyPI files of ../shared/realdata/pypi-files, with PEP 658 metadata offered."""
    out = []
    for path in sorted((realdata / "pypi-files").iterdir()):
        if path.name.endswith((".whl", ".tar.gz")):
            prefix = path.name.split("-", 1)[0]
            out.append(
                Offered(path, requires_python=REAL_REQUIRES_PYTHON.get(prefix),
                        metadata=metadata and path.name.endswith(".whl"))
            )  # fmt: skip
    return out


def pip_env() -> dict[str, str]:
    """An environment in which pip reads no config file and no PIP_* variable: no other index."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def pip_install(venv: Path, index_url: str, *requirements: str):
    """`pip install --index-url URL REQ...` into `venv` (made fresh, without pip: this pip drives it)."""
    import subprocess
    import sys

    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-cache-dir",
         "--index-url", index_url, *requirements],
        capture_output=True, text=True, env=pip_env(), timeout=300,
    )  # fmt: skip
