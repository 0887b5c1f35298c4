"""Helpers of the cas-installer tests: real conda packages with prefix placeholders, a channel of
them, conda's own replacement algorithm to check the installed bytes against, and running an
installer as a user does (`env -i bash installer.sh -b -p PREFIX`)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import rattler
import zstandard

from casconsole.conda.archive import PackageSpec
from casconsole.conda.repodata import write_repodata

ROOT = Path(__file__).resolve().parent.parent
# a conda-build placeholder: 255 bytes, as conda-build makes them
PH = ("/home/conda/feedstock_root/build_artifacts/demo_1700000000/_h_env" + "_placehold" * 30)[:255]
LEGACY_PH = "/opt/anaconda1anaconda2anaconda3"
EPOCH = 1_700_000_000


@dataclass
class Pkg:
    """A package to build: its index, payload, placeholders (path -> (placeholder, mode))."""

    spec: PackageSpec
    fmt: str = ".conda"
    placeholders: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    symlinks: Mapping[str, str] = field(default_factory=dict)
    modes: Mapping[str, int] = field(default_factory=dict)
    link_json: dict | None = None
    legacy: bool = False  # info/has_prefix and info/files only, no info/paths.json


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode, format=tarfile.PAX_FORMAT) as tar:
        for info, data in sorted(members, key=lambda m: m[0].name):
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, EPOCH
    return info, data


def build_package(directory: Path, pkg: Pkg) -> Path:
    """Write `pkg` as a real .conda or .tar.bz2 archive into `directory`."""
    spec = pkg.spec
    payload = [
        _file(p, d, pkg.modes.get(p, 0o755 if p.startswith("bin/") else 0o644)) for p, d in spec.files.items()
    ]
    for path, target in pkg.symlinks.items():
        info = tarfile.TarInfo(path)
        info.type, info.linkname, info.mtime, info.mode = tarfile.SYMTYPE, target, EPOCH, 0o777
        payload.append((info, None))
    paths = []
    for path, data in sorted(spec.files.items()):
        entry = {"_path": path, "path_type": "hardlink", "sha256": hashlib.sha256(data).hexdigest(),
                 "size_in_bytes": len(data)}  # fmt: skip
        if path in pkg.placeholders:
            entry["prefix_placeholder"], entry["file_mode"] = pkg.placeholders[path]
        paths.append(entry)
    for path in sorted(pkg.symlinks):
        paths.append({"_path": path, "path_type": "softlink"})
    info_files = {
        "info/index.json": json.dumps(spec.index_json(), indent=2).encode(),
        "info/files": "".join(f"{p}\n" for p in sorted([*spec.files, *pkg.symlinks])).encode(),
        "info/about.json": json.dumps({"summary": spec.summary or spec.name}).encode(),
    }
    if not pkg.legacy:
        info_files["info/paths.json"] = json.dumps({"paths": paths, "paths_version": 1}, indent=2).encode()
    if pkg.placeholders:
        info_files["info/has_prefix"] = "".join(
            f"{ph} {mode} {path}\n" for path, (ph, mode) in sorted(pkg.placeholders.items())
        ).encode()
    if pkg.link_json is not None:
        info_files["info/link.json"] = json.dumps(pkg.link_json).encode()
    info = [_file(n, d) for n, d in info_files.items()]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{spec.stem}{pkg.fmt}"
    if pkg.fmt == ".tar.bz2":
        path.write_bytes(_tar(info + payload, "w:bz2"))
        return path
    cctx = zstandard.ZstdCompressor(level=3)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:  # fixed dates: same bytes each time
        for name, data in (
            ("metadata.json", b'{"conda_pkg_format_version": 2}'),
            (f"pkg-{spec.stem}.tar.zst", cctx.compress(_tar(payload, "w"))),
            (f"info-{spec.stem}.tar.zst", cctx.compress(_tar(info, "w"))),
        ):
            zf.writestr(zipfile.ZipInfo(name, date_time=(2023, 11, 14, 0, 0, 0)), data)
    path.write_bytes(buf.getvalue())
    return path


def write_channel(root: Path, pkgs: list[Pkg], subdirs=("linux-64", "noarch")) -> Path:
    """A channel folder of `pkgs` with the repodata an indexer writes."""
    repodata = {s: {"info": {"subdir": s}, "packages": {}, "packages.conda": {}, "repodata_version": 1}
                for s in subdirs}  # fmt: skip
    for pkg in pkgs:
        path = build_package(root / pkg.spec.subdir, pkg)
        data = path.read_bytes()
        record = pkg.spec.index_json()
        record.update(
            size=len(data), md5=hashlib.md5(data).hexdigest(), sha256=hashlib.sha256(data).hexdigest()
        )
        table = "packages.conda" if pkg.fmt == ".conda" else "packages"
        repodata[pkg.spec.subdir][table][path.name] = record
    for subdir, data in repodata.items():
        (root / subdir).mkdir(parents=True, exist_ok=True)
        write_repodata(root / subdir, data)
    return root


# ---------------------------------------------------------------- the demo channel

# the fake python runs the tests' own python on the prefix's site-packages: enough for entry points
PYTHON_WRAPPER = f"""#!/bin/sh
here=${{0%/*}}
PYTHONPATH=$here/../lib/python3.12/site-packages exec {sys.executable} "$@"
""".encode()


def libdemo_so() -> bytes:
    """A 'shared library' with the placeholder in C strings: alone, twice in one string, before
    an rpath-like tail, and once with no NUL after it (conda leaves that one)."""
    ph = PH.encode()
    return (
        b"\x7fELF\x02\x01\x01\0" + bytes(range(256))
        + ph + b"/lib\0" + b"\x01\x02\x03\x04"
        + ph + b"/share/a:" + ph + b"/share/b\0" + bytes(range(255, -1, -1))
        + b"RPATH=" + ph + b"\0\0\0"
        + b"tail " + ph
    )  # fmt: skip


def demo_packages() -> list[Pkg]:
    """python, conda (noarch: python, an entry point), a library with binary and text
    placeholders, two versions of a tool (one with a post-link script), noarch data, and an old
    style .tar.bz2 package with info/has_prefix."""
    ph = PH
    python = Pkg(
        PackageSpec(
            "python",
            "3.12.1",
            "h0_cpython",
            subdir="linux-64",
            license="PSF-2.0",
            timestamp=1700000000000,
            files={
                "bin/python3.12": PYTHON_WRAPPER,
                "lib/python3.12/_sysconfigdata.py": f"PREFIX = '{ph}'\nLIBDIR = '{ph}/lib'\n".encode(),
                "lib/libpython3.12.so": b"\x7fELF" + ph.encode() + b"/lib/python3.12\0" + bytes(64),
            },
        ),
        placeholders={
            "lib/python3.12/_sysconfigdata.py": (ph, "text"),
            "lib/libpython3.12.so": (ph, "binary"),
        },
        symlinks={"bin/python": "python3.12", "bin/python3": "python3.12"},
    )
    conda = Pkg(
        PackageSpec(
            "conda",
            "24.1.0",
            "py_0",
            subdir="noarch",
            noarch="python",
            depends=["python >=3.12"],
            license="BSD-3-Clause",
            files={
                "site-packages/conda/__init__.py": b"__version__ = '24.1.0'\n",
                "site-packages/conda/cli.py": b"import os\n\ndef main():\n"
                b"    print('conda 24.1.0 from', os.path.dirname(os.path.abspath(__file__)))\n    return 0\n",
                "python-scripts/conda-helper": b"#!/bin/sh\necho helper\n",
            },
        ),
        link_json={
            "noarch": {"type": "python", "entry_points": ["conda = conda.cli:main"]},
            "package_metadata_version": 1,
        },
    )
    libdemo = Pkg(
        PackageSpec(
            "libdemo",
            "1.0",
            "h1",
            subdir="linux-64",
            license="MIT",
            files={
                "lib/libdemo.so.1.0": libdemo_so(),
                "lib/pkgconfig/libdemo.pc": f"prefix={ph}\nlibdir=${{prefix}}/lib\ninc={ph}/inc\n".encode(),
                "include/demo.h": b"#define DEMO 1\n",
            },
        ),
        placeholders={"lib/libdemo.so.1.0": (ph, "binary"), "lib/pkgconfig/libdemo.pc": (ph, "text")},
        symlinks={"lib/libdemo.so": "libdemo.so.1.0"},
    )
    data = Pkg(PackageSpec("demo-data", "1.0", "0", subdir="noarch", noarch="generic",
                           files={"share/demo-data/greeting.txt": b"hello from demo-data\n"}))  # fmt: skip

    def tool(version: str, extra: dict) -> Pkg:
        script = (
            f"#!{ph}/bin/demo-sh\n"
            f'echo "demo-tool {version} in {ph}"\n'
            f'cat "{ph}/share/demo-data/greeting.txt"\n'
        ).encode()
        files = {"bin/demo-tool": script, "bin/demo-sh": b'#!/bin/sh\nexec /bin/sh "$@"\n', **extra}
        return Pkg(
            PackageSpec("demo-tool", version, "h2", subdir="linux-64", depends=["libdemo >=1.0", "demo-data"],
                        files=files),
            placeholders={"bin/demo-tool": (ph, "text")},
        )  # fmt: skip

    tool1 = tool("1.0", {"share/demo-tool/old.txt": b"only in 1.0\n"})
    post_link = (
        b'#!/bin/sh\necho "$PKG_NAME $PKG_VERSION $PKG_BUILDNUM" > "$PREFIX/share/demo-tool/post-linked"\n'
    )
    tool2 = tool(
        "2.0", {"bin/.demo-tool-post-link.sh": post_link, "share/demo-tool/new.txt": b"new in 2.0\n"}
    )
    legacy = Pkg(
        PackageSpec("my_package", "1.0", "0", subdir="linux-64", depends=["demo-tool"],
                    files={"etc/my_package.conf": f"home={LEGACY_PH}\n".encode()}),
        fmt=".tar.bz2", placeholders={"etc/my_package.conf": (LEGACY_PH, "text")}, legacy=True,
    )  # fmt: skip
    return [python, conda, libdemo, data, tool1, tool2, legacy]


# ---------------------------------------------------------------- conda's replacement, to compare


def conda_replace(data: bytes, placeholder: str, prefix: str, mode: str, limit: int = 127) -> bytes:
    """conda's prefix replacement (conda/core/portability.py), written out again for the tests."""
    a, b = placeholder.encode(), prefix.encode()
    if mode == "binary":

        def pad(match: re.Match) -> bytes:
            count = match.group().count(a)
            assert len(a) >= len(b)
            return match.group().replace(a, b) + b"\0" * ((len(a) - len(b)) * count)

        out = re.sub(re.escape(a) + rb"([^\0]*?)\0", pad, data)
        assert len(out) == len(data)
        return out
    out = data.replace(a, b)
    match = re.match(rb"^(#!(?:[ ]*)(/(?:\\ |[^ \n\r\t])*)(.*))$", out, re.MULTILINE)
    if match:
        whole, executable, options = match.groups()
        if len(whole) > limit:
            out = out.replace(whole, b"#!/usr/bin/env " + executable.rsplit(b"/", 1)[1] + options)
    return out


# ---------------------------------------------------------------- running things as a user does


def cas_installer(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120):
    """`cas-installer ARGS` (the installed command) in a subprocess, without a terminal."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CAS_MIRROR_")}
    base["CAS_MIRROR_SYSTEM_CONFIG"] = "/nonexistent/cas-mirror-system"  # never the developer's
    base["CAS_MIRROR_USER_CONFIG"] = "/nonexistent/cas-mirror-user"
    base.update(env or {})
    return subprocess.run(
        [str(Path(sys.executable).with_name("cas-installer")), *args],
        capture_output=True, text=True, cwd=cwd, env=base, timeout=timeout,
    )  # fmt: skip


def run_installer(installer: Path, *args: str, stdin: str = "", shell: str = "bash", env: dict | None = None):
    """`env -i SHELL installer.sh ARGS` (a clean environment: no PATH, no HOME, no Python)."""
    extra = [f"{k}={v}" for k, v in (env or {}).items()]
    return subprocess.run(
        ["env", "-i", *extra, shell, str(installer), *args],
        input=stdin, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def run_program(program: Path, env: dict | None = None):
    """`env -i PROGRAM`: run through its #! line, in a clean environment."""
    extra = [f"{k}={v}" for k, v in (env or {}).items()]
    return subprocess.run(["env", "-i", *extra, str(program)], capture_output=True, text=True, timeout=60)


def tree(root: Path) -> dict[str, bytes | str]:
    """Every file of a folder: path -> bytes, or `-> target` for a link."""
    out: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            out[rel] = path.read_bytes()
    return out


class Reporter:
    """An installer reporter for rattler that records every operation it is told of."""

    def __init__(self):
        self.operations: list[str] = []

    def on_transaction_start(self, total_operations: int) -> None:
        if total_operations:
            self.operations.append(f"{total_operations} operations")

    def on_link_start(self, operation: int, package_name: str) -> int:
        self.operations.append(f"link {package_name}")
        return operation

    def on_unlink_start(self, operation: int, package_name: str) -> int:
        self.operations.append(f"unlink {package_name}")
        return operation

    def __getattr__(self, name: str):
        if name.startswith("on_"):
            return lambda *args, **kwargs: 0
        raise AttributeError(name)


def rattler_would_do(
    channels: str | list[str], specs: list[str], prefix: Path, cache: Path, platform="linux-64"
):
    """What py-rattler, asked to install `specs` from the channels into `prefix`, does: the
    operations it reports (none when the prefix already holds the solution)."""
    urls = [channels] if isinstance(channels, str) else channels

    async def run():
        records = await rattler.solve(
            [rattler.Channel(url) for url in urls], specs,
            gateway=rattler.Gateway(cache_dir=cache / "repodata"),
            platforms=[platform, "noarch"], virtual_packages=[],
        )  # fmt: skip
        reporter = Reporter()
        await rattler.install(
            records, prefix, cache_dir=cache / "pkgs", platform=rattler.Subdir(platform), reporter=reporter
        )
        return reporter.operations

    return asyncio.run(run())


def rattler_install(channels: list[str], specs: list[str], prefix: Path, cache: Path, platform: str) -> None:
    """py-rattler's own solve and install of `specs` into `prefix`."""

    async def run():
        records = await rattler.solve(
            [rattler.Channel(c) for c in channels], specs,
            gateway=rattler.Gateway(cache_dir=cache / "repodata"), platforms=[platform, "noarch"],
            virtual_packages=[],
        )  # fmt: skip
        await rattler.install(
            records, prefix, cache_dir=cache / "pkgs", platform=rattler.Subdir(platform), show_progress=False
        )

    asyncio.run(run())
