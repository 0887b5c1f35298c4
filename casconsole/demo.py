"""A generated demo upstream channel, served on 127.0.0.1.

Real `.conda` and `.tar.bz2` archives over linux-64, osx-arm64, win-64 and noarch, with
licenses across the families an administrator filters on (MIT, BSD, Apache, GPL2, GPL3, LGPL,
AGPL, proprietary, missing), dependencies between packages (python needs readline and
openssl; numpy needs python and openblas), several versions of each name, and one record whose
repodata was patched upstream. Tests, `casconsole --demo` and the benchmarks use it.

`python -m casconsole.demo [DIR]` generates the channel and serves it until interrupted.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import random
import socketserver
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from casconsole.conda.archive import PackageSpec, build_package
from casconsole.conda.repodata import write_repodata
from casconsole.fsutil import atomic_write_bytes

DEMO_VERSION = "3"  # bump when the catalogue changes, so cached demo channels are rebuilt
PLATFORMS = ("linux-64", "osx-arm64", "win-64")
PYTHONS = ("3.9", "3.10", "3.11", "3.12")


@dataclass(frozen=True)
class Item:
    """A package of the catalogue: versions, license, what it needs, roughly how big."""

    name: str
    versions: tuple[str, ...]
    license: str | None
    license_family: str | None = None
    depends: tuple[str, ...] = ()
    noarch: bool = False
    python_builds: bool = False  # one build per python minor version
    kb: int = 40
    linux_only: bool = False


CATALOGUE = (
    # the base that everything leans on
    Item("libgcc-ng", ("11.2.0", "12.3.0", "13.2.0"), "GPL-3.0-only WITH GCC-exception-3.1", "GPL",
         linux_only=True, kb=200),
    Item("zlib", ("1.2.13", "1.3.1"), "Zlib", "OTHER", kb=60),
    Item("bzip2", ("1.0.8",), "bzip2-1.0.6", "BSD", kb=50),
    Item("xz", ("5.2.6", "5.4.6"), "LGPL-2.1 and GPL-2.0", None, kb=120),
    Item("ncurses", ("6.3", "6.4"), "MIT", "MIT", kb=300),
    Item("readline", ("8.1.2", "8.2"), "GPL-3.0-only", "GPL3", ("ncurses >=6.3",), kb=150),
    Item("openssl", ("1.1.1w", "3.0.13", "3.2.1"), "Apache-2.0", "Apache", ("zlib",), kb=900),
    Item("sqlite", ("3.41.2", "3.45.1"), "blessing", None, ("zlib >=1.2.13", "readline >=8"), kb=400),
    Item("libffi", ("3.4.4",), "MIT", "MIT", kb=40),
    Item("python", PYTHONS, "PSF-2.0", "PSF",
         ("openssl >=3", "readline >=8", "zlib >=1.2.13", "sqlite >=3.41", "libffi >=3.4", "xz", "bzip2"),
         kb=2500),
    # numerics
    Item("libopenblas", ("0.3.21", "0.3.26"), "BSD-3-Clause", "BSD", kb=1200),
    Item("numpy", ("1.24.4", "1.26.4", "2.0.1"), "BSD-3-Clause", "BSD", ("libopenblas >=0.3.21",),
         python_builds=True, kb=800),
    Item("scipy", ("1.11.4", "1.13.1"), "BSD-3-Clause", None, ("numpy >=1.24", "libopenblas"),
         python_builds=True, kb=1500),
    Item("gmp", ("6.2.1", "6.3.0"), "GPL-2.0-or-later OR LGPL-3.0-or-later", "GPL2", kb=300),
    Item("mpfr", ("4.2.1",), "LGPL-3.0-only", "LGPL", ("gmp >=6.2",), kb=200),
    Item("gsl", ("2.7",), "GPL-3.0-or-later", None, ("libopenblas",), kb=600),
    # R, GPL land
    Item("r-base", ("4.2.3", "4.3.3"), "GPL-2.0-or-later", "GPL2", ("readline", "libopenblas", "xz"),
         kb=1800),
    Item("r-ggplot2", ("3.4.4", "3.5.1"), "GPL-2 | file LICENSE", None, ("r-base >=4.2",), noarch=True),
    Item("r-dplyr", ("1.1.4",), "MIT + file LICENSE", None, ("r-base >=4.2",), noarch=True),
    Item("r-data.table", ("1.14.10", "1.15.4"), "MPL-2.0", "OTHER", ("r-base >=4.2",), kb=300),
    # AGPL and other families
    Item("ghostscript", ("9.54.0", "10.03.0"), "AGPL-3.0-only", "AGPL", ("zlib",), kb=700),
    Item("qt-main", ("5.15.8",), "LGPL-3.0-only", "LGPL", ("openssl", "zlib"), kb=3000),
    Item("git", ("2.42.0", "2.45.1"), "GPL-2.0-only", "GPL2", ("openssl", "zlib", "libgcc-ng"), kb=900),
    Item("curl", ("8.5.0", "8.7.1"), "curl", "MIT", ("openssl >=3", "zlib"), kb=250),
    Item("mkl", ("2023.1.0", "2024.0.0"), "LicenseRef-IntelSimplifiedSoftwareLicense", "Proprietary",
         kb=2200),
    Item("oracle-instantclient", ("19.11.0",), None, None, kb=900),
    # pure python, noarch
    Item("six", ("1.16.0",), "MIT", "MIT", ("python",), noarch=True, kb=12),
    Item("certifi", ("2023.11.17", "2024.2.2"), "MPL-2.0", None, ("python >=3.7",), noarch=True, kb=160),
    Item("idna", ("3.4", "3.7"), "BSD-3-Clause", "BSD", ("python >=3.6",), noarch=True, kb=60),
    Item("urllib3", ("1.26.18", "2.2.1"), "MIT", "MIT", ("python >=3.7",), noarch=True, kb=100),
    Item("requests", ("2.28.2", "2.31.0", "2.32.3"), "Apache-2.0", "Apache",
         ("python >=3.7", "certifi >=2017.4.17", "idna >=2.5,<4", "urllib3 >=1.21.1,<3"), noarch=True,
         kb=70),
    Item("click", ("8.1.3", "8.1.7"), "BSD-3-Clause", "BSD", ("python >=3.7",), noarch=True, kb=80),
    Item("markupsafe", ("2.1.3",), "BSD-3-Clause", "BSD", (), python_builds=True, kb=25),
    Item("jinja2", ("3.1.2", "3.1.4"), "BSD-3-Clause", "BSD", ("python >=3.7", "markupsafe >=2.0"),
         noarch=True, kb=110),
    Item("flask", ("2.2.5", "2.3.3", "3.0.3"), "BSD-3-Clause", "BSD",
         ("python >=3.8", "click >=8.0", "jinja2 >=3.0"), noarch=True, kb=90),
    Item("pyyaml", ("6.0.1",), "MIT", "MIT", (), python_builds=True, kb=160),
    Item("conda", ("23.11.0", "24.5.0"), "BSD-3-Clause", "BSD", ("python >=3.8", "requests >=2.28", "pyyaml"),
         noarch=True, kb=900),
    Item("pyqt", ("5.15.9",), "GPL-3.0-only", "GPL3", ("qt-main 5.15.*",), python_builds=True, kb=1500),
    Item("mysql-connector-python", ("8.0.33",), "GPL-2.0-only", None, ("python >=3.8",), noarch=True,
         kb=300),
    Item("internal-tools", ("0.1.0",), "", None, ("python >=3.9",), noarch=True, kb=20),
)  # fmt: skip


def _build_string(item: Item, subdir: str, py: str | None, index: int) -> str:
    digest = hashlib.sha1(f"{item.name}{subdir}{py}{index}".encode()).hexdigest()[:7]
    if item.noarch:
        return "pyhd8ed1ab_0" if item.depends and item.depends[0].startswith("python") else "r43hc72bb7e_0"
    prefix = f"py{py.replace('.', '')}" if py else ""
    return f"{prefix}h{digest}_{index % 3}"


def _noarch_kind(item: Item) -> str | None:
    if not item.noarch:
        return None
    return "generic" if item.name.startswith("r-") else "python"


def _specs(item: Item, subdir: str, rng: random.Random, size: float) -> list[PackageSpec]:
    specs = []
    pythons: tuple[str | None, ...] = PYTHONS if item.python_builds else (None,)
    for vi, version in enumerate(item.versions):
        for py in pythons:
            depends = list(item.depends)
            if py:
                depends.insert(0, f"python {py}.*")
            if subdir.startswith("linux") and not item.noarch and item.name != "libgcc-ng":
                depends.append("libgcc-ng >=11.2.0")
            build_number = vi % 3
            kb = max(1, int(item.kb * size * rng.uniform(0.6, 1.3)))
            payload = rng.randbytes(kb * 1024)
            path = f"lib/{item.name}/{item.name}-{version}.bin"
            specs.append(
                PackageSpec(
                    name=item.name,
                    version=version if item.name != "python" else version + ".4",
                    build=_build_string(item, subdir, py, vi + build_number),
                    build_number=build_number,
                    subdir=subdir,
                    depends=depends,
                    license=item.license,
                    license_family=item.license_family,
                    timestamp=1_690_000_000_000 + vi * 86_400_000 * 30 + rng.randrange(86_400_000),
                    noarch=_noarch_kind(item),
                    summary=f"{item.name}, a demo package",
                    files={
                        path: payload,
                        f"share/doc/{item.name}/README": f"{item.name} {version}\n".encode(),
                    },
                )
            )
    return specs


def _record(spec: PackageSpec, path: Path) -> dict:
    data = path.read_bytes()
    record = spec.index_json()
    record.update(size=len(data), md5=hashlib.md5(data).hexdigest(), sha256=hashlib.sha256(data).hexdigest())
    return record


def generate_channel(root: Path, size: float = 0.25, seed: int = 0) -> Path:
    """Write the demo channel under `root` (reused when already complete) and return it.

    `size` scales the payloads: 1.0 gives packages of real-world size (about 220 MB in all),
    tests use a few hundredths.
    """
    marker = root / ".demo-version"
    stamp = f"{DEMO_VERSION} {size} {seed}"
    if marker.exists() and marker.read_text() == stamp:
        return root
    rng = random.Random(seed)
    for subdir in (*PLATFORMS, "noarch"):
        packages: dict[str, dict] = {}
        packages_conda: dict[str, dict] = {}
        for item in CATALOGUE:
            if item.noarch != (subdir == "noarch") or (item.linux_only and subdir != "linux-64"):
                continue
            for i, spec in enumerate(_specs(item, subdir, rng, size)):
                # older versions as .tar.bz2 (as on real channels), the newest in both formats
                newest = spec.version.startswith(item.versions[-1])
                formats = (
                    [".conda", ".tar.bz2"] if newest and i % 2 == 0 else [".conda" if newest else ".tar.bz2"]
                )
                for fmt in formats:
                    path = build_package(root / subdir, spec, fmt)
                    (packages_conda if fmt == ".conda" else packages)[path.name] = _record(spec, path)
        _patch(packages, packages_conda)
        write_repodata(
            root / subdir,
            {
                "info": {"subdir": subdir},
                "packages": dict(sorted(packages.items())),
                "packages.conda": dict(sorted(packages_conda.items())),
                "removed": [],
                "repodata_version": 1,
            },
        )
    atomic_write_bytes(marker, stamp.encode())
    return root


def _patch(*tables: dict[str, dict]) -> None:
    """An upstream repodata patch, as channels apply them: a pin the archive does not carry."""
    for table in tables:
        for fn, record in table.items():
            if fn.startswith("requests-2.28.2-"):
                record["depends"] = [*record["depends"], "chardet >=3.0.2,<6"]
                record["depends"].remove("urllib3 >=1.21.1,<3")
                record["depends"].append("urllib3 >=1.21.1,<1.27")


# ---------------------------------------------------------------- serving


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class DemoServer:
    """Serves a directory on 127.0.0.1 from a background thread; `url` is its address."""

    def __init__(self, root: Path, port: int = 0):
        def handler(*args, **kwargs):
            return _QuietHandler(*args, directory=str(root), **kwargs)

        self._httpd = _Server(("127.0.0.1", port), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True, name="demo-upstream")

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> DemoServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> DemoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_demo_config(path: Path, url: str, mirror_dir: Path) -> Path:
    """A settings file for the demo: its upstream, its own mirror, filters worth reviewing."""
    text = (
        "# casconsole demo settings (written by casconsole --demo)\n"
        f"remote_url: {url}\n"
        f"mirror_dir: {mirror_dir}\n"
        "platforms: [linux-64, osx-arm64]\n"
        "license_blacklist: [AGPL]\n"
        "blacklist:\n  - r-*\n  - mkl\n  - python 3.9.*\n"
        "whitelist:\n  - r-dplyr\n"
    )
    if not path.exists():
        atomic_write_bytes(path, text.encode())
    else:  # keep the admin's edits; only follow the server to its new port
        from casconsole.settings import write_settings

        write_settings(path, {"remote_url": url})
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m casconsole.demo", description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", type=Path, default=Path("demo-upstream"), help="where to write it")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    args = parser.parse_args(argv)
    root = generate_channel(args.dir)
    with DemoServer(root, args.port) as server:
        print(json.dumps({"url": server.url, "dir": str(root)}), flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
