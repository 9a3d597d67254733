"""data:// references end to end: the blob store in `algomesh up`, the SDK's DataFile,
owner-scoped keys, and algorithms that receive and return references through their sidecars."""
import hashlib
import os
import threading
import time

import pytest

import algomesh
from tests.conftest import descendants, write_algorithm

# Reads the referenced object in chunks, writes its upper-cased copy into the caller's
# data (.my) and returns a reference to it.
UPPER = """\
import hashlib
import algomesh

def apply(ref):
    if not isinstance(ref, algomesh.DataFile):
        raise TypeError(f"wanted a data:// reference, got {type(ref).__name__}")
    digest, size = hashlib.sha256(), 0
    def upper():
        nonlocal size
        for chunk in ref.chunks():
            digest.update(chunk)
            size += len(chunk)
            yield chunk.upper()
    out = algomesh.client().data("data://.my/out/" + ref.uri.rsplit("/", 1)[1])
    out.put(upper())
    print(f"read {size} bytes sha256 {digest.hexdigest()}")
    return out
"""

# Hands the reference on to data/count (one more hop), and returns what that says.
RELAY = """\
import algomesh

def apply(ref):
    return algomesh.client().algo("dtool/count").pipe(ref).result
"""

COUNT = """\
import algomesh

def apply(ref):
    return {"uri": ref.uri, "bytes": sum(len(c) for c in ref.chunks())}
"""

# Writes to its own owner's collection (dtool), whoever calls it.
OWN = """\
import algomesh

def apply(text):
    f = algomesh.client().data("data://dtool/scratch/note.txt")
    f.put(text)
    return f.get_text()
"""


