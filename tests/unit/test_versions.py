import pytest

from algomesh import InvalidError
from algomesh.registry.versions import parse_spec, parse_version, pick

PUBLISHED = ["0.9.0", "1.0.0", "1.2.0", "1.2.3", "1.2.10", "1.3.0-rc.1", "1.10.0", "2.0.0-beta.2", "2.0.0-beta.10"]


@pytest.mark.parametrize("asked, expected", [
    ("", "1.10.0"),                # latest = newest release
    ("latest", "1.10.0"),
    ("1.2.3", "1.2.3"),            # exact
    ("1.2.*", "1.2.10"),           # numeric, not lexical, order
    ("1.*", "1.10.0"),
    ("0.*", "0.9.0"),
    ("1.3.*", None),               # only a pre-release there: ranges never match them
    ("2.*", None),
    ("1.3.0-rc.1", "1.3.0-rc.1"),  # a pre-release matches only when asked exactly
    ("2.0.0-beta.10", "2.0.0-beta.10"),
    ("3.0.0", None),
])
def test_resolution_rules(asked, expected):
    assert pick(parse_spec(asked), PUBLISHED) == expected


def test_semver_precedence():
    order = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
             "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.1.0", "2.0.0"]
    assert sorted(order, key=parse_version) == order  # the example from semver.org, §11


def test_latest_with_only_prereleases_finds_nothing():
    assert pick(parse_spec(""), ["1.0.0-rc.1"]) is None


@pytest.mark.parametrize("bad", ["x.y", "1", "1.2", "01.2.3", "1.2.3.4", "1.*.3", "*.1", "1.2.*.*", "v1.2.3", " "])
def test_bad_version_forms_are_typed_errors(bad):
    if bad.strip() == "":
        assert parse_spec(bad).text == "latest"
        return
    with pytest.raises(InvalidError) as e:
        parse_spec(bad)
    assert e.value.reason == "INVALID_VERSION"
