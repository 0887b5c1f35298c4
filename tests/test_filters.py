"""The five-step selection: license families, entries as names, globs and match specs, reasons."""

from __future__ import annotations

import pytest

from casconsole.conda.repodata import Record
from casconsole.conda.specs import Entry, EntryError
from casconsole.selection.filters import KEPT, Selector, family_from_license, license_family


def rec(name="pkg", version="1.0", build="0", license=None, family=None, build_number=0) -> Record:
    return Record(name=name, version=version, build=build, build_number=build_number, license=license,
                  license_family=family, subdir="linux-64", fn=f"{name}-{version}-{build}.conda")  # fmt: skip


@pytest.mark.parametrize(
    ("license", "family"),
    [
        ("GPL-3.0-only", "GPL3"),
        ("GPL (>= 2)", "GPL2"),
        ("GPL-2 | GPL-3", "GPL2"),
        ("LGPL-2.1", "LGPL"),
        ("AGPL-3.0", "AGPL"),
        ("GPL", "GPL"),
        ("GPLv3", "GPL3"),
        ("GPL-2.0-or-later", "GPL2"),
        ("GNU General Public License v3 (GPLv3)", "GPL3"),
        ("GNU Lesser General Public License v2.1", "LGPL"),
        ("MIT", "MIT"),
        ("MIT + file LICENSE", "MIT"),
        ("BSD-3-Clause", "BSD"),
        ("BSD_3_clause + file LICENSE", "BSD"),
        ("Apache-2.0", "APACHE"),
        ("PSF-2.0", "PSF"),
        ("", "NONE"),
        (None, "NONE"),
        ("   ", "NONE"),
    ],
)
def test_family_from_license(license, family):
    assert family_from_license(license) == family


def test_license_family_prefers_the_record_field_upper_cased():
    assert license_family(rec(license="MIT", family="bsd")) == ("BSD", "license_family BSD")
    assert license_family(rec(license="GPL (>= 2)", family="")) == ("GPL2", "license 'GPL (>= 2)' -> GPL2")
    assert license_family(rec()) == ("NONE", "no license")


def test_gpl_covers_gpl_gpl2_gpl3_but_not_lgpl_or_agpl():
    s = Selector(license_blacklist=["GPL"])
    for family in ("GPL", "GPL2", "GPL3", "gpl3"):
        d = s.decide(rec(family=family))
        assert not d.included and d.step == "license_blacklist" and d.entry == "GPL"
    for family in ("LGPL", "AGPL", "MIT"):
        assert s.decide(rec(family=family)) is KEPT
    d = s.decide(rec(license="GPL-3.0-only"))
    assert d.reason == "license_blacklist: GPL (license 'GPL-3.0-only' -> GPL3)"
    assert s.decide(rec(family="GPL3")).reason == "license_blacklist: GPL (license_family GPL3)"


def test_lgpl_agpl_and_any_family_drop_only_when_listed():
    s = Selector(license_blacklist=["LGPL", "agpl", "NONE", "PROPRIETARY"])
    assert not s.decide(rec(family="LGPL")).included
    assert not s.decide(rec(license="AGPL-3.0-only")).included
    assert not s.decide(rec()).included  # no license at all is the family NONE
    assert not s.decide(rec(family="Proprietary")).included
    assert s.decide(rec(family="GPL3")).included


def test_blacklist_names_globs_and_specs():
    s = Selector(blacklist=["flask", "r-*", "numpy <1.20", "python 3.9.*", "openssl >=3,<4", "foo * *_1"])
    assert s.decide(rec("flask", "0.1")).reason == "blacklist: flask"
    assert s.decide(rec("flask", "3.0")).reason == "blacklist: flask"  # a plain name covers all versions
    assert s.decide(rec("r-base", "4.3")).reason == "blacklist: r-*"
    assert s.decide(rec("rpy2")) is KEPT
    assert not s.decide(rec("numpy", "1.19.5")).included
    assert s.decide(rec("numpy", "1.20.0")).included
    assert s.decide(rec("numpy", "1.20.0rc1")) is not KEPT  # conda orders rc before the release
    assert not s.decide(rec("python", "3.9.18")).included
    assert s.decide(rec("python", "3.10.1")).included
    assert not s.decide(rec("openssl", "3.0.13")).included
    assert s.decide(rec("openssl", "1.1.1w")).included  # conda ordering: letters after numbers
    assert not s.decide(rec("foo", "1", build="py39_1")).included
    assert s.decide(rec("foo", "1", build="py39_0")).included


def test_whitelist_adds_back_whatever_steps_3_and_4_said():
    s = Selector(license_blacklist=["GPL"], blacklist=["read*"], whitelist=["readline 8.*", "bash"])
    d = s.decide(rec("readline", "8.2", family="GPL3"))
    assert d.included and d.step == "whitelist" and d.entry == "readline 8.*"
    assert d.overrides.step == "license_blacklist"
    assert d.reason == "whitelist: readline 8.*, over license_blacklist: GPL (license_family GPL3)"
    assert not s.decide(rec("readline", "7.0", family="GPL3")).included
    assert s.decide(rec("readme", "1")).reason == "blacklist: read*"
    assert s.decide(rec("bash", "5", family="GPL3")).included
    plain = s.decide(rec("bash", "5", family="MIT"))
    assert plain.included and plain.overrides is None


def test_decisions_are_shared_objects():
    s = Selector(blacklist=["flask"])
    assert s.decide(rec("flask", "1")) is s.decide(rec("flask", "2"))


def test_unparsable_record_versions_never_match_a_spec():
    s = Selector(blacklist=["weird >=1"])
    assert s.decide(rec("weird", "not a version!!")) is KEPT


@pytest.mark.parametrize("text", ["numpy >>1", "numpy ==="])
def test_bad_entries_are_reported(text):
    with pytest.raises(EntryError, match="not a valid match spec"):
        Entry.parse(text)
