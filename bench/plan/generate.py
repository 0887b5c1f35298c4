"""Generate a conda-forge-sized upstream channel (repodata only) for the plan benchmark.

About 500,000 records over linux-64 and noarch (about 250 MB of JSON), shaped like conda-forge:
a base of C libraries (`libgcc-ng`, `openssl`, `readline`, ...), `python` and `python_abi` per
minor version, compiled extensions built once per python (`python >=3.10,<3.11.0a0`,
`python_abi 3.10.* *_cp310`, pins like `libfoo >=1.2.3,<1.3.0a0`), R packages under GPL, and a
large noarch layer of pure-python packages (`pyhd8ed1ab_0`, `python >=3.8`, `requests >=2.28`).
Licenses spread over MIT, BSD, Apache, GPL2, GPL3, LGPL, AGPL, MPL and missing ones; the
`license_family` key is absent on a fifth of the records, as upstream. Every dependency names a
package and versions the channel has, so the unfiltered channel has no broken dependencies.

    python bench/plan/generate.py DIR [--records 500000] [--seed 1]

writes DIR/{linux-64,noarch}/repodata.json and .json.zst, DIR/blacklist.txt (100 names) and
DIR/whitelist.txt (23 entries, for the closure and curated timings).
Deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import zstandard

PYTHONS = ("3.8", "3.9", "3.10", "3.11", "3.12")
PY_PATCH = {"3.8": 20, "3.9": 19, "3.10": 14, "3.11": 9, "3.12": 5}

LICENSES = [  # (weight, license, license_family or None when upstream leaves it out)
    (30, "MIT", "MIT"),
    (18, "BSD-3-Clause", "BSD"),
    (4, "BSD-2-Clause", "BSD"),
    (14, "Apache-2.0", "APACHE"),
    (5, "GPL-2.0-or-later", "GPL2"),
    (4, "GPL-3.0-only", "GPL3"),
    (2, "GPL-3.0-or-later", "GPL"),
    (4, "LGPL-2.1-or-later", "LGPL"),
    (1, "LGPL-3.0-only", "LGPL"),
    (1, "AGPL-3.0-only", "AGPL"),
    (4, "MPL-2.0", "OTHER"),
    (2, "ISC", "OTHER"),
    (1, "PSF-2.0", "PSF"),
    (1, "Zlib", "OTHER"),
    (1, "LicenseRef-Proprietary", "PROPRIETARY"),
    (4, "", None),
]
R_LICENSES = [(5, "GPL-2 | GPL-3", "GPL3"), (3, "GPL (>= 2)", "GPL2"), (2, "MIT + file LICENSE", "MIT")]

SYLLABLES = (  # noqa: SIM905
    "aio py ja zen flask sql data geo net http json yaml web cloud stat plot tensor graph auth "
    "crypto jupyter sphinx mk docs async click rich tqdm arrow param pandas xarray dask bokeh "
    "holo pano vis fast micro nano mega hyper ultra open free deep sci bio chem astro quant fin "
    "text lang nlp vision audio image video mesh grid cell node edge core base lite flex trans"
).split()
SUFFIXES = (
    "", "-core", "-utils", "-client", "-server", "lib", "-io", "-tools", "kit", "-api", "-extras",
    "-plugin", "-base", "-cli", "-sdk", "-lite", "-types", "-compat", "x", "ify",
)  # fmt: skip

GCC = ["11.2.0", "12.2.0", "12.3.0", "13.1.0", "13.2.0", "14.1.0"]
BASE_LIBS = (  # name, versions, deps (names of earlier base libs)
    ("_libgcc_mutex", ["0.1"], []),
    ("libgomp", GCC, ["_libgcc_mutex"]),
    ("_openmp_mutex", ["4.5"], ["_libgcc_mutex", "libgomp"]),
    ("libgcc-ng", GCC, ["_libgcc_mutex", "_openmp_mutex"]),
    ("libstdcxx-ng", GCC, ["libgcc-ng"]),
    ("libgfortran5", ["11.2.0", "12.3.0", "13.2.0", "14.1.0"], ["libgcc-ng"]),
    ("libzlib", ["1.2.11", "1.2.12", "1.2.13", "1.3.1"], ["libgcc-ng"]),
    ("zlib", ["1.2.11", "1.2.12", "1.2.13", "1.3.1"], ["libgcc-ng", "libzlib"]),
    ("bzip2", ["1.0.8"], ["libgcc-ng"]),
    ("xz", ["5.2.5", "5.2.6", "5.4.2", "5.4.6"], ["libgcc-ng"]),
    ("zstd", ["1.5.2", "1.5.5", "1.5.6"], ["libgcc-ng", "libstdcxx-ng", "libzlib"]),
    ("ncurses", ["6.2", "6.3", "6.4", "6.5"], ["libgcc-ng"]),
    ("readline", ["8.1", "8.1.2", "8.2"], ["libgcc-ng", "ncurses"]),
    ("libffi", ["3.3", "3.4.2", "3.4.4"], ["libgcc-ng"]),
    ("libuuid", ["2.32.1", "2.38.1"], ["libgcc-ng"]),
    ("libnsl", ["2.0.0", "2.0.1"], ["libgcc-ng"]),
    ("libxcrypt", ["4.4.36"], ["libgcc-ng"]),
    ("openssl", ["1.1.1s", "1.1.1w", "3.0.8", "3.1.4", "3.2.1", "3.3.1"], ["libgcc-ng", "ca-certificates"]),
    ("ca-certificates", ["2023.11.17", "2024.2.2", "2024.7.4"], []),
    ("libsqlite", ["3.40.0", "3.44.2", "3.45.3", "3.46.0"], ["libgcc-ng", "libzlib"]),
    ("sqlite", ["3.40.0", "3.44.2", "3.45.3", "3.46.0"],
     ["libgcc-ng", "libsqlite", "ncurses", "readline", "libzlib"]),
    ("tk", ["8.6.12", "8.6.13"], ["libgcc-ng", "libzlib"]),
    ("libexpat", ["2.5.0", "2.6.2"], ["libgcc-ng"]),
    ("icu", ["70.1", "72.1", "73.2"], ["libgcc-ng", "libstdcxx-ng"]),
    ("libiconv", ["1.17"], ["libgcc-ng"]),
    ("libxml2", ["2.10.4", "2.11.5", "2.12.7"], ["libgcc-ng", "icu", "libiconv", "libzlib", "xz"]),
    ("c-ares", ["1.19.1", "1.28.1"], ["libgcc-ng"]),
    ("libev", ["4.33"], ["libgcc-ng"]),
    ("libnghttp2", ["1.52.0", "1.58.0"], ["libgcc-ng", "c-ares", "libev", "openssl", "libzlib"]),
    ("libssh2", ["1.10.0", "1.11.0"], ["libgcc-ng", "openssl", "libzlib"]),
    ("keyutils", ["1.6.1"], ["libgcc-ng"]),
    ("libedit", ["3.1.20191231"], ["libgcc-ng", "ncurses"]),
    ("krb5", ["1.20.1", "1.21.2", "1.21.3"], ["libgcc-ng", "libstdcxx-ng", "keyutils", "libedit", "openssl"]),
    ("libcurl", ["7.88.1", "8.4.0", "8.8.0"],
     ["libgcc-ng", "krb5", "libnghttp2", "libssh2", "openssl", "libzlib", "zstd"]),
    ("curl", ["7.88.1", "8.4.0", "8.8.0"], ["libgcc-ng", "libcurl", "openssl", "libzlib"]),
    ("libopenblas", ["0.3.21", "0.3.23", "0.3.25", "0.3.27"], ["libgcc-ng", "libgfortran5"]),
    ("libblas", ["3.9.0"], ["libopenblas"]),
    ("libcblas", ["3.9.0"], ["libblas"]),
    ("liblapack", ["3.9.0"], ["libblas"]),
    ("libpng", ["1.6.39", "1.6.43"], ["libgcc-ng", "libzlib"]),
    ("libjpeg-turbo", ["2.1.5.1", "3.0.0"], ["libgcc-ng"]),
    ("freetype", ["2.12.1"], ["libgcc-ng", "libpng", "libzlib"]),
    ("hdf5", ["1.12.2", "1.14.0", "1.14.3"], ["libgcc-ng", "libstdcxx-ng", "libcurl", "libzlib", "openssl"]),
    ("gmp", ["6.2.1", "6.3.0"], ["libgcc-ng", "libstdcxx-ng"]),
    ("mpfr", ["4.1.0", "4.2.1"], ["libgcc-ng", "gmp"]),
)  # fmt: skip


@dataclass
class Package:
    name: str
    versions: list[str]
    license: str
    family: str | None
    deps: list[str] = field(default_factory=list)  # dependency names; specs are chosen per record


class Generator:
    def __init__(self, records: int, seed: int):
        self.rng = random.Random(seed)
        self.target = records
        self.taken: set[str] = set()
        self.linux: dict[str, dict] = {}
        self.noarch: dict[str, dict] = {}
        self.versions: dict[str, list[str]] = {}  # every name's versions, for pins

    # ---------------------------------------------------------------- helpers

    def name(self, prefix: str = "") -> str:
        rng = self.rng
        while True:
            parts = rng.sample(SYLLABLES, rng.choice((1, 2, 2, 3)))
            text = prefix + "".join(parts) + rng.choice(SUFFIXES)
            if text not in self.taken:
                self.taken.add(text)
                return text

    def license(self, table=LICENSES) -> tuple[str, str | None]:
        weights = [w for w, _, _ in table]
        _, lic, fam = self.rng.choices(table, weights)[0]
        if fam is not None and self.rng.random() < 0.2:
            fam = None  # upstream often leaves license_family out
        return lic, fam

    def version_list(self, n: int) -> list[str]:
        rng = self.rng
        major, minor, patch = rng.randint(0, 3), rng.randint(0, 12), 0
        out = []
        for _ in range(n):
            step = rng.random()
            if step < 0.6:
                patch += rng.randint(1, 3)
            elif step < 0.93:
                minor, patch = minor + 1, 0
            else:
                major, minor, patch = major + 1, 0, 0
            out.append(f"{major}.{minor}.{patch}")
        if rng.random() < 0.05:
            out[-1] += rng.choice(("rc1", "a1", ".post1"))
        return out

    def pin(self, name: str, lower: bool = True) -> str:
        """A run-export style pin on an existing version of `name`: `name >=1.2.3,<1.3.0a0`."""
        versions = self.versions[name]
        v = self.rng.choice(versions)
        parts = v.split(".")
        if len(parts) >= 2 and parts[1].isdigit():
            upper = f"{parts[0]}.{int(parts[1]) + 1}.0a0"
        elif parts[0].isdigit():
            upper = f"{int(parts[0]) + 1}.0a0"
        else:
            return f"{name} >={v}"
        return f"{name} >={v},<{upper}" if lower else f"{name} <{upper}"

    def below(self, names: list[str], k: int, n: int) -> list[str]:
        """`n` dependencies for the k-th of `names`, among the names before it, as packages lean
        on what is more basic: four in five from the popular core (the first 300), the rest from
        anywhere earlier. A DAG, so closures stay a small part of the channel, as upstream."""
        if k == 0 or n == 0:
            return []
        core = min(k, 300)
        picks = {names[self.rng.randrange(core)] if self.rng.random() < 0.8 else names[self.rng.randrange(k)]
                 for _ in range(n)}  # fmt: skip
        return sorted(picks)

    def at_least(self, name: str) -> str:
        versions = self.versions[name]
        choice = self.rng.random()
        if choice < 0.3:
            return name
        v = versions[self.rng.randrange(0, max(1, len(versions) // 2 + 1))]
        return f"{name} >={v}"

    def record(
        self,
        name: str,
        version: str,
        build: str,
        number: int,
        subdir: str,
        lic: str,
        fam: str | None,
        depends: list[str],
        constrains: list[str] | None = None,
    ) -> dict:
        rng = self.rng
        rec = {
            "build": build,
            "build_number": number,
            "depends": depends,
            "license": lic,
        }
        if constrains:
            rec["constrains"] = constrains
        if fam is not None:
            rec["license_family"] = fam
        if not lic:
            del rec["license"]
        rec["md5"] = rng.randbytes(16).hex()
        rec["name"] = name
        rec["sha256"] = rng.randbytes(32).hex()
        rec["size"] = int(rng.lognormvariate(11.5, 1.6)) + 2000
        rec["subdir"] = subdir
        rec["timestamp"] = 1_600_000_000_000 + rng.randrange(0, 120_000_000_000)
        rec["version"] = version
        return rec

    def add(self, subdir: str, rec: dict) -> None:
        table = self.linux if subdir == "linux-64" else self.noarch
        ext = ".conda" if rec["timestamp"] > 1_660_000_000_000 else ".tar.bz2"
        table[f"{rec['name']}-{rec['version']}-{rec['build']}{ext}"] = rec

    def hash_build(self, prefix: str = "") -> str:
        return f"{prefix}h{self.rng.randbytes(4).hex()[:7]}"

    # ---------------------------------------------------------------- the channel

    def generate(self) -> None:
        rng = self.rng
        # base C libraries: every version, a few builds each
        for name, versions, deps in BASE_LIBS:
            self.taken.add(name)
            self.versions[name] = versions
            gcc = "gcc" in name or "gomp" in name or name.startswith("libgfortran")
            lic, fam = ("GPL-3.0-only WITH GCC-exception-3.1", "GPL") if gcc else self.license()
            subdir = "noarch" if name == "ca-certificates" else "linux-64"
            for v in versions:
                for number in range(rng.randint(1, 4)):
                    depends = [
                        self.pin(d) if d in ("openssl", "libzlib", "ncurses", "icu") else self.at_least(d)
                        for d in deps
                        if d in self.versions
                    ]
                    build = "conda_forge" if name == "_libgcc_mutex" else self.hash_build()
                    self.add(
                        subdir, self.record(name, v, f"{build}_{number}", number, subdir, lic, fam, depends)
                    )
        # python and python_abi
        self.versions["python"] = [f"{m}.{p}" for m in PYTHONS for p in range(PY_PATCH[m])]
        self.versions["python_abi"] = list(PYTHONS)
        py_deps = [
            "libgcc-ng",
            "bzip2",
            "libffi",
            "libnsl",
            "libsqlite",
            "libuuid",
            "libxcrypt",
            "ncurses",
            "openssl",
            "readline",
            "tk",
            "xz",
            "libzlib",
            "libexpat",
        ]
        for m in PYTHONS:
            tag = m.replace(".", "")
            self.add(
                "linux-64",
                self.record(
                    "python_abi",
                    m,
                    f"4_cp{tag}",
                    4,
                    "linux-64",
                    "BSD-3-Clause",
                    "BSD",
                    [],
                    [f"python {m}.* *_cpython"],
                ),
            )
            for p in range(PY_PATCH[m]):
                for number in range(3):
                    depends = [
                        self.pin(d)
                        if d in ("openssl", "libzlib", "ncurses", "readline")
                        else self.at_least(d)
                        for d in py_deps
                    ]
                    self.add(
                        "linux-64",
                        self.record(
                            "python",
                            f"{m}.{p}",
                            f"{self.hash_build()}_{number}_cpython",
                            number,
                            "linux-64",
                            "Python-2.0",
                            "PSF",
                            depends,
                        ),
                    )
        # C libraries of the long tail
        libs = []
        for _ in range(2_500):
            name = self.name("lib")
            self.versions[name] = self.version_list(rng.randint(2, 12))
            libs.append(name)
        # numpy, the anchor of the scientific stack
        self.versions["numpy"] = [
            "1.21.6",
            "1.22.4",
            "1.23.5",
            "1.24.4",
            "1.25.2",
            "1.26.4",
            "2.0.1",
            "2.0.2",
        ]
        self.taken.add("numpy")
        # noarch python packages (names first, so compiled ones can depend on them)
        pure = []
        for _ in range(11_000):
            name = self.name()
            self.versions[name] = self.version_list(rng.randint(3, 22))
            pure.append(name)
        compiled = []
        for _ in range(3_000):
            name = self.name()
            self.versions[name] = self.version_list(rng.randint(2, 12))
            compiled.append(name)
        r_names = []
        for _ in range(1_600):
            name = self.name("r-")
            self.versions[name] = self.version_list(rng.randint(2, 10))
            r_names.append(name)
        self.versions["r-base"] = ["4.1.3", "4.2.3", "4.3.1", "4.3.3", "4.4.1"]

        libs_at = {name: k for k, name in enumerate(libs)}
        for name in libs:
            lic, fam = self.license()
            deps = ["libgcc-ng", *rng.sample(BASE_NAMES, rng.randint(0, 3))]
            deps += self.below(libs, libs_at[name], rng.randint(0, 2))
            deps = [d for d in dict.fromkeys(deps) if d != name]
            for v in self.versions[name]:
                for number in range(rng.randint(1, 3)):
                    for _variant in range(rng.choice((1, 1, 2, 3))):
                        depends = [self.pin(d) if d != "libgcc-ng" else "libgcc-ng >=12" for d in deps]
                        if rng.random() < 0.5:
                            depends.append("libstdcxx-ng >=12")
                        self.add(
                            "linux-64",
                            self.record(
                                name,
                                v,
                                f"{self.hash_build()}_{number}",
                                number,
                                "linux-64",
                                lic,
                                fam,
                                depends,
                            ),
                        )
        # numpy: one build per python per version
        for v in self.versions["numpy"]:
            for m in PYTHONS:
                tag = m.replace(".", "")
                for number in range(2):
                    depends = [
                        "libblas >=3.9.0,<4.0a0",
                        "libcblas >=3.9.0,<4.0a0",
                        "libgcc-ng >=12",
                        "liblapack >=3.9.0,<4.0a0",
                        "libstdcxx-ng >=12",
                        python_pin(m),
                        f"python_abi {m}.* *_cp{tag}",
                    ]
                    self.add(
                        "linux-64",
                        self.record(
                            "numpy",
                            v,
                            f"py{tag}h{rng.randbytes(4).hex()[:7]}_{number}",
                            number,
                            "linux-64",
                            "BSD-3-Clause",
                            "BSD",
                            depends,
                        ),
                    )
        # compiled extensions: a build per python minor for every version
        for name in compiled:
            lic, fam = self.license()
            c_deps = rng.sample(libs, rng.randint(0, 3))
            p_deps = self.below(pure, len(pure), rng.randint(0, 4))
            uses_numpy = rng.random() < 0.25
            for v in self.versions[name]:
                for m in PYTHONS:
                    tag = m.replace(".", "")
                    for number in range(rng.choice((1, 1, 2, 3))):
                        depends = ["libgcc-ng >=12", python_pin(m), f"python_abi {m}.* *_cp{tag}"]
                        depends += [self.pin(d) for d in c_deps]
                        depends += [self.at_least(d) for d in p_deps]
                        if uses_numpy:
                            depends.append("numpy >=1.23.5,<2.0a0" if number == 0 else "numpy >=1.21.6")
                        self.add(
                            "linux-64",
                            self.record(
                                name,
                                v,
                                f"py{tag}{self.hash_build()}_{number}",
                                number,
                                "linux-64",
                                lic,
                                fam,
                                sorted(depends),
                            ),
                        )
        # R: r-base on linux-64, packages noarch or compiled per r-base
        for v in self.versions["r-base"]:
            for number in range(3):
                depends = [
                    "libgcc-ng >=12",
                    self.pin("readline"),
                    self.pin("libcurl"),
                    self.pin("icu"),
                    "libblas >=3.9.0,<4.0a0",
                    self.pin("libzlib"),
                    "liblapack >=3.9.0,<4.0a0",
                ]
                self.add(
                    "linux-64",
                    self.record(
                        "r-base",
                        v,
                        f"{self.hash_build()}_{number}",
                        number,
                        "linux-64",
                        "GPL-2.0-or-later",
                        "GPL2",
                        depends,
                    ),
                )
        r_at = {name: k for k, name in enumerate(r_names)}
        for name in r_names:
            lic, fam = self.license(R_LICENSES)
            r_deps = self.below(r_names, r_at[name], rng.randint(0, 5))
            r_deps = [d for d in r_deps if d != name]
            compiled_r = rng.random() < 0.4
            for v in self.versions[name]:
                if compiled_r:
                    for rb in ("4.2", "4.3", "4.4"):
                        depends = ["libgcc-ng >=12", f"r-base >={rb},<{rb[:-1]}{int(rb[-1]) + 1}.0a0"]
                        depends += [self.at_least(d) for d in r_deps]
                        self.add(
                            "linux-64",
                            self.record(
                                name,
                                v,
                                f"r{rb.replace('.', '')}{self.hash_build()}_0",
                                0,
                                "linux-64",
                                lic,
                                fam,
                                depends,
                            ),
                        )
                else:
                    depends = ["r-base >=4.1"] + [self.at_least(d) for d in r_deps]
                    self.add("noarch", self.record(name, v, "r41hc72bb7e_0", 0, "noarch", lic, fam, depends))
        # noarch python packages fill the rest: every version once, then extra builds at random
        slots = [(name, v) for name in pure for v in self.versions[name]]
        extra = max(0, self.target - len(self.linux) - len(self.noarch) - len(slots))
        builds = dict.fromkeys(slots, 1)
        for slot in rng.choices(slots, k=extra):
            builds[slot] += 1
        pure_at = {name: k for k, name in enumerate(pure)}
        for name in pure:
            lic, fam = self.license()
            deps = self.below(pure, pure_at[name], rng.randint(0, 6)) + (
                ["numpy"] if rng.random() < 0.1 else []
            )
            deps = [d for d in deps if d != name]
            for v in self.versions[name]:
                for number in range(builds[name, v]):
                    depends = [f"python >={rng.choice(PYTHONS[:3])}"] + [self.at_least(d) for d in deps]
                    self.add(
                        "noarch",
                        self.record(name, v, f"pyhd8ed1ab_{number}", number, "noarch", lic, fam, depends),
                    )

    def blacklist(self, n: int = 100) -> list[str]:
        """`n` names an administrator might block: some libraries others need, mostly leaves."""
        rng = random.Random(4242)
        names = sorted({rec["name"] for table in (self.linux, self.noarch) for rec in table.values()})
        first = ["readline", "libssh2"]
        return [*first, *rng.sample([n for n in names if n not in first], n - len(first))]

    def whitelist(self) -> list[str]:
        """A curated set: a python, numpy, R, and 20 compiled packages with their stacks."""
        rng = random.Random(77)
        compiled = sorted(
            {rec["name"] for rec in self.linux.values() if rec["build"].startswith("py3")} - {"numpy"}
        )
        return ["python 3.11.*", "numpy", "r-base", *rng.sample(compiled, 20)]


BASE_NAMES = [n for n, _, _ in BASE_LIBS if n not in ("_libgcc_mutex", "libgomp", "_openmp_mutex")]


def python_pin(m: str) -> str:
    major, minor = m.split(".")
    return f"python >={m},<{major}.{int(minor) + 1}.0a0"


def write(root: Path, gen: Generator) -> dict[str, int]:
    sizes = {}
    encoder = msgspec.json.Encoder()
    for subdir, table in (("linux-64", gen.linux), ("noarch", gen.noarch)):
        packages = {fn: rec for fn, rec in table.items() if fn.endswith(".tar.bz2")}
        conda = {fn: rec for fn, rec in table.items() if fn.endswith(".conda")}
        doc = {
            "info": {"subdir": subdir},
            "packages": packages,
            "packages.conda": conda,
            "removed": [],
            "repodata_version": 1,
        }
        data = encoder.encode(doc)
        folder = root / subdir
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "repodata.json").write_bytes(data)
        zst = zstandard.ZstdCompressor(level=3, threads=-1).compress(data)
        (folder / "repodata.json.zst").write_bytes(zst)
        sizes[subdir] = len(data)
    (root / "blacklist.txt").write_text("\n".join(gen.blacklist()) + "\n")
    (root / "whitelist.txt").write_text("\n".join(gen.whitelist()) + "\n")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    gen = Generator(args.records, args.seed)
    gen.generate()
    sizes = write(args.dir, gen)
    total = len(gen.linux) + len(gen.noarch)
    print(
        f"{total:,} records (linux-64 {len(gen.linux):,}, noarch {len(gen.noarch):,}), "
        f"{sum(sizes.values()) / 1e6:.0f} MB of JSON in {time.perf_counter() - start:.1f} s -> {args.dir}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
