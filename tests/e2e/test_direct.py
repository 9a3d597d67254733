"""Direct routing: algomesh.client(key, direct=True) calls instances straight (sdk/_direct.py).

The first call goes through the ingress while the client looks the target up; then calls
go to the instances' client ports over TLS checked against the mesh CA, each sidecar
verifying the API key from its registry view. Checked from what the ingress counts (it
sees none of them) and from the traces (the call's root span is the sidecar's)."""
import os
import re
import signal
import time
import urllib.request

import pytest

import algomesh
from tests.conftest import descendants, stored_trace, write_algorithm

ECHO = "import os\ndef apply(x):\n    return {'x': x, 'pid': os.getpid()}\n"
ROT = "TABLE = bytes((i + 1) % 256 for i in range(256))\ndef apply(stream):\n    for chunk in stream:\n        yield chunk.translate(TABLE)\n"
TABLE = bytes((i + 1) % 256 for i in range(256))
PIPE = "import algomesh\ndef apply(x):\n    return algomesh.client().algo('dir/echo').pipe(x).result\n"


@pytest.fixture(scope="module", autouse=True)
def published(mesh, tmp_path_factory):
    d = tmp_path_factory.mktemp("direct")
    mesh.publish(write_algorithm(d / "echo", "dir/echo", "1.0.0", ECHO))
    mesh.publish(write_algorithm(d / "pipe", "dir/pipe", "1.0.0", PIPE,
                                 extra_toml='[permissions]\ncan_call = ["dir/echo"]\n'))
    mesh.publish(write_algorithm(d / "rot", "dir/rot", "1.0.0", ROT))
    mesh.publish(write_algorithm(d / "secret", "dir/secret", "1.0.0", ECHO,
                                 extra_toml='[permissions]\ncallability = "private"\n'))


def ingress_calls(mesh, name: str) -> float:
    port = re.search(r"metrics   http://[^:]+:(\d+)/metrics", mesh.output).group(1)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("algomesh_calls_total{") and 'surface="ingress"' in line
               and f'algorithm="{name}"' in line)


def routed(client, ref: str, timeout: float = 15.0) -> None:
    """Call until the client has a route (its lookup runs in the background)."""
    deadline = time.monotonic() + timeout
    while client._routes.lookup(algomesh._refs.parse_target(ref)) is None:
        client.algo(ref).pipe("warm").result
        assert time.monotonic() < deadline, f"no route to {ref}"
        time.sleep(0.05)


