"""The PyPI mirror's parts on their own: the settings section with its provenance, the index
pages as hostile input, the filters on the real charset-normalizer builds, markers for the
configured targets, and content negotiation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name
from test_server_support import server_env

from casconsole.errors import SettingsError
from casconsole.pypi.closure import environments, needed, requirements_of
from casconsole.pypi.select import Selector, platform_tags
from casconsole.pypi.simple import DistFile, PageError, make_file, parse_html_page, parse_json_page
from casconsole.pypi.wanted import read_requirements
from casconsole.serve.pypi import negotiate, normalize
from casconsole.settings import PypiSettings, load_settings

SHA = "a" * 64


def show(config: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "casconsole.cli.sync", "--config", str(config), "--show", "--json", *args],
        capture_output=True,
        text=True,
        env=env or server_env(),
    )


# ---------------------------------------------------------------- settings


def test_the_section_is_layered_and_each_key_shows_its_file_and_line(tmp_path):
    config = tmp_path / "cas.yaml"
    config.write_text(
        "mirror_dir: mirror\npypi:\n  index_url: https://pypi.example/simple/\n  projects:\n"
        "    - requests >=2.30\n  closure: true\n  proxy: http://pypi-proxy:3128\n"
    )
    done = show(config, "--set", "pypi.newest=2", env=server_env(CAS_MIRROR_PYPI_SDISTS="false"))
    assert done.returncode == 0, done.stderr
    keys = json.loads(done.stdout)
    assert keys["pypi.index_url"] == {
        "value": "https://pypi.example/simple",
        "layer": "file",
        "source": f"{config}:3",
    }
    assert (
        keys["pypi.projects"]["value"] == ["requests >=2.30"]
        and keys["pypi.projects"]["source"] == f"{config}:4"
    )
    assert keys["pypi.closure"]["source"] == f"{config}:6"
    assert keys["pypi.sdists"] == {"value": False, "layer": "env", "source": "CAS_MIRROR_PYPI_SDISTS"}
    assert keys["pypi.newest"] == {"value": 2, "layer": "cli", "source": "--set pypi.newest"}
    # the PyPI side's own proxy; the conda upstream's is untouched
    assert keys["pypi.proxy"]["value"] == "http://pypi-proxy:3128" and keys["proxy"]["value"] is None
    settings = load_settings(config)
    assert settings.pypi.closure and settings.pypi.projects == ["requests >=2.30"] and settings.proxy is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pypi: [requests]\n", ":1: pypi: expected a mapping of key: value"),
        ("pypi:\n  clousre: true\n", ":2: unknown key 'pypi.clousre' (did you mean 'pypi.closure'?)"),
        (
            "pypi:\n  projects: ['requests >=']\n",
            ":2: pypi.projects: 'requests >=' is not a PEP 508 requirement",
        ),
        (
            "pypi:\n  python_versions: [three]\n",
            ":2: pypi.python_versions: 'three': expected a Python version",
        ),
        (
            "pypi:\n  platforms: ['Linux x86']\n",
            ":2: pypi.platforms: 'Linux x86' is not a wheel platform tag",
        ),
        (
            "pypi:\n  index_url: ftp://x/simple\n",
            ":2: pypi.index_url: index 'ftp://x/simple': expected a URL",
        ),
    ],
)
def test_a_bad_section_is_reported_with_its_file_and_line(tmp_path, text, message):
    config = tmp_path / "cas.yaml"
    config.write_text(text)
    done = show(config)
    assert done.returncode == 2
    assert f"cas-sync: error: {config}{message}" in done.stderr, done.stderr


def test_a_requirements_file_is_read_with_its_lines(tmp_path):
    reqs = tmp_path / "requirements.txt"
    reqs.write_text(
        "# tools\nrequests[socks] >=2.30  # the client\n\nAttrs\\\n  ==24.2.0\nsix; python_version<'3'\n"
    )
    wanted = read_requirements(reqs)
    assert [(w.name, str(w.specifier), sorted(w.extras), w.source) for w in wanted] == [
        ("requests", ">=2.30", ["socks"], f"{reqs}:2"),
        ("attrs", "==24.2.0", [], f"{reqs}:4"),
        ("six", "", [], f"{reqs}:6"),
    ]
    reqs.write_text("requests\n-r other.txt\nfoo @ https://example.org/foo.whl\nbar >=\n")
    with pytest.raises(SettingsError) as err:
        read_requirements(reqs)
    text = str(err.value)
    assert f"{reqs}:2: -r: pip options are not read here" in text
    assert f"{reqs}:3: foo @ URL" in text and f"{reqs}:4: not a PEP 508 requirement" in text


# ---------------------------------------------------------------- pages as hostile input


def json_page(files: list[dict], name: str = "demo", version: str = "1.1") -> bytes:
    return json.dumps({"meta": {"api-version": version}, "name": name, "files": files}).encode()


def test_a_json_page_keeps_only_files_that_are_safe_and_of_the_project():
    files = [
        {
            "filename": "demo-1.0-py3-none-any.whl",
            "url": "../../f/demo-1.0-py3-none-any.whl",
            "hashes": {"sha256": SHA},
            "yanked": "bad",
            "core-metadata": {"sha256": "b" * 64},
            "size": 10,
        },
        {"filename": "../../etc/passwd.whl", "url": "x", "hashes": {"sha256": SHA}},
        {"filename": "other-1.0-py3-none-any.whl", "url": "x", "hashes": {"sha256": SHA}},
        {"filename": "demo-2.0.tar.gz", "url": "x", "hashes": {"sha512": "c" * 128}},
        {"filename": "demo-3.0.tar.gz", "url": "file:///etc/passwd", "hashes": {"sha256": SHA}},
        {"filename": "demo-1.0.exe", "url": "x", "hashes": {"sha256": SHA}},
        {"filename": ".demo-1.0.tar.gz", "url": "x", "hashes": {"sha256": SHA}},
    ]
    page = parse_json_page(json_page(files), "https://idx.example/simple/demo/", canonicalize_name("demo"))
    assert [f.filename for f in page.files] == ["demo-1.0-py3-none-any.whl"]
    kept = page.files[0]
    assert kept.url == "https://idx.example/f/demo-1.0-py3-none-any.whl"
    assert (kept.yanked, kept.metadata_sha256, kept.size) == ("bad", "b" * 64, 10)
    reasons = "\n".join(page.refused)
    assert "a path, a colon" in reasons and "a file of project 'other'" in reasons
    assert (
        "no sha256" in reasons
        and "not http(s): file" in reasons
        and "neither a wheel nor an sdist" in reasons
    )
    assert "starting with a dot" in reasons


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (json_page([], version="2.0"), "simple API version '2.0'"),
        (b"{not json", "not a PEP 691 project page"),
        (
            json.dumps({"meta": {"api-version": "1.0"}, "name": "demo", "files": "x"}).encode(),
            "not a PEP 691",
        ),
        (json_page([], name="evil"), "the page is of project 'evil'"),
    ],
)
def test_a_json_page_that_cannot_be_read_names_its_url(data, why):
    with pytest.raises(PageError, match=why):
        parse_json_page(data, "https://idx.example/simple/demo/", canonicalize_name("demo"))


def test_an_html_page_is_read_with_its_pep_592_and_658_attributes():
    html = (
        '<html><head><meta name="pypi:repository-version" content="1.0"></head><body>'
        f'<a href="/f/demo-1.0-py3-none-any.whl#sha256={SHA}" data-requires-python="&gt;=3.8" '
        f'data-yanked="" data-core-metadata="sha256={"b" * 64}">demo-1.0-py3-none-any.whl</a>'
        f'<a href="../../f/demo-1.1.tar.gz#md5={"c" * 32}">demo-1.1.tar.gz</a>'
        '<a href="/f/demo-1.2.tar.gz">demo-1.2.tar.gz</a><a>no href</a>'
        "</body></html>"
    ).encode()
    page = parse_html_page(html, "https://idx.example/simple/demo/", canonicalize_name("demo"))
    first, second = page.files
    assert first.url == "https://idx.example/f/demo-1.0-py3-none-any.whl"
    assert (first.requires_python, first.yanked, first.metadata_sha256) == (">=3.8", "", "b" * 64)
    assert (second.sha256, second.md5, second.yanked) == (None, "c" * 32, None)
    assert page.refused == [
        "'demo-1.2.tar.gz': no sha256 (nor md5) given by the index: it could not be verified"
    ]
    with pytest.raises(PageError, match="not a UTF-8"):
        parse_html_page(b"\xff\xfe<a>", "https://idx.example/simple/demo/", canonicalize_name("demo"))


# ---------------------------------------------------------------- the filters, on real file names


def dist(filename: str, **kw) -> DistFile:
    name = canonicalize_name(filename.split("-", 1)[0])
    made = make_file(name, filename, f"https://idx.example/{filename}", {"sha256": SHA}, **kw)
    assert isinstance(made, DistFile), made
    return made


def decide(pypi: PypiSettings, filename: str, spec: str = "", **kw):
    from packaging.requirements import Requirement

    from casconsole.pypi.wanted import Wanted

    d = dist(filename, **kw)
    return Selector(pypi).decide(d, [Wanted.of(Requirement(f"{d.project}{spec}"), "pypi.projects")])


def test_python_and_platform_filters_on_the_real_charset_normalizer_builds(realdata):
    names = sorted(p.name for p in (realdata / "pypi-files").glob("charset_normalizer-*.whl"))
    assert len(names) == 4
    linux_311 = PypiSettings(python_versions=["3.11"], platforms=["manylinux_2_28_x86_64"])
    kept = {n: decide(linux_311, n, requires_python=">=3.7.0") for n in names}
    assert {n for n, d in kept.items() if d.kept} == {
        "charset_normalizer-3.4.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "charset_normalizer-3.4.0-py3-none-any.whl",
    }
    assert (
        kept["charset_normalizer-3.4.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"].step
        == "python"
    )
    assert kept["charset_normalizer-3.4.0-cp311-cp311-win_amd64.whl"].step == "platform"
    older_glibc = PypiSettings(platforms=["manylinux_2_12_x86_64"])  # 2_17 wheels need a newer glibc
    assert decide(older_glibc, names[0]).step == "platform"
    windows_312 = PypiSettings(python_versions=["3.12"], platforms=["win_amd64"])
    assert [n for n in names if decide(windows_312, n).kept] == ["charset_normalizer-3.4.0-py3-none-any.whl"]
    assert (
        decide(PypiSettings(python_versions=["3.6"]), names[-1], requires_python=">=3.7.0").step == "python"
    )


def test_prereleases_yanked_sdists_and_specifiers():
    plain = PypiSettings()
    assert decide(plain, "demo-2.0rc1-py3-none-any.whl").step == "prerelease"
    assert decide(plain, "demo-2.0rc1-py3-none-any.whl", " >=2.0rc1").kept  # a specifier that names one
    assert decide(PypiSettings(prereleases=True), "demo-2.0rc1-py3-none-any.whl").kept
    assert decide(plain, "demo-1.0-py3-none-any.whl", yanked="oops").reason == "oops"
    assert decide(PypiSettings(yanked=True), "demo-1.0-py3-none-any.whl", yanked="").kept
    assert decide(PypiSettings(sdists=False), "demo-1.0.tar.gz").step == "sdists"
    assert decide(plain, "demo-1.0-py3-none-any.whl", " ==2.*").step == "specifier"
    assert (
        decide(PypiSettings(python_versions=["3.8"]), "demo-1.0-cp39-abi3-manylinux_2_17_x86_64.whl").step
        == "python"
    )
    assert decide(PypiSettings(python_versions=["3.12"]), "demo-1.0-cp39-abi3-manylinux_2_17_x86_64.whl").kept


def test_platform_tags_cover_what_pip_accepts_there():
    tags = platform_tags(["manylinux_2_28_aarch64", "macosx_11_0_arm64"])
    assert {"manylinux_2_17_aarch64", "manylinux2014_aarch64", "manylinux1_aarch64", "linux_aarch64"} <= tags
    assert "manylinux_2_31_aarch64" not in tags and "manylinux_2_17_x86_64" not in tags
    assert {"macosx_10_9_universal2", "macosx_11_0_arm64"} <= tags and "macosx_12_0_arm64" not in tags


def test_markers_are_evaluated_for_the_configured_targets(realdata):
    from packaging.requirements import Requirement

    linux = environments(["3.11"], ["manylinux_2_17_x86_64"])
    anywhere = environments([], [])
    win = Requirement("winonly; sys_platform == 'win32'")
    socks = Requirement("PySocks!=1.5.7,>=1.5.6; extra == 'socks'")
    assert not needed(win, frozenset(), linux) and needed(win, frozenset(), anywhere)
    assert not needed(socks, frozenset(), anywhere) and needed(socks, frozenset({"socks"}), linux)
    from pypi_index import wheel_metadata

    reqs, bad = requirements_of(wheel_metadata(realdata / "pypi-files" / "requests-2.32.3-py3-none-any.whl"))
    followed = sorted(canonicalize_name(r.name) for r in reqs if needed(r, frozenset(), linux))
    assert followed == ["certifi", "charset-normalizer", "idna", "urllib3"] and not bad


# ---------------------------------------------------------------- serving


@pytest.mark.parametrize(
    ("accept", "answer"),
    [
        (None, "text/html; charset=utf-8"),
        (
            b"application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.1, text/html;q=0",
            "application/vnd.pypi.simple.v1+json",
        ),
        (
            b"application/vnd.pypi.simple.v1+json;q=0.2, application/vnd.pypi.simple.v1+html",
            "application/vnd.pypi.simple.v1+html",
        ),
        (b"application/vnd.pypi.simple.latest+json", "application/vnd.pypi.simple.v1+json"),
        (b"text/*", "text/html; charset=utf-8"),
        (b"application/xml", None),
        (b"application/vnd.pypi.simple.v1+json;q=0", None),
    ],
)
def test_content_negotiation(accept, answer):
    offer = negotiate(accept)
    assert (offer[1] if offer else None) == answer


def test_names_are_normalized_as_pep_503_says():
    for name in ("Charset_Normalizer", "charset.normalizer", "CHARSET--_normalizer"):
        assert normalize(name) == canonicalize_name(name) == "charset-normalizer"