@pytest.fixture(scope="module", autouse=True)
def published(mesh, tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    mesh.publish(write_algorithm(d / "upper", "dtool/upper", "1.0.0", UPPER))
    mesh.publish(write_algorithm(d / "relay", "dtool/relay", "1.0.0", RELAY,
                                 extra_toml='[permissions]\ncan_call = ["dtool/count"]\n'))
    mesh.publish(write_algorithm(d / "count", "dtool/count", "1.0.0", COUNT))
    mesh.publish(write_algorithm(d / "own", "dtool/own", "1.0.0", OWN))


@pytest.fixture(scope="module")
def keys(mesh, client):
    made = {}
    for name, owner, data in (("alice_rw", "alice", "write"), ("alice_ro", "alice", "read"),
                              ("alice_none", "alice", "none"), ("bob_rw", "bob", "write")):
        made[name] = algomesh.client(client.create_key(owner, data=data).secret, address=mesh.address)
    yield made
    for c in made.values():
        c.close()


def _reason(fn) -> str:
    with pytest.raises(algomesh.AlgomeshError) as e:
        fn()
    return e.value.reason


def test_put_get_stat_list_delete(client):
    f = client.data("data://alice/docs/hello.txt")
    info = f.put("hello, data")
    assert info.uri == "data://alice/docs/hello.txt" and info.size == 11
    assert info.sha256 == hashlib.sha256(b"hello, data").hexdigest()
    assert f.get() == b"hello, data" and f.get_text() == "hello, data"
    assert f.stat().sha256 == info.sha256 and f.exists()
    client.data("data://alice/docs/sub/a.bin").put(b"\x00\x01")
    assert [x.uri for x in client.data("data://alice/docs").list()] == [
        "data://alice/docs/hello.txt", "data://alice/docs/sub/a.bin"]
    assert [x.uri for x in client.data("data://alice/docs/sub/").list()] == ["data://alice/docs/sub/a.bin"]
    assert "data://alice/docs" in [c.uri for c in client.data("data://alice").collections()]
    f.put(b"replaced")  # a Put replaces the object whole
    assert f.get() == b"replaced"
    assert b"".join(f.chunks(offset=2, length=3)) == b"pla"
    assert f.delete() == 1 and not f.exists()
    assert client.data("data://alice/docs").delete(recursive=True) == 1
    assert client.data("data://alice/docs").list() == []


def test_bad_uris_and_missing_objects_are_typed(client):
    for uri in ("http://x/y", "data://alice/../etc/passwd", "data://al ice/c/x", "data://alice//x", "data:/alice/c/x"):
        assert _reason(lambda: client.data(uri)) == "INVALID_DATA_URI", uri
    assert _reason(lambda: client.data("data://alice/c").get()) == "INVALID_DATA_URI"   # a collection, not an object
    assert _reason(lambda: client.data("data://alice/none/x.bin").get()) == "DATA_NOT_FOUND"
    assert _reason(lambda: client.data("data://alice/none/x.bin").delete()) == "DATA_NOT_FOUND"
    client.data("data://alice/c/file").put(b"x")
    assert _reason(lambda: client.data("data://alice/c/file/below").put(b"y")) == "INVALID_DATA_URI"
    assert _reason(lambda: client.data("data://alice/c").delete()) == "INVALID_DATA_URI"  # needs recursive
    assert _reason(lambda: client.data("data://alice/c/f").put(object())) == "INVALID_INPUT"


def test_an_interrupted_put_leaves_nothing_behind(client):
    f = client.data("data://alice/half/video.bin")
    f.put(b"old")

    def chunks():
        yield b"x" * (1 << 20)
        raise RuntimeError("the uploader died")

    with pytest.raises(Exception):
        f.put(chunks())
    assert f.get() == b"old"  # the previous object, whole


def test_keys_reach_their_owners_data_within_their_scope(mesh, client, keys):
    client.data("data://alice/shared/a.txt").put("alice's")
    client.data("data://bob/shared/b.txt").put("bob's")
    rw, ro, none, bob = keys["alice_rw"], keys["alice_ro"], keys["alice_none"], keys["bob_rw"]
    assert rw.data("data://alice/shared/a.txt").get() == b"alice's"
    assert rw.data("data://.my/shared/a.txt").get() == b"alice's"                      # .my is the key's owner
    assert rw.data("data://.my/shared/new.txt").put("x").uri == "data://alice/shared/new.txt"
    assert ro.data("data://alice/shared/a.txt").get() == b"alice's"
    assert _reason(lambda: ro.data("data://alice/shared/a.txt").put("no")) == "PERMISSION_DENIED"
    assert _reason(lambda: ro.data("data://alice/shared/a.txt").delete()) == "PERMISSION_DENIED"
    assert _reason(lambda: none.data("data://alice/shared/a.txt").get()) == "PERMISSION_DENIED"
    assert _reason(lambda: rw.data("data://bob/shared/b.txt").get()) == "PERMISSION_DENIED"
    assert _reason(lambda: bob.data("data://alice/shared").list()) == "PERMISSION_DENIED"
    wrong = algomesh.client("amk_nope_nope", address=mesh.address)
    assert _reason(lambda: wrong.data("data://alice/shared/a.txt").get()) == "UNAUTHENTICATED"
    wrong.close()


def test_an_algorithm_receives_and_returns_references(client, keys):
    alice = keys["alice_rw"]
    text = b"the quick brown fox\n" * 50_000  # ~1 MiB: several chunks each way
    src = alice.data("data://alice/in/fox.txt")
    src.put(text)
    resp = alice.algo("dtool/upper").set_options(stdout=True).pipe(src)
    out = resp.result
    assert isinstance(out, algomesh.DataFile) and out.uri == "data://alice/out/fox.txt"
    assert resp.metadata.content_type == "data"
    assert f"read {len(text)} bytes sha256 {hashlib.sha256(text).hexdigest()}" in resp.metadata.stdout
    assert out.get() == text.upper()  # read back through the client that made the call


def test_the_grant_follows_the_pipeline_and_its_scope(client, keys):
    keys["alice_rw"].data("data://alice/in/n.txt").put(b"12345")
    # two hops: the client's grant reaches dtool/count through dtool/relay's sidecar
    assert keys["alice_ro"].algo("dtool/relay").pipe(keys["alice_ro"].data("data://alice/in/n.txt")).result == \
        {"uri": "data://alice/in/n.txt", "bytes": 5}
    # a read-only key: the algorithm may read alice's data, not write it (its pipe-like data
    # call fails typed, and the algorithm, not catching it, fails with it)
    ro = keys["alice_ro"]
    e = pytest.raises(algomesh.PermissionError_,
                      lambda: ro.algo("dtool/upper").pipe(ro.data("data://alice/in/n.txt")).result).value
    assert "may not write alice's data" in e.message and e.metadata["permission"] == "data:write:alice", e
    # bob's key does not open alice's data to an algorithm bob calls
    bob = keys["bob_rw"]
    e = pytest.raises(algomesh.PermissionError_,
                      lambda: bob.algo("dtool/count").pipe(bob.data("data://alice/in/n.txt")).result).value
    assert "may not read alice's data" in e.message, e
    # an algorithm always reaches its own owner's data, whoever calls it
    assert keys["alice_none"].algo("dtool/own").pipe("scribble").result == "scribble"


def _hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_large_object_streams_through_with_bounded_memory(mesh, client, tmp_path):
    size = 256 << 20
    block = os.urandom(1 << 20)
    digest = hashlib.sha256()
    before = _hwm_kib(mesh.process.pid)

    def source():
        for i in range(size // len(block)):
            chunk = block[:-1] + bytes([i % 256])
            digest.update(chunk)
            yield chunk

    t0 = time.monotonic()
    info = client.data("data://alice/big/blob.bin").put(source())
    assert info.size == size and info.sha256 == digest.hexdigest()
    saved = client.data("data://alice/big/blob.bin").save(tmp_path / "blob.bin")
    elapsed = time.monotonic() - t0
    h = hashlib.sha256()
    with open(saved, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    assert h.hexdigest() == digest.hexdigest()
    grew = (_hwm_kib(mesh.process.pid) - before) / 1024
    assert grew < 64, f"the control plane's peak RSS grew by {grew:.0f} MiB moving a {size >> 20} MiB object"
    print(f"256 MiB up and down in {elapsed:.1f} s; control plane peak RSS +{grew:.0f} MiB")


def test_an_algorithm_streams_a_large_reference_through_its_sidecar(mesh, client, keys):
    size = 96 << 20
    alice = keys["alice_rw"]
    alice.data("data://alice/in/large.bin").put(b"a" * (1 << 20) for _ in range(size >> 20))
    sidecars = [p for p in descendants(mesh.process.pid) if "dtool/upper" in open(f"/proc/{p}/cmdline").read()]
    before = {p: _hwm_kib(p) for p in sidecars}
    out = alice.algo("dtool/upper").pipe(alice.data("data://alice/in/large.bin")).result
    assert out.stat().size == size
    assert out.stat().sha256 == hashlib.sha256(b"A" * size).hexdigest()
    for p, b in before.items():
        grew = (_hwm_kib(p) - b) / 1024
        assert grew < 64, f"process {p} on the way grew by {grew:.0f} MiB for a {size >> 20} MiB object"


def test_the_cli_moves_data_and_passes_references(mesh, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("cli data\n")
    out = mesh.cli("data", "put", str(src), "data://alice/cli/in.txt")
    assert "data://alice/cli/in.txt  9 bytes" in out.stdout.decode(), out.stderr
    assert mesh.cli("data", "ls", "data://alice/cli").stdout.decode().split()[-1] == "data://alice/cli/in.txt"
    assert "data://alice/cli" in mesh.cli("data", "ls", "data://alice").stdout.decode()
    assert mesh.cli("data", "get", "data://alice/cli/in.txt").stdout.decode() == "cli data\n"
    # an algorithm given a reference returns one: printed as its URI, saved whole with -o
    assert mesh.cli("call", "dtool/upper", "-r", "data://alice/cli/in.txt").stdout.decode().strip() == "data://admin/out/in.txt"
    mesh.cli("call", "dtool/upper", "-r", "data://alice/cli/in.txt", "-o", str(tmp_path / "up.txt"))
    assert (tmp_path / "up.txt").read_text() == "CLI DATA\n"
    assert "deleted 1 object(s)" in mesh.cli("data", "rm", "-r", "data://alice/cli").stdout.decode()
    bad = mesh.cli("data", "get", "data://alice/cli/in.txt")
    assert bad.returncode == 1 and "DATA_NOT_FOUND" in bad.stderr.decode()