def stream_routed(client, ref: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while client._routes.lookup(algomesh._refs.parse_target(ref), stream=True) is None:
        client.algo(ref).stream(b"warm").read()
        assert time.monotonic() < deadline, f"no route to {ref}"
        time.sleep(0.05)


async def astream_routed(client, ref: str, timeout: float = 15.0) -> None:
    import asyncio

    deadline = time.monotonic() + timeout
    while client._routes.lookup(algomesh._refs.parse_target(ref), stream=True) is None:
        await client.algo(ref).stream(b"warm").read()
        assert time.monotonic() < deadline, f"no route to {ref}"
        await asyncio.sleep(0.05)


def sidecars_of(mesh, name: str) -> list[int]:
    return [p for p in descendants(mesh.process.pid)
            if name in open(f"/proc/{p}/cmdline").read() and "algomesh.sidecar" in open(f"/proc/{p}/cmdline").read()]


@pytest.fixture(scope="module")
def direct(mesh):
    with algomesh.client(mesh.api_key, mesh.address, direct=True) as c:
        yield c


def test_calls_skip_the_ingress_once_routed(mesh, direct):
    routed(direct, "dir/echo")
    before = ingress_calls(mesh, "dir/echo")
    algo = direct.algo("dir/echo")
    results = [algo.pipe(i) for i in range(50)]
    assert [r.result["x"] for r in results] == list(range(50))
    assert ingress_calls(mesh, "dir/echo") == before, "the direct calls went through the ingress"
    md = results[0].metadata
    assert (md.algorithm, md.version) == ("dir/echo", "1.0.0") and re.fullmatch(r"[0-9a-f]{32}", md.trace_id)
    # the call's trace starts at the instance's sidecar, and goes on as usual
    trace = stored_trace(direct, md.trace_id, 3, names=["call dir/echo/1.0.0", "dir/echo@1.0.0", "apply dir/echo@1.0.0"])
    root = next(s for s in trace.spans if s.name == "call dir/echo/1.0.0")
    assert root.service == "dir/echo@1.0.0" and root.parent_span_id == ""


def test_pipelines_chain_and_pipe_as_usual(mesh, direct):
    routed(direct, "dir/pipe")
    assert direct.algo("dir/pipe").pipe("via").result["x"] == "via"
    chained = direct.algo("dir/echo").pipe(direct.algo("dir/pipe").pipe("both"))
    assert chained.result["x"] == {"x": "both", "pid": chained.result["x"]["pid"]}


def test_each_sidecar_checks_the_key(mesh, client, direct):
    routed(direct, "dir/echo")
    made = client.create_key("someone")
    other = algomesh.client(made.secret, mesh.address, direct=True)
    try:
        routed(other, "dir/echo")
        before = ingress_calls(mesh, "dir/echo")
        assert other.algo("dir/echo").pipe(1).result["x"] == 1
        assert ingress_calls(mesh, "dir/echo") == before
        client.revoke_key(made.key.id)  # the sidecars' views drop it: refused at once, straight
        deadline = time.monotonic() + 10
        while True:
            try:
                other.algo("dir/echo").pipe(2).result
            except algomesh.PermissionError_ as e:
                assert e.reason == "UNAUTHENTICATED"
                break
            assert time.monotonic() < deadline, "a revoked key was still taken"
            time.sleep(0.1)
    finally:
        other.close()
    # a private algorithm answers its owner's keys only, straight as through the ingress
    stranger = algomesh.client(client.create_key("else").secret, mesh.address, direct=True)
    try:
        with pytest.raises(algomesh.PermissionError_):  # through the ingress, while it looks the route up
            stranger.algo("dir/secret").pipe(1).result
        deadline = time.monotonic() + 10
        while stranger._routes.lookup(algomesh._refs.parse_target("dir/secret")) is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(algomesh.PermissionError_) as e:  # and straight
            stranger.algo("dir/secret").pipe(1).result
        assert "private to dir" in e.value.message
    finally:
        stranger.close()
    owner = algomesh.client(client.create_key("dir").secret, mesh.address, direct=True)
    try:
        routed(owner, "dir/secret")
        before = ingress_calls(mesh, "dir/secret")
        assert owner.algo("dir/secret").pipe(3).result["x"] == 3
        assert ingress_calls(mesh, "dir/secret") == before
    finally:
        owner.close()


def test_a_killed_instance_costs_no_call(mesh, client, direct):
    assert len(client.scale("dir/echo", 2).instances) == 2
    time.sleep(TTL_WAIT)  # the route sees both
    algo = direct.algo("dir/echo")
    pids = {algo.pipe(i).result["pid"] for i in range(40)}
    assert len(pids) == 2, "direct calls did not spread over the two instances"
    os.killpg(sidecars_of(mesh, "dir/echo")[0], signal.SIGKILL)
    results = [algo.pipe(i) for i in range(40)]
    assert [r.result["x"] for r in results] == list(range(40))  # none lost: resent through the ingress


TTL_WAIT = 6.0


def test_the_async_client_routes_straight_too(mesh):
    import asyncio

    async def main():
        async with algomesh.async_client(mesh.api_key, mesh.address, direct=True) as c:
            algo = c.algo("dir/echo")
            deadline = time.monotonic() + 15
            while c._routes.lookup(algomesh._refs.parse_target("dir/echo")) is None:
                await algo.pipe("warm")
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            before = ingress_calls(mesh, "dir/echo")
            out = await asyncio.gather(*(algo.pipe(i) for i in range(30)))
            assert [r.result["x"] for r in out] == list(range(30))
            assert ingress_calls(mesh, "dir/echo") == before

    asyncio.run(main())


def test_answers_carry_their_own_trailers_only(direct):
    # found by a benchmark: each direct answer's trace id was appended to a list the
    # runner supervisor shared between calls, until the trailers passed gRPC's 8 KiB
    routed(direct, "dir/pipe")
    algo = direct.algo("dir/pipe")
    ids = [algo.pipe(i).metadata.trace_id for i in range(150)]
    assert len(set(ids)) == 150


def test_streams_skip_the_ingress_once_routed(mesh, direct):
    stream_routed(direct, "dir/rot")
    before = ingress_calls(mesh, "dir/rot")
    data = os.urandom(3 << 20)
    answer = direct.algo("dir/rot").stream(data)
    assert answer.read() == data.translate(TABLE)
    assert (answer.metadata.algorithm, answer.metadata.version) == ("dir/rot", "1.0.0")
    assert ingress_calls(mesh, "dir/rot") == before, "the direct stream went through the ingress"


def test_the_async_client_streams_straight_too(mesh):
    import asyncio

    async def main():
        async with algomesh.async_client(mesh.api_key, mesh.address, direct=True) as c:
            await astream_routed(c, "dir/rot")
            before = ingress_calls(mesh, "dir/rot")
            data = os.urandom(3 << 20)
            # read together: an answer not read holds its instance (a stream's backpressure)
            answers = await asyncio.gather(*(c.algo("dir/rot").stream(data).read() for _ in range(3)))
            assert answers == [data.translate(TABLE)] * 3
            assert ingress_calls(mesh, "dir/rot") == before

    asyncio.run(main())


def test_a_stream_whose_instance_is_gone_is_sent_again_through_the_ingress(mesh, direct):
    # Every instance the route names is killed: the direct attempt fails before its
    # instance saw the call, and the stream goes again through the ingress (which starts a
    # new one) from its first chunk. The source is a generator (it cannot be read twice) of
    # far more than a direct stream holds: only its first chunks had been read by then.
    stream_routed(direct, "dir/rot")
    for pid in sidecars_of(mesh, "dir/rot"):
        os.killpg(pid, signal.SIGKILL)
    before = ingress_calls(mesh, "dir/rot")
    data = os.urandom(8 << 20)
    pieces = (data[i:i + (64 << 10)] for i in range(0, len(data), 64 << 10))
    assert direct.algo("dir/rot").stream(pieces).read() == data.translate(TABLE)
    assert ingress_calls(mesh, "dir/rot") == before + 1, "it was not sent again through the ingress"


def test_the_async_client_sends_a_stream_again_through_the_ingress_too(mesh):
    import asyncio

    async def main():
        async with algomesh.async_client(mesh.api_key, mesh.address, direct=True) as c:
            await astream_routed(c, "dir/rot")
            for pid in sidecars_of(mesh, "dir/rot"):
                os.killpg(pid, signal.SIGKILL)
            before = ingress_calls(mesh, "dir/rot")
            data = os.urandom(8 << 20)

            async def pieces():
                for i in range(0, len(data), 64 << 10):
                    yield data[i:i + (64 << 10)]

            assert await asyncio.wait_for(c.algo("dir/rot").stream(pieces()).read(), 60) == data.translate(TABLE)
            assert ingress_calls(mesh, "dir/rot") == before + 1, "it was not sent again through the ingress"

    asyncio.run(main())
