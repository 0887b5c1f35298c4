"""Issue 16, end to end, as a site runs it: a loopback upstream simple index with tiny projects
the test builds and the real PyPI files of ../shared/realdata, `cas-sync --pypi-only` mirroring
a chosen subset with its closure, `cas-server` serving it, and pip installing from it into a
fresh venv with no other index (pip's config files and PIP_* variables kept out)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from pypi_index import SimpleIndex, pip_install, real_files, tiny_projects
from test_server_support import Server, get, server_env

JSON = b"Accept: application/vnd.pypi.simple.v1+json\r\n"
PY = f"{sys.version_info.major}.{sys.version_info.minor}"

pytestmark = pytest.mark.slow


def cas_sync(config: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "casconsole.cli.sync", "--config", str(config), "--no-progress", *args],
        capture_output=True,
        text=True,
        env=env or server_env(),
        timeout=300,
    )


def write_config(path: Path, mirror: Path, index: str, **pypi) -> Path:
    lines = [f"mirror_dir: {mirror}", "pypi:", f"  index_url: {index}"]
    lines += [f"  {key}: {json.dumps(value)}" for key, value in pypi.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def upstream(tmp_path, realdata):
    with SimpleIndex(tiny_projects(tmp_path / "dist") + real_files(realdata)) as index:
        yield index


def files_of(mirror: Path) -> set[str]:
    return {p.name for p in (mirror / "pypi" / "files").rglob("*") if p.is_file()}


def test_a_subset_with_its_closure_is_mirrored_served_and_pip_installs_from_it(tmp_path, upstream):
    mirror = tmp_path / "mirror"
    config = write_config(
        tmp_path / "cas.yaml",
        mirror,
        upstream.url,
        projects=["app", "requests ==2.32.3", "Private_Tool", "six"],
        closure=True,
        python_versions=[PY],
        platforms=["manylinux_2_28_x86_64"],
        sdists=False,
    )
    done = cas_sync(config, "--pypi-only")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pypi: done" in done.stdout

    got = files_of(mirror)
    # the closure: app's lib (newest matching, the yanked 1.2 and the pre-release 2.0rc1 left out)
    # and helper (python_version >= 3.8), not winonly (Windows only); requests' real dependencies
    assert {
        "app-1.0-py3-none-any.whl",
        "lib-1.0-py3-none-any.whl",
        "lib-1.1-py3-none-any.whl",
        "helper-0.5-py3-none-any.whl",
        "private_tool-1.0-py3-none-any.whl",
        "requests-2.32.3-py3-none-any.whl",
        "idna-3.10-py3-none-any.whl",
        "urllib3-2.2.3-py3-none-any.whl",
        "certifi-2024.8.30-py3-none-any.whl",
        "six-1.16.0-py2.py3-none-any.whl",
    } <= got
    assert (
        not {
            "lib-1.2-py3-none-any.whl",
            "lib-2.0rc1-py3-none-any.whl",
            "winonly-1.0-py3-none-any.whl",
            "unselected-1.0-py3-none-any.whl",
            "helper-0.5.tar.gz",
            "six-1.16.0.tar.gz",
        }
        & got
    )
    # charset-normalizer: the build for this Python on manylinux, and the pure one; not cp312, not win
    charset = {n for n in got if n.startswith("charset_normalizer") and not n.endswith(".metadata")}
    assert (
        charset
        == {
            f"charset_normalizer-3.4.0-cp{PY.replace('.', '')}-cp{PY.replace('.', '')}"
            "-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            "charset_normalizer-3.4.0-py3-none-any.whl",
        }
        or PY != "3.11"
    )
    assert "requests-2.32.3-py3-none-any.whl.metadata" in got  # PEP 658, from the wheel

    with Server(
        mirror, workers=1, private="", env={"CAS_MIRROR_PYPI_PRIVATE_PROJECTS": "private-tool"}
    ) as server:
        index = f"{server.url}/pypi/simple/"
        done = pip_install(tmp_path / "venv", index, "app", "requests")
        assert done.returncode == 0, done.stdout + done.stderr
        check = subprocess.run(
            [
                str(tmp_path / "venv/bin/python"),
                "-c",
                "import app, lib, helper, requests; print(lib.VERSION)",
            ],
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0 and check.stdout.strip() == "1.1", check.stderr
        assert "Looking in indexes: " + index in done.stdout

        # a project not selected is not found, though upstream has it
        done = pip_install(tmp_path / "venv", index, "unselected")
        assert done.returncode != 0 and "No matching distribution found for unselected" in done.stderr

        # the private project: not found without a token, installed with one
        done = pip_install(tmp_path / "venv", index, "private-tool")
        assert done.returncode != 0
        private_file = b"/pypi/files/private-tool/private_tool-1.0-py3-none-any.whl"
        for target in (
            b"/pypi/simple/private-tool/",
            private_file,
            private_file.replace(b"private-tool", b"Private_Tool"),
        ):
            status, _, _ = get(server.port, target)
            assert status == 404, target
        status, _, body = get(server.port, b"/pypi/simple/", JSON)
        assert "private-tool" not in [p["name"] for p in json.loads(body)["projects"]]
        token = subprocess.run(
            [sys.executable, "-m", "casconsole.cli.server", "--root", str(mirror), "token", "add", "pypi"],
            capture_output=True,
            text=True,
            env=server_env(CAS_MIRROR_PYPI_PRIVATE_PROJECTS="private-tool"),
        ).stdout.strip()
        done = pip_install(tmp_path / "venv", f"{server.url}/t/{token}/pypi/simple/", "private-tool")
        assert done.returncode == 0, done.stdout + done.stderr
        status, _, _ = get(server.port, f"/t/{token}".encode() + private_file)
        assert status == 200
        status, _, _ = get(server.port, b"/t/not-a-token" + private_file)
        assert status == 404
        status, _, body = get(server.port, f"/t/{token}/pypi/simple/".encode(), JSON)
        assert "private-tool" in [p["name"] for p in json.loads(body)["projects"]]


def test_the_pages_speak_pep_503_691_592_658(tmp_path, upstream):
    mirror = tmp_path / "mirror"
    config = write_config(
        tmp_path / "cas.yaml", mirror, upstream.url, projects=["lib", "helper"], yanked=True
    )
    assert cas_sync(config, "--pypi-only").returncode == 0
    with Server(mirror, workers=1, private="") as server:
        status, headers, body = get(server.port, b"/pypi/simple/lib/", JSON)
        assert status == 200 and headers["content-type"] == "application/vnd.pypi.simple.v1+json"
        assert headers["vary"] == "Accept"
        page = json.loads(body)
        files = {f["filename"]: f for f in page["files"]}
        assert page["meta"]["api-version"] == "1.1" and page["name"] == "lib"
        assert set(files) == {
            "lib-1.0-py3-none-any.whl",
            "lib-1.1-py3-none-any.whl",
            "lib-1.2-py3-none-any.whl",
        }
        assert files["lib-1.2-py3-none-any.whl"]["yanked"] == "broken build"  # PEP 592, kept as asked
        assert files["lib-1.0-py3-none-any.whl"]["yanked"] is False
        whl = mirror / "pypi/files/lib/lib-1.1-py3-none-any.whl"
        entry = files[whl.name]
        assert entry["hashes"]["sha256"] == hashlib.sha256(whl.read_bytes()).hexdigest()
        assert entry["size"] == whl.stat().st_size
        meta = entry["core-metadata"]["sha256"]
        url = urllib.parse.urljoin("/pypi/simple/lib/", entry["url"]) + ".metadata"
        status, _, data = get(server.port, url.encode())
        assert status == 200 and hashlib.sha256(data).hexdigest() == meta and b"Name: lib" in data

        status, headers, body = get(server.port, b"/pypi/simple/helper/", b"Accept: text/html\r\n")
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert b"helper-0.5.tar.gz#sha256=" in body and b"data-core-metadata=" in body
        status, headers, _ = get(server.port, b"/pypi/simple/Helper/")
        assert status == 301 and headers["location"] == "/pypi/simple/helper/"
        status, _, _ = get(server.port, b"/pypi/simple/lib/", b"Accept: application/xml\r\n")
        assert status == 406
        status, _, body = get(server.port, b"/pypi/simple/", JSON)
        assert [p["name"] for p in json.loads(body)["projects"]] == ["helper", "lib"]


def test_an_html_only_index_without_sizes_or_pep658_is_mirrored(tmp_path, realdata):
    """PEP 503 HTML fallback: sizes learned before the download, requirements read from wheels."""
    with SimpleIndex(real_files(realdata, metadata=False), html_only=True) as upstream:
        mirror = tmp_path / "mirror"
        config = write_config(
            tmp_path / "cas.yaml",
            mirror,
            upstream.url,
            projects=["requests"],
            closure=True,
            python_versions=[PY],
            platforms=["win_amd64"],
        )
        done = cas_sync(config, "--pypi-only")
        assert done.returncode == 0, done.stdout + done.stderr
        got = files_of(mirror)
        assert {
            "idna-3.10-py3-none-any.whl",
            "certifi-2024.8.30-py3-none-any.whl",
            "urllib3-2.2.3-py3-none-any.whl",
            "charset_normalizer-3.4.0-py3-none-any.whl",
        } <= got
        if PY == "3.11":
            assert "charset_normalizer-3.4.0-cp311-cp311-win_amd64.whl" in got
        assert not any("manylinux" in name for name in got)
        assert any(path.startswith("/simple/") for path in upstream.requests)
        assert not any(path.endswith(".metadata") for path in upstream.requests)


def test_the_dry_run_shows_the_pypi_plan_and_writes_nothing(tmp_path, upstream):
    mirror = tmp_path / "mirror"
    config = write_config(
        tmp_path / "cas.yaml", mirror, upstream.url, projects=["app", "nosuch"], closure=True
    )
    done = cas_sync(config, "--dry-run", "--pypi-only")
    assert done.returncode == 0, done.stderr
    assert "warning: unknown project 'nosuch': the index has no page for it" in done.stdout
    assert "\npypi\n" in done.stdout and "dropped as yanked" in done.stdout
    done = cas_sync(config, "--dry-run", "--pypi-only", "--json")
    plan = json.loads(done.stdout)["pypi"]
    assert plan["unknown"] == ["nosuch"]
    assert plan["projects"]["lib"]["excluded"]["lib-1.2-py3-none-any.whl"].startswith("yanked: broken build")
    assert plan["projects"]["lib"]["excluded"]["lib-2.0rc1-py3-none-any.whl"].startswith("prerelease")
    assert "lib-1.1-py3-none-any.whl" in plan["projects"]["lib"]["download"]
    assert not (mirror / "pypi").exists()
