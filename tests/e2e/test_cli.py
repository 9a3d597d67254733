"""The `algomesh` command as a user types it."""
import json

import pytest

from tests.conftest import ALGORITHMS, EXAMPLES, write_algorithm


@pytest.fixture(scope="module", autouse=True)
def published(mesh):
    for folder in ("cleaning", "bad"):
        out = mesh.cli("publish", str(ALGORITHMS / folder))
        assert out.returncode == 0, out.stderr
    for folder in ("tokenize", "clean", "sentiment"):
        assert mesh.cli("publish", str(EXAMPLES / "quickstart" / folder)).returncode == 0


def ok(out) -> str:
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode()


def one_line_error(out, reason: str) -> str:
    assert out.returncode == 1
    err = out.stderr.decode().strip()
    assert err.startswith(f"error: {reason}: "), err
    assert "\n" not in err and "Traceback" not in err
    return err


def test_publish_is_idempotent_and_versions_are_immutable(mesh, tmp_path):
    folder = write_algorithm(tmp_path / "v", "cli/imm", "1.0.0", "def apply(x):\n    return 1\n")
    assert "cli/imm 1.0.0 published" in ok(mesh.cli("publish", str(folder)))
    assert "already published (same content)" in ok(mesh.cli("publish", str(folder)))
    (folder / "main.py").write_text("def apply(x):\n    return 2\n")
    err = one_line_error(mesh.cli("publish", str(folder)), "VERSION_EXISTS")
    assert "immutable" in err


def test_publish_bad_folders(mesh, tmp_path):
    one_line_error(mesh.cli("publish", str(tmp_path / "missing")), "INVALID_ARCHIVE")
    (tmp_path / "empty").mkdir()
    one_line_error(mesh.cli("publish", str(tmp_path / "empty")), "INVALID_ARCHIVE")
    bad = write_algorithm(tmp_path / "bad", "cli/bad", "1.0", "def apply(x):\n    return 1\n")
    one_line_error(mesh.cli("publish", str(bad)), "INVALID_VERSION")


def test_call_with_json_text_file_and_stdin(mesh, tmp_path):
    assert json.loads(ok(mesh.cli("call", "test/bad", "-d", '{"a": [1, 2]}'))) == {"echo": {"a": [1, 2]}}
    assert ok(mesh.cli("call", "username/cleaning", "--text", "Hello,  World!")) == "hello world\n"
    assert ok(mesh.cli("call", "username/cleaning", "--text", "-", input=b"From  STDIN.")) == "from stdin\n"
    assert json.loads(ok(mesh.cli("call", "test/bad", input=b'{"piped": true}'))) == {"echo": {"piped": True}}
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"\x00\x01binary")
    # bytes reach the algorithm as bytes; test/bad echoes it as JSON it cannot encode -> an algorithm error
    one_line_error(mesh.cli("call", "test/bad", "--file", str(blob)), "ALGORITHM_ERROR")


def test_call_pipeline_stage_and_metadata(mesh):
    out = mesh.cli("call", "demo/clean/1.*", "--text", "I love it!", "--meta")
    assert json.loads(ok(out)) == ["i", "love", "it", "!"]
    assert "demo/clean 1.0.0  json" in out.stderr.decode()


def test_call_output_file_and_stdout(mesh, tmp_path):
    target = tmp_path / "out.json"
    out = mesh.cli("call", "test/bad", "-d", '"print"', "--stdout", "-o", str(target))
    ok(out)
    assert target.read_text() == "printed"  # a str result is TEXT, written as is
    assert out.stderr.decode() == "line one\nline two\n"


@pytest.mark.parametrize("args, reason", [
    (("call", "nobody/nothing", "-d", "1"), "ALGORITHM_NOT_FOUND"),
    (("call", "test/bad/9.*", "-d", "1"), "VERSION_NOT_FOUND"),
    (("call", "test/bad/x", "-d", "1"), "INVALID_VERSION"),
    (("call", "nonsense", "-d", "1"), "INVALID_TARGET"),
    (("call", "test/bad", "-d", "{oops"), "INVALID_INPUT"),
    (("call", "test/bad", "-d", '{"do": "raise", "value": 7}'), "ALGORITHM_ERROR"),
    (("call", "test/bad", "--timeout", "1", "-d", '{"do": "sleep", "seconds": 20}'), "DEADLINE_EXCEEDED"),
    (("versions", "nobody/nothing"), "ALGORITHM_NOT_FOUND"),
])
def test_errors_print_one_line_and_exit_1(mesh, args, reason):
    one_line_error(mesh.cli(*args), reason)


