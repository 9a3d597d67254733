import pytest

from algomesh import InvalidError
from algomesh.registry.manifest import parse_manifest

GOOD = '''
name = "demo/clean"
version = "1.2.3"
runtime = "python"
entrypoint = "clean.py"
description = "cleans"
deterministic = true
[permissions]
can_call = ["demo/*"]
callability = "private"
[scaling]
min_instances = 1
max_instances = 3
idle_seconds = 60
concurrency = 4
'''


def test_full_manifest():
    m = parse_manifest(GOOD)
    assert (m.name, m.version, m.runtime, m.entrypoint) == ("demo/clean", "1.2.3", "python", "clean.py")
    assert m.deterministic and list(m.permissions.can_call) == ["demo/*"]
    assert m.permissions.callability == "private"
    assert (m.scaling.min_instances, m.scaling.max_instances, m.scaling.concurrency) == (1, 3, 4)


def test_defaults():
    m = parse_manifest('name = "a/b"\nversion = "0.1.0"\nentrypoint = "m.py"\n')
    assert m.runtime == "python" and m.permissions.callability == "public"
    assert list(m.permissions.can_call) == [] and m.scaling.max_instances == 0 and m.scaling.concurrency == 1


@pytest.mark.parametrize("text, fragment", [
    ("name = ", "not valid TOML"),
    ('version = "1.0.0"\nentrypoint = "m.py"', "name is required"),
    ('name = "nope"\nversion = "1.0.0"\nentrypoint = "m.py"', "owner/name"),
    ('name = "a/b"\nversion = "1.0"\nentrypoint = "m.py"', "semantic version"),
    ('name = "a/b"\nversion = "1.0.0"\nentrypoint = "../m.py"', "inside the algorithm"),
    ('name = "a/b"\nversion = "1.0.0"\nentrypoint = "m.py"\nruntime = "cobol"', "runtime must be"),
    ('name = "a/b"\nversion = "1.0.0"\nentrypoint = "m.py"\ncolour = "red"', "unknown keys"),
    ('name = "a/b"\nversion = "1.0.0"\nentrypoint = "m.py"\n[scaling]\nconcurrency = 0', "concurrency"),
    ('name = "a/b"\nversion = "1.0.0"\nentrypoint = "m.py"\n[permissions]\ncan_call = "x"', "can_call must be list"),
])
def test_bad_manifests_say_what_is_wrong(text, fragment):
    with pytest.raises(InvalidError) as e:
        parse_manifest(text)
    assert fragment in e.value.message
    assert e.value.reason in ("INVALID_MANIFEST", "INVALID_TARGET", "INVALID_VERSION")
