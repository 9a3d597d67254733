"""The publish path below gRPC: archives, content addresses, and the SQLite store."""
import asyncio
import io
import tarfile
import threading

import pytest

import algomesh
from algomesh._archive import pack
from algomesh.registry.artifacts import ArtifactStore, tree_digest
from algomesh.registry.service import Registry
from algomesh.registry.store import open_store
from tests.conftest import write_algorithm


@pytest.fixture
def registry(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'reg.db'}")
    yield Registry(store, ArtifactStore(tmp_path / "artifacts"))
    store.close()


def test_pack_is_deterministic_and_skips_caches(tmp_path):
    a = write_algorithm(tmp_path / "a", "t/a", "1.0.0", "def apply(x):\n    return x\n")
    (a / "__pycache__").mkdir()
    (a / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"junk")
    first = pack(a)
    assert pack(a) == first
    names = tarfile.open(fileobj=io.BytesIO(first), mode="r:gz").getnames()
    assert sorted(names) == ["algomesh.toml", "main.py"]


def test_publish_stores_a_content_addressed_copy(registry, tmp_path):
    a = write_algorithm(tmp_path / "a", "t/a", "1.0.0", "def apply(x):\n    return x\n")
    info, created = asyncio.run(registry.publish(pack(a)))
    assert created and info.digest == tree_digest(a)
    copy = registry.artifacts.path(info.digest)
    assert (copy / "main.py").read_text() == (a / "main.py").read_text()


def test_versions_are_immutable(registry, tmp_path):
    a = write_algorithm(tmp_path / "a", "t/a", "1.0.0", "def apply(x):\n    return x\n")
    asyncio.run(registry.publish(pack(a)))
    _, created = asyncio.run(registry.publish(pack(a)))
    assert created is False  # same content again: a no-op
    (a / "main.py").write_text("def apply(x):\n    return 2 * x\n")
    with pytest.raises(algomesh.VersionExistsError) as e:
        asyncio.run(registry.publish(pack(a)))
    assert "immutable" in e.value.message and e.value.reason == "VERSION_EXISTS"


def test_racing_publishes_of_one_version_have_one_winner(registry, tmp_path):
    archives = []
    for i in range(8):
        folder = write_algorithm(tmp_path / f"v{i}", "t/race", "1.0.0", f"def apply(x):\n    return {i}\n")
        archives.append(pack(folder))
    results: list = [None] * len(archives)
    barrier = threading.Barrier(len(archives))

    def publish(i: int) -> None:
        barrier.wait()
        try:
            results[i] = asyncio.run(registry.publish(archives[i]))[1]
        except algomesh.VersionExistsError as exc:
            results[i] = exc

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(len(archives))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r is True]
    losers = [r for r in results if isinstance(r, algomesh.VersionExistsError)]
    assert len(winners) == 1 and len(losers) == len(archives) - 1
    assert len(registry.store.versions("t/race")) == 1


@pytest.mark.parametrize("make, fragment", [
    (lambda: b"not a tarball", "not a gzip'd tar"),
    (lambda: _tar({"../evil.py": b"x"}), "outside the folder"),
    (lambda: _tar({"main.py": b"def apply(x): return x"}), "no algomesh.toml"),
    (lambda: _tar({"algomesh.toml": b'name="a/b"\nversion="1.0.0"\nentrypoint="gone.py"\n'}), "not in the folder"),
])
def test_bad_archives_are_refused(registry, make, fragment):
    with pytest.raises(algomesh.InvalidError) as e:
        asyncio.run(registry.publish(make()))
    assert fragment in e.value.message
    assert not [p for p in registry.artifacts.root.iterdir()], "a refused publish left files behind"


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
