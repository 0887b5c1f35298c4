"""Building an installer: read the channels, solve, take and pack every package, write the file.

`build_installer(spec, output_dir, ...)` is the one entry: the CLI and the console call it with
their own sink and get an `InstallerStats` back. Nothing is left behind on failure or
cancellation: the work happens in a hidden folder beside the output, removed at the end, and the
installer appears under its name only once complete.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from casconsole.errors import Cancelled, StorageError
from casconsole.events import Event, Sink, null_sink
from casconsole.installer.channels import fetch_channels
from casconsole.installer.construct import InstallerSpec
from casconsole.installer.fetch import Taken, take_package
from casconsole.installer.pack import EPOCH, Packed, PythonInfo, pack_package
from casconsole.installer.placeholders import SHEBANG_MAX
from casconsole.installer.script import Header, write_installer
from casconsole.installer.solve import Chosen, solve
from casconsole.upstream.policy import NetworkPolicy

WORKERS = 3  # packages taken and packed at once (decompression and gzip release the GIL)


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class ChannelRead(Event):
    kind: ClassVar[str] = "channel_read"
    channel: str  # the URL shown (no token)
    subdir: str
    records: int


@dataclass(frozen=True)
class Solved(Event):
    kind: ClassVar[str] = "solved"
    packages: int
    download_bytes: int  # the packages' sizes, as their records say


@dataclass(frozen=True)
class PackageTaken(Event):
    kind: ClassVar[str] = "package_taken"
    fn: str
    size: int
    downloaded: int  # bytes that came over the network (0 for a channel on disk)


@dataclass(frozen=True)
class PackagePacked(Event):
    kind: ClassVar[str] = "package_packed"
    fn: str
    size: int  # the package file's
    files: int
    edits: int
    done: int
    total: int


@dataclass(frozen=True)
class InstallerWritten(Event):
    kind: ClassVar[str] = "installer_written"
    path: str
    size: int
    sha256: str


@dataclass
class InstallerStats:
    """What a build did."""

    path: Path | None = None
    size: int = 0
    sha256: str = ""
    packages: list[str] = field(default_factory=list)  # stems, in install order
    downloaded: int = 0  # bytes over the network
    package_bytes: int = 0  # the package files taken
    installed_bytes: int = 0  # what the packages hold once installed
    edits: int = 0  # files whose prefix placeholders the installer replaces
    seconds: float = 0.0


# ---------------------------------------------------------------- the build


def build_installer(
    spec: InstallerSpec,
    output_dir: Path,
    *,
    policy: NetworkPolicy | None = None,
    channel_name: str = "pkgs",
    sink: Sink | None = None,
    cancel: threading.Event | None = None,
) -> InstallerStats:
    """Build `output_dir/NAME-VERSION-PLATFORM.sh` from `spec`."""
    started = time.monotonic()
    sink = sink or null_sink
    cancel = cancel or threading.Event()
    policy = policy or NetworkPolicy()
    stats = InstallerStats()
    created = not output_dir.exists()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(dir=output_dir, prefix=f".{spec.file_name}.build-"))
    except OSError as exc:
        raise StorageError(f"{exc.filename or output_dir}: cannot write ({exc.strerror or exc})") from None
    packed: list[Packed] = []
    try:
        channels = fetch_channels(
            spec, policy, channel_name, cancel=cancel, on_read=lambda c, s, n: sink(ChannelRead(c, s, n))
        )
        chosen = solve(spec, channels, workdir)
        sink(Solved(len(chosen), sum(c.size or 0 for c in chosen)))
        packed = _take_and_pack(spec, chosen, workdir, policy, sink, cancel, stats)
        payload = _payload(spec, packed, workdir)
        if cancel.is_set():
            raise Cancelled
        header = _header(spec, packed)
        target = output_dir / spec.file_name
        stats.size, stats.sha256 = write_installer(target, header, payload)
        stats.path = target
        sink(InstallerWritten(str(target), stats.size, stats.sha256))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if created and stats.path is None:
            with contextlib.suppress(OSError):
                output_dir.rmdir()  # made for this build, which wrote nothing
    stats.packages = [p.chosen.stem for p in packed]
    stats.seconds = time.monotonic() - started
    return stats


def _take_and_pack(
    spec: InstallerSpec,
    chosen: list[Chosen],
    workdir: Path,
    policy: NetworkPolicy,
    sink: Sink,
    cancel: threading.Event,
    stats: InstallerStats,
) -> list[Packed]:
    python = _python_info(chosen)
    requested = _requested(spec, chosen)
    (workdir / "downloads").mkdir()
    (workdir / "pkgs").mkdir()
    done = 0
    lock = threading.Lock()
    remote = any(not c.url.startswith("file:") for c in chosen)
    client = policy.metadata_client() if remote else None

    def one(index: int, item: Chosen) -> Packed:
        nonlocal done
        if cancel.is_set():
            raise Cancelled
        taken: Taken = take_package(item, workdir / "downloads", policy, client, cancel)
        sink(PackageTaken(item.fn, taken.size, taken.downloaded))
        packed = pack_package(
            index, item, taken, workdir / "pkgs",
            platform=spec.platform, python=python, requested=requested.get(item.name), cancel=cancel,
        )  # fmt: skip
        if taken.downloaded:
            with contextlib.suppress(OSError):
                taken.path.unlink()  # packed: the download is not needed any more
        with lock:
            done += 1
            stats.downloaded += taken.downloaded
            stats.package_bytes += taken.size
            stats.installed_bytes += packed.installed_bytes
            stats.edits += len(packed.edits)
            count = done
        sink(PackagePacked(item.fn, taken.size, packed.files, len(packed.edits), count, len(chosen)))
        return packed

    try:
        with ThreadPoolExecutor(WORKERS, "cas-installer") as pool:
            futures = [pool.submit(one, n, item) for n, item in enumerate(chosen)]
            try:
                return [f.result() for f in futures]
            except BaseException:
                cancel.set()  # the others stop between files
                raise
    finally:
        if client is not None:
            client.close()


def _python_info(chosen: list[Chosen]) -> PythonInfo | None:
    python = next((c for c in chosen if c.name == "python"), None)
    if python is None:
        return None
    major_minor = ".".join(python.version.split(".")[:2])
    raw = python.channel.raw_record(python.subdir, python.fn)
    site = raw.get("python_site_packages_path")
    if not isinstance(site, str) or not site or site.startswith("/") or ".." in site.split("/"):
        site = f"lib/python{major_minor}/site-packages"
    return PythonInfo(major_minor, site)


def _requested(spec: InstallerSpec, chosen: list[Chosen]) -> dict[str, str]:
    """Package name -> the spec that asked for it (conda-meta's requested_spec)."""
    import rattler

    names = {c.name for c in chosen}
    out: dict[str, str] = {}
    for text in spec.specs:
        name = rattler.MatchSpec(text).name
        key = name.normalized if name is not None else None
        if key in names:
            out.setdefault(key, text)
    return out


def _payload(spec: InstallerSpec, packed: list[Packed], workdir: Path) -> Path:
    """The tar archive the script unpacks: texts, the manifest, and per package its gzip
    tarball, its edits, its literals and its conda-meta record."""
    path = workdir / "payload.tar"
    try:
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
            if spec.welcome:
                _add(tar, "welcome.txt", spec.welcome.rstrip("\n").encode() + b"\n")
            if spec.license_text is not None:
                _add(tar, "license.txt", spec.license_text.encode())
            if spec.post_install is not None:
                _add(tar, "post_install", spec.post_install)
            _add(tar, "manifest", "".join(_manifest_line(p) for p in packed).encode())
            _add(tar, "specs", f"# update specs: {json.dumps(spec.specs)}\n".encode())
            for p in packed:
                n = f"{p.index:04d}"
                tar.add(p.tarball, f"pkgs/{n}.tar.gz", filter=_plain)
                _add(tar, f"meta/{n}.json", p.meta)
                if p.edits:
                    text, literals = edits_text(n, p.edits)
                    _add(tar, f"edits/{n}", text.encode())
                    for name, data in literals.items():
                        _add(tar, f"lit/{name}", data)
    except OSError as exc:
        raise StorageError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path


def _manifest_line(p: Packed) -> str:
    c = p.chosen
    flags = ("e" if p.edits else "") + ("l" if p.post_link else "") or "-"
    channel = f"{c.channel.shown}/{c.subdir}"
    return f"{p.index:04d} {flags} {c.name} {c.version} {c.build} {c.build_number} {channel}\n"


def edits_text(n: str, edits: list) -> tuple[str, dict[str, bytes]]:
    """The edit list the script reads (`cas_edit`), and its literals by name."""
    lines: list[str] = []
    literals: dict[str, bytes] = {}

    def op_line(op: tuple) -> str:
        if op[0] == "X":
            name = f"{n}-{len(literals)}"
            literals[name] = op[1]
            return f"X {name}"
        return " ".join(str(x) for x in op)

    for e in edits:
        kind = "b" if e.binary else "t"
        lines.append(
            f"{kind} {e.mode:o} {e.placeholder_len} {len(e.ops)} {len(e.alt_ops)} "
            f"{e.shebang_len} {e.shebang_count} {e.path}"
        )
        lines.extend(op_line(op) for op in e.ops)
        lines.extend(op_line(op) for op in e.alt_ops)
    return "".join(line + "\n" for line in lines), literals


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime, info.mode = EPOCH, 0o644
    return info


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = _plain(tarfile.TarInfo(name))
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _header(spec: InstallerSpec, packed: list[Packed]) -> Header:
    lengths = [p.min_binary_placeholder for p in packed if p.min_binary_placeholder]
    return Header(
        name=spec.name,
        version=spec.version,
        platform=spec.platform,
        default_prefix=spec.default_prefix or f"~/{spec.name}",
        count=len(packed),
        max_prefix=min(lengths, default=0),
        shebang_max=SHEBANG_MAX["osx" if spec.platform.startswith("osx") else "linux"],
        has_license=spec.license_text is not None,
        has_welcome=bool(spec.welcome),
        has_post_install=spec.post_install is not None,
        meta={
            "name": spec.name,
            "version": spec.version,
            "platform": spec.platform,
            "specs": spec.specs,
            "packages": len(packed),
        },
    )
