"""The dashboard's JSON API over real HTTP (urllib): what the page is drawn from.

The quickstart pipeline runs a few times (``sentiment.pipe(clean.pipe(tweet))``, with
demo/clean piping to demo/tokenize inside), plus one call that fails in demo/clean.
"""
import json
import re
import time
import urllib.error
import urllib.request

import pytest

import algomesh
from tests.conftest import EXAMPLES

QUICKSTART = EXAMPLES / "quickstart"
TWEETS = ["I LOVE this!! @bob http://x.co", "what a lovely day", "this is awful", "not bad at all"]


def dashboard_url(mesh) -> tuple[str, str]:
    """(base URL, token) from the banner's ``dashboard http://HOST:PORT/?token=...`` line."""
    m = re.search(r"^\s*dashboard\s+(http://[^/\s]+)/\?token=(\S+)$", mesh.banner, re.M)
    assert m, mesh.banner
    return m.group(1), m.group(2)


def get(url: str, token: str | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def api(base: str, token: str, path: str) -> dict:
    status, headers, body = get(base + path, token)
    assert status == 200, (path, status, body)
    assert headers["Content-Type"].startswith("application/json") and headers["Cache-Control"] == "no-store"
    return json.loads(body)


def until(check, timeout: float = 15.0):
    """``check()``'s first truthy answer, retried while spans arrive (batches every 0.5 s)."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.25)


@pytest.fixture(scope="module")
def traffic(mesh, client):
    for folder in ("tokenize", "clean", "sentiment"):
        mesh.publish(QUICKSTART / folder)
    clean, sentiment = client.algo("demo/clean"), client.algo("demo/sentiment")
    trace_ids = [sentiment.pipe(clean.pipe(t)).metadata.trace_id for t in TWEETS]
    with pytest.raises(algomesh.AlgorithmError) as failed:
        clean.pipe(42).result                     # demo/clean takes text: ALGORITHM_ERROR
    return {"pipelines": trace_ids, "failed": failed.value.metadata["trace_id"]}


def test_the_banner_prints_the_dashboard_url_with_a_fresh_token(mesh):
    base, token = dashboard_url(mesh)
    assert base.startswith("http://127.0.0.1:") and len(token) >= 32
    assert "/metrics" in mesh.banner                                  # still there


def test_without_the_token_the_api_answers_401_and_the_page_and_metrics_stay_open(mesh, traffic):
    base, token = dashboard_url(mesh)
    for path in ("/api/overview", "/api/algorithms", "/api/graph", "/api/calls", f"/api/trace?id={traffic['failed']}"):
        for bad in (None, "wrong", token[:-1], token + "x"):
            status, headers, body = get(base + path, bad)
            assert status == 401, (path, bad)
            assert headers["WWW-Authenticate"].startswith("Bearer") and b"demo/" not in body
        assert get(base + path + f"&token={token}" if "?" in path else base + path + f"?token={token}")[0] == 401
    status, headers, page = get(base + "/?token=" + token)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in headers["Content-Security-Policy"] and b'src="static/app.js"' in page
    assert token.encode() not in page                                 # the page holds no secret
    for asset in ("/static/app.js", "/static/app.css", "/static/favicon.svg"):
        assert get(base + asset)[0] == 200
    assert get(base + "/static/../dashboard.py")[0] == 404 and get(base + "/static/nope.js")[0] == 404
    assert get(base + "/metrics")[0] == 200
    # every asset is local: no URL in the page, script or style names another host
    for asset in ("/", "/static/app.js", "/static/app.css"):
        text = get(base + asset)[2].decode()
        assert not re.search(r"(?:https?:)?//(?!www\.w3\.org/2000/svg)[a-z0-9]", text.replace("http://…", "")), asset


def test_algorithms_list_versions_and_warm_instances(mesh, traffic):
    base, token = dashboard_url(mesh)
    algorithms = {a["name"]: a for a in api(base, token, "/api/algorithms")["algorithms"]}
    assert {"demo/clean", "demo/tokenize", "demo/sentiment"} <= set(algorithms)
    [v] = algorithms["demo/clean"]["versions"]
    assert (v["version"], v["latest"], v["state"]) == ("1.0.0", True, "warm")
    assert [i["state"] for i in v["instances"]] == ["warm"] and v["instances"][0]["health"] == "passing"
    overview = api(base, token, "/api/overview")
    assert overview["registry"]["ok"] and overview["algorithms"] >= 3 and overview["instances"]["warm"] >= 3
    assert overview["address"] == mesh.address and overview["spans"] > 0


def test_the_call_graph_has_the_pipeline_edges_with_counts_errors_and_percentiles(mesh, traffic):
    base, token = dashboard_url(mesh)

    def edges():
        got = {(e["caller"], e["callee"]): e for e in api(base, token, "/api/graph?window=600")["edges"]}
        want = [("client", "demo/clean@1.0.0"), ("demo/clean@1.0.0", "demo/tokenize@1.0.0"),
                ("client", "demo/sentiment@1.0.0")]
        if all(k in got for k in want) and got[want[0]]["calls"] == len(TWEETS) + 1 \
                and got[want[1]]["calls"] == len(TWEETS) and got[want[2]]["calls"] == len(TWEETS):
            return got
    got = until(edges)
    assert got, api(base, token, "/api/graph")
    first = got[("client", "demo/clean@1.0.0")]
    assert first["errors"] == 1 and first["error_rate"] == pytest.approx(1 / (len(TWEETS) + 1), abs=1e-3)
    assert 0 < first["p50_ms"] <= first["p95_ms"] <= first["p99_ms"] <= first["max_ms"]
    assert got[("demo/clean@1.0.0", "demo/tokenize@1.0.0")]["errors"] == 0
    # what the scheduler learned rides along: clean pipes to tokenize in every call but the failed
    # one, a strong enough edge for the scheduler to pre-start tokenize
    learned = until(lambda: (lambda e: e if e["share"] is not None else None)(
        {(x["caller"], x["callee"]): x for x in api(base, token, "/api/graph?window=600")["edges"]}
        [("demo/clean@1.0.0", "demo/tokenize@1.0.0")]))
    assert learned["share"] == pytest.approx(len(TWEETS) / (len(TWEETS) + 1), abs=0.02) and learned["prestart"] is True
    assert got[("client", "demo/clean@1.0.0")]["prestart"] is False  # nothing starts a client
    nodes = {n["id"]: n for n in api(base, token, "/api/graph")["nodes"]}
    assert nodes["client"]["kind"] == "client" and nodes["demo/tokenize@1.0.0"]["calls"] == len(TWEETS)


def test_recent_calls_filter_by_algorithm_caller_errors_and_slowness(mesh, traffic):
    base, token = dashboard_url(mesh)
    calls = until(lambda: (lambda c: c if len(c) >= 3 * len(TWEETS) + 1 else None)(
        api(base, token, "/api/calls?limit=500")["calls"]))
    assert calls and {c["trace_id"] for c in calls} >= set(traffic["pipelines"]) | {traffic["failed"]}
    times = [c["time_ms"] for c in calls]
    assert times == sorted(times, reverse=True)                        # newest first

    [failed] = api(base, token, "/api/calls?errors=1")["calls"]
    assert (failed["algorithm"], failed["version"], failed["caller"]) == ("demo/clean", "1.0.0", "client")
    assert not failed["ok"] and failed["reason"] == "ALGORITHM_ERROR" and failed["trace_id"] == traffic["failed"]

    tokenize = api(base, token, "/api/calls?algorithm=demo/tokenize")["calls"]
    assert len(tokenize) == len(TWEETS) and {c["caller"] for c in tokenize} == {"demo/clean@1.0.0"}
    edge = api(base, token, "/api/calls?caller=demo/clean%401.0.0&algorithm=demo/tokenize%401.0.0")["calls"]
    assert [c["span_id"] for c in edge] == [c["span_id"] for c in tokenize]
    assert len(api(base, token, "/api/calls?caller=client&algorithm=demo/clean")["calls"]) == len(TWEETS) + 1
    assert api(base, token, "/api/calls?algorithm=demo/clean&version=9.9.9")["calls"] == []

    slowest = max(c["duration_ms"] for c in calls)
    slow = api(base, token, f"/api/calls?limit=500&slower_ms={slowest - 0.01}")["calls"]
    assert slow and all(c["duration_ms"] >= slowest - 0.01 for c in slow) and len(slow) < len(calls)
    assert len(api(base, token, "/api/calls?limit=2")["calls"]) == 2

    status, _, body = get(base + "/api/calls?slower_ms=fast", token)
    assert status == 400 and b"slower_ms" in body


def test_ingress_refusals_are_calls_too(mesh, client, traffic):
    base, token = dashboard_url(mesh)
    with pytest.raises(algomesh.NotFoundError):
        client.algo("demo/nothing").pipe(1).result
    found = until(lambda: api(base, token, "/api/calls?algorithm=demo/nothing")["calls"])
    assert found and found[0]["hop"] == "ingress" and found[0]["reason"] == "ALGORITHM_NOT_FOUND"


def test_an_instance_is_starting_until_it_registers_then_warm_and_a_new_version_is_cold(mesh, client, tmp_path):
    import threading

    from tests.conftest import write_algorithm

    base, token = dashboard_url(mesh)
    mesh.publish(write_algorithm(tmp_path / "slow", "dash/slow", "1.0.0",
                                 "import time\ndef load():\n    time.sleep(3)\ndef apply(x):\n    return x\n"))

    def version(name: str, v: str) -> dict:
        algorithms = {a["name"]: a for a in api(base, token, "/api/algorithms")["algorithms"]}
        return next(x for x in algorithms[name]["versions"] if x["version"] == v)

    assert version("dash/slow", "1.0.0")["state"] == "cold" and version("dash/slow", "1.0.0")["instances"] == []
    call = threading.Thread(target=lambda: client.algo("dash/slow").pipe(1).result)
    call.start()
    starting = until(lambda: version("dash/slow", "1.0.0")["state"] == "starting", timeout=10)
    assert starting, version("dash/slow", "1.0.0")
    [inst] = version("dash/slow", "1.0.0")["instances"]
    assert inst["state"] == "starting" and inst["id"].startswith("i")
    assert api(base, token, "/api/overview")["instances"].get("starting") == 1
    call.join(60)
    warm = version("dash/slow", "1.0.0")
    assert warm["state"] == "warm" and [i["id"] for i in warm["instances"]] == [inst["id"]]


def test_a_trace_is_a_waterfall_in_tree_order(mesh, traffic):
    base, token = dashboard_url(mesh)
    tid = traffic["pipelines"][0]
    t = until(lambda: (lambda t: t if len(t["spans"]) >= 9 else None)(api(base, token, f"/api/trace?id={tid}")))
    assert t, api(base, token, f"/api/trace?id={tid}")
    depth = {s["name"]: s["depth"] for s in t["spans"]}
    names = [s["name"] for s in t["spans"]]
    assert names[0] == "call demo/clean" and depth["call demo/clean"] == 0
    chain = ["call demo/clean", "demo/clean@1.0.0", "apply demo/clean@1.0.0", "pipe demo/tokenize",
             "demo/tokenize@1.0.0", "apply demo/tokenize@1.0.0"]
    assert [depth[n] for n in chain] == [0, 1, 2, 3, 4, 5]
    assert names.index("pipe demo/tokenize") < names.index("demo/tokenize@1.0.0")   # children follow parents
    assert depth["call demo/sentiment"] == 1                                          # the SDK's chain
    for s in t["spans"]:
        assert 0 <= s["offset_ms"] and s["offset_ms"] + s["duration_ms"] <= t["duration_ms"] + 0.01
    tokenize = next(s for s in t["spans"] if s["name"] == "demo/tokenize@1.0.0")
    assert tokenize["attributes"]["algomesh.caller"] == "demo/clean@1.0.0" and tokenize["kind"] == "server"

    failed = api(base, token, f"/api/trace?id={traffic['failed']}")
    bad = {s["name"]: s for s in failed["spans"] if not s["ok"]}
    assert bad["demo/clean@1.0.0"]["attributes"]["algomesh.error_reason"] == "ALGORITHM_ERROR"
    assert failed["errors"] >= 2
    assert get(base + "/api/trace?id=" + "0" * 32, token)[0] == 404
    assert get(base + "/api/trace?id=nope", token)[0] == 400
    assert "LOVE" not in json.dumps(t) and mesh.api_key not in json.dumps(t)      # traces, never payloads


# --- the pure parts, without a mesh ------------------------------------------------------

def test_percentiles_and_edges_from_spans():
    from algomesh.sidecar.dashboard import call_graph, percentile

    assert percentile([], 50) == 0.0
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99), percentile(values, 100)) == \
        (50.0, 95.0, 99.0, 100.0)
    assert percentile([7.0], 99) == 7.0
    found = [("client", "a/x@1.0.0", int(ms * 1e6), ms == 40) for ms in (10, 20, 30, 40)] + \
            [("a/x@1.0.0", "b/y@2.0.0", 5_000_000, False)]
    g = call_graph(found)
    edges = {(e["caller"], e["callee"]): e for e in g["edges"]}
    first = edges[("client", "a/x@1.0.0")]
    assert (first["calls"], first["errors"], first["error_rate"]) == (4, 1, 0.25)
    assert (first["p50_ms"], first["p95_ms"], first["p99_ms"], first["max_ms"]) == (20.0, 40.0, 40.0, 40.0)
    assert [n["id"] for n in g["nodes"]] == ["client", "a/x@1.0.0", "b/y@2.0.0"]
    assert g["nodes"][2] | {} == {"id": "b/y@2.0.0", "calls": 1, "errors": 0, "algorithm": "b/y",
                                  "version": "2.0.0", "kind": "algorithm"}


def test_learned_edges_join_the_window_graph():
    from algomesh.sidecar.dashboard import call_graph, with_learned
    from algomesh.sidecar.edges import Edge

    g = call_graph([("a/x@1.0.0", "b/y@2.0.0", 5_000_000, False)])
    learned = [Edge("a/x@1.0.0", "b/y@2.0.0", 10.0, 0.9, 0.0, 5.0, 0.0),
               Edge("a/x@1.0.0", "c/z@1.0.0", 2.0, 0.2, 0.0, 5.0, 0.0)]  # seen before the window
    with_learned(g, learned, threshold=0.5)
    edges = {(e["caller"], e["callee"]): e for e in g["edges"]}
    assert (edges[("a/x@1.0.0", "b/y@2.0.0")]["share"], edges[("a/x@1.0.0", "b/y@2.0.0")]["prestart"]) == (0.9, True)
    old = edges[("a/x@1.0.0", "c/z@1.0.0")]
    assert (old["calls"], old["share"], old["prestart"], old["learned_only"]) == (0, 0.2, False, True)
    assert {n["id"] for n in g["nodes"]} == {"a/x@1.0.0", "b/y@2.0.0", "c/z@1.0.0"}


def test_a_waterfall_survives_orphans_and_parent_cycles():
    from algomesh.sidecar.dashboard import waterfall
    from algomesh.sidecar.traces import SpanRow

    def row(sid, parent, start, end, status=0):
        return SpanRow("t" * 32, sid, parent, f"span {sid}", 2, "svc", start * 1_000_000, end * 1_000_000, status, "", {})

    rows = [row("a", "", 0, 100), row("b", "a", 10, 50), row("c", "b", 20, 30, status=2),
            row("d", "missing", 60, 70),                       # its parent never arrived
            row("e", "f", 80, 90), row("f", "e", 80, 90)]      # a malformed cycle
    w = waterfall("t" * 32, rows)
    assert [(s["span_id"], s["depth"]) for s in w["spans"]][:4] == [("a", 0), ("b", 1), ("c", 2), ("d", 0)]
    assert {s["span_id"] for s in w["spans"]} == set("abcdef") and len(w["spans"]) == 6
    assert w["errors"] == 1 and w["duration_ms"] == 100.0 and w["spans"][1]["offset_ms"] == 10.0 and not w["spans"][2]["ok"]