def test_verbose_shows_the_algorithms_stack_trace(mesh):
    out = mesh.cli("-v", "call", "test/bad", "-d", '{"do": "raise", "value": 7}')
    assert out.returncode == 1
    err = out.stderr.decode()
    assert err.startswith("error: ALGORITHM_ERROR: cannot handle 7") and "helper_that_fails" in err


def test_ls_and_versions(mesh, tmp_path):
    for v in ("0.1.0", "0.2.0"):
        ok(mesh.cli("publish", str(write_algorithm(tmp_path / v, "cli/many", v, "def apply(x):\n    return x\n"))))
    listing = ok(mesh.cli("ls"))
    assert "cli/many" in listing and "username/cleaning" in listing
    row = next(line for line in listing.splitlines() if line.startswith("cli/many"))
    assert row.split()[1:3] == ["0.2.0", "2"]
    versions = ok(mesh.cli("versions", "cli/many")).splitlines()
    assert [v.split()[0] for v in versions] == ["0.2.0", "0.1.0"]


def test_mesh_not_running():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "algomesh.cli", "--address", "127.0.0.1:9", "ls"],
                         capture_output=True, timeout=30)
    err = one_line_error(out, "MESH_UNAVAILABLE")
    assert "algomesh up" in err  # the hint says what to do


def test_keys_create_list_use_and_revoke(mesh):
    out = mesh.cli("keys", "create", "--owner", "demo", "--algorithms", "demo/*", "--no-pipelines")
    key = ok(out).strip()
    assert key.startswith("amk_") and "\n" not in key            # the key alone on stdout, for scripts
    note = out.stderr.decode()
    assert "shown only this once" in note and key not in note
    key_id = key.split("_")[1]
    listed = ok(mesh.cli("keys", "list"))
    [line] = [x for x in listed.splitlines() if x.startswith(key_id)]
    assert "demo" in line and "algorithms demo/*" in line and "no pipelines" in line and "data read" in line
    assert key.split("_", 2)[2] not in listed                  # never the secret
    # the new key: in scope, out of scope, and no pipelines for demo/clean (which pipes)
    assert ok(mesh.cli("call", "demo/tokenize", "--text", "a b", api_key=key))
    err = one_line_error(mesh.cli("call", "username/cleaning", "--text", "x", api_key=key), "PERMISSION_DENIED")
    assert "may call only demo/*" in err
    one_line_error(mesh.cli("call", "demo/clean", "--text", "x", api_key=key), "PERMISSION_DENIED")
    # a non-admin key cannot make keys; it lists only its owner's
    one_line_error(mesh.cli("keys", "create", "--owner", "demo", api_key=key), "PERMISSION_DENIED")
    assert {line.split()[1] for line in ok(mesh.cli("keys", "list", api_key=key)).splitlines()} == {"demo"}
    assert f"revoked {key_id}" in ok(mesh.cli("keys", "revoke", key_id))
    err = one_line_error(mesh.cli("call", "demo/tokenize", "--text", "a b", api_key=key), "UNAUTHENTICATED")
    assert key not in err
    one_line_error(mesh.cli("keys", "revoke", key_id), "KEY_NOT_FOUND")


def test_no_key_or_a_bad_key_is_unauthenticated(mesh):
    one_line_error(_without_key(mesh, "ls"), "UNAUTHENTICATED")
    for key in ("amk_0123456789abcdef_" + "x" * 43, "not-a-key"):
        err = one_line_error(mesh.cli("ls", api_key=key), "UNAUTHENTICATED")
        assert key not in err


def _without_key(mesh, *args):
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "ALGOMESH_API_KEY"}
    return subprocess.run([sys.executable, "-m", "algomesh.cli", "--address", mesh.address, *args],
                          capture_output=True, timeout=60, env=env)


def test_cert_writes_a_usable_mesh_certificate(mesh, tmp_path):
    out = ok(mesh.cli("cert", "ops/me@0", "--out", str(tmp_path / "c")))
    assert "grpcurl -cacert" in out
    for name in ("ca.pem", "cert.pem", "key.pem"):
        path = tmp_path / "c" / name
        assert path.stat().st_mode & 0o777 == 0o600
    assert b"BEGIN PRIVATE KEY" in (tmp_path / "c" / "key.pem").read_bytes()
    one_line_error(mesh.cli("cert", "algomesh:control-plane", "--out", str(tmp_path / "d")), "INVALID_INPUT")
