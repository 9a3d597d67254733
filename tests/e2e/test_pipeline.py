"""A user's view: publish algorithms, call them, chain them — real processes, real gRPC."""
import asyncio
import os
import subprocess
import sys
import textwrap

import pytest

import algomesh
from tests.conftest import ALGORITHMS, EXAMPLES, write_algorithm

QUICKSTART = EXAMPLES / "quickstart"


@pytest.fixture(scope="module", autouse=True)
def published(mesh):
    for folder in ("tokenize", "clean", "sentiment"):
        mesh.publish(QUICKSTART / folder)
    for folder in ("cleaning", "preprocessing", "slowload", "bad"):
        mesh.publish(ALGORITHMS / folder)


def test_whitepaper_snippet_runs_verbatim(mesh):
    # The seed's snippet, with `algomesh` for `Algorithmia`, run as a user's own script
    # (who puts their key where the snippet says YOUR_API_KEY).
    script = textwrap.dedent("""\
        import algomesh
        input = "Hello,   World! Pipelining is GREAT."

        #Initialize client and algorithms
        client = algomesh.client('YOUR_API_KEY')
        algo1 = client.algo('username/cleaning')
        algo2 = client.algo('username/preprocessing')

        #Pipe algorithm inputs and outputs
        print(algo2.pipe(algo1.pipe(input)).result)
        """).replace("YOUR_API_KEY", mesh.api_key)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "ALGOMESH_ADDRESS": mesh.address})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "{'words': ['hello', 'world', 'pipelining', 'is', 'great'], 'count': 5}"


@pytest.mark.parametrize("tweet, label", [
    ("I absolutely LOVE this new phone!!! best purchase ever @apple http://apple.co/x", "positive"),
    ("Worst flight ever. Delayed 3 hours and the staff were so rude #neveragain", "negative"),
    ("The train leaves at 9am from platform 4", "neutral"),
    ("This is not good at all", "negative"),
])
def test_tweet_pipeline_chained_by_the_client(client, tweet, label):
    clean = client.algo("demo/clean")
    sentiment = client.algo("demo/sentiment")
    resp = sentiment.pipe(clean.pipe(tweet))  # clean pipes to demo/tokenize from inside
    assert resp.result["label"] == label, resp.result
    md = resp.metadata
    assert (md.algorithm, md.version, md.content_type) == ("demo/sentiment", "1.0.0", "json")
    assert md.duration > 0


def test_clean_pipes_to_tokenize_from_inside_the_algorithm(client):
    tokens = client.algo("demo/clean").pipe("Hello @bob, visit https://x.y NOW!").result
    assert tokens == ["hello", "visit", "now", "!"]
    running = {i.algorithm for i in client.instances()}
    assert {"demo/clean", "demo/tokenize"} <= running


def test_composed_pipeline_reads_like_the_design(client):
    clean, score = client.algo("demo/clean"), client.algo("demo/sentiment/1.*")
    print_me = score.pipe(clean.pipe("what a lovely day")).result
    assert print_me["label"] == "positive"


def test_async_client_has_the_same_shape(mesh):
    async def main():
        async with algomesh.async_client(mesh.api_key, mesh.address) as c:
            first = c.algo("demo/clean").pipe("so happy today!")
            resp = await c.algo("demo/sentiment").pipe(first)  # a pending response chains
            return resp.result, resp.metadata.version, first.done()

    result, version, first_done = asyncio.run(main())
    assert result["label"] == "positive" and version == "1.0.0" and first_done


def test_sync_response_is_awaitable_and_refuses_to_block_a_loop(client):
    async def main():
        resp = client.algo("demo/tokenize").pipe("a b c")
        with pytest.raises(RuntimeError, match="would block the running event loop"):
            resp.result
        return (await resp).result

    assert asyncio.run(main()) == ["a", "b", "c"]


def test_content_types_round_trip_through_the_mesh(client):
    echo = client.algo("test/bad")  # echoes anything it does not recognise
    assert echo.pipe({"n": [1, 2.5, None], "s": "ünïcode ✓"}).result == {"echo": {"n": [1, 2.5, None], "s": "ünïcode ✓"}}
    r = echo.pipe("plain text")
    assert r.result == {"echo": "plain text"} and r.metadata.content_type == "json"
    binary = client.algo("username/cleaning")
    with pytest.raises(algomesh.AlgorithmError):  # bytes reach apply as bytes: re.sub on bytes with str pattern
        binary.pipe(b"\x00\x01").result


def test_load_runs_once_per_instance_and_its_result_reaches_apply(client):
    slow = client.algo("test/slowload")
    first = [slow.pipe(i).result for i in range(3)]
    assert [r["loads"] for r in first] == [1, 1, 1]
    assert first[0]["state"]["model"] == "loaded"
    assert len({r["state"]["pid"] for r in first}) == 1


def test_stdout_is_returned_only_when_asked(client):
    bad = client.algo("test/bad")
    assert bad.pipe({"do": "print"}).metadata.stdout is None
    md = bad.set_options(stdout=True).pipe({"do": "print"}).metadata
    assert md.stdout == "line one\nline two\n"


def test_first_call_is_a_cold_start_then_warm(mesh, client, tmp_path):
    write_algorithm(tmp_path / "cold", "test/cold", "1.0.0", "def apply(x):\n    return x\n")
    mesh.publish(tmp_path / "cold")
    cold = client.algo("test/cold")
    assert cold.pipe(1).metadata.cold_start is True
    assert cold.pipe(2).metadata.cold_start is False
    assert len(client.instances("test/cold")) == 1


def test_versions_resolve_through_the_mesh(mesh, client, tmp_path):
    for v in ("1.0.0", "1.2.0", "1.2.5", "1.3.0-rc.1", "2.0.0"):
        write_algorithm(tmp_path / v, "test/ver", v, f"def apply(x):\n    return '{v}'\n")
        mesh.publish(tmp_path / v)
    expect = {"test/ver": "2.0.0", "test/ver/latest": "2.0.0", "test/ver/1.*": "1.2.5", "test/ver/1.2.*": "1.2.5",
              "test/ver/1.0.0": "1.0.0", "test/ver/1.3.0-rc.1": "1.3.0-rc.1", "test/ver/1.3.*": None}
    for ref, version in expect.items():
        if version is None:
            with pytest.raises(algomesh.NotFoundError) as e:
                client.algo(ref).pipe("x").result
            assert e.value.reason == "VERSION_NOT_FOUND"
            continue
        resp = client.algo(ref).pipe("x")
        assert (resp.result, resp.metadata.version) == (version, version), ref
    listed = [v.manifest.version for v in client.versions("test/ver")]
    assert listed == ["2.0.0", "1.3.0-rc.1", "1.2.5", "1.2.0", "1.0.0"]
