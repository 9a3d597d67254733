"""The Prometheus exposition (exact text) and the /metrics server over real sockets."""
from __future__ import annotations

import asyncio
import math
import sys
import threading
import time

import pytest

from algomesh.sidecar.metrics import CONTENT_TYPE, DEFAULT_BUCKETS, Registry, Request, serve_metrics


# --- exposition ---------------------------------------------------------------------------

def test_exact_exposition_of_a_small_registry():
    r = Registry()
    calls = r.counter("algomesh_calls", "Calls answered.", ("algorithm", "version"))
    calls.labels("demo/b", "1.0.0").inc()
    calls.labels("demo/a", "2.0.0").inc(2.5)
    calls.labels("demo/a", "1.0.0").inc()
    workers = r.gauge("algomesh_workers", "Workers.\nOne per core, \\ roughly.")
    workers.labels().set(4)
    workers.labels().dec()
    latency = r.histogram("algomesh_call_seconds", "Latency.", ("algorithm",), buckets=(0.01, 0.1, 1))
    latency.labels("demo/a").observe(0.05)
    latency.labels("demo/a").observe(0.5)
    latency.labels("demo/a").observe(0.5)
    assert r.render().decode() == (
        '# HELP algomesh_calls_total Calls answered.\n'
        '# TYPE algomesh_calls_total counter\n'
        'algomesh_calls_total{algorithm="demo/a",version="1.0.0"} 1\n'
        'algomesh_calls_total{algorithm="demo/a",version="2.0.0"} 2.5\n'
        'algomesh_calls_total{algorithm="demo/b",version="1.0.0"} 1\n'
        '# HELP algomesh_workers Workers.\\nOne per core, \\\\ roughly.\n'
        '# TYPE algomesh_workers gauge\n'
        'algomesh_workers 3\n'
        '# HELP algomesh_call_seconds Latency.\n'
        '# TYPE algomesh_call_seconds histogram\n'
        'algomesh_call_seconds_bucket{algorithm="demo/a",le="0.01"} 0\n'
        'algomesh_call_seconds_bucket{algorithm="demo/a",le="0.1"} 1\n'
        'algomesh_call_seconds_bucket{algorithm="demo/a",le="1"} 3\n'
        'algomesh_call_seconds_bucket{algorithm="demo/a",le="+Inf"} 3\n'
        'algomesh_call_seconds_sum{algorithm="demo/a"} 1.05\n'
        'algomesh_call_seconds_count{algorithm="demo/a"} 3\n')


def test_label_values_are_escaped():
    r = Registry()
    r.counter("errors_total", "Errors.", ("reason",)).labels('say "hi"\\now\nthen').inc()
    assert r.render().decode().splitlines()[-1] == r'errors_total{reason="say \"hi\"\\now\nthen"} 1'


def test_histogram_buckets_are_cumulative_with_inf_sum_and_count():
    r = Registry()
    h = r.histogram("work_seconds", "Work.", buckets=(1, 2, 5))
    for v in (0.5, 1, 1.5, 2, 7, 100):           # a value equal to a bound is in that bucket (le)
        h.labels().observe(v)
    assert r.render().decode().splitlines()[2:] == [
        'work_seconds_bucket{le="1"} 2',
        'work_seconds_bucket{le="2"} 4',
        'work_seconds_bucket{le="5"} 4',
        'work_seconds_bucket{le="+Inf"} 6',
        'work_seconds_sum 112',
        'work_seconds_count 6',
    ]


def test_an_unlabelled_metric_is_exposed_at_zero_and_has_one_child():
    r = Registry()
    c = r.counter("cold_starts_total", "Cold starts.")
    h = r.histogram("boot_seconds", "Boot.", buckets=(1,))
    assert c.labels() is c.labels()
    assert r.render().decode() == (
        "# HELP cold_starts_total Cold starts.\n# TYPE cold_starts_total counter\ncold_starts_total 0\n"
        "# HELP boot_seconds Boot.\n# TYPE boot_seconds histogram\n"
        'boot_seconds_bucket{le="1"} 0\nboot_seconds_bucket{le="+Inf"} 0\n'
        "boot_seconds_sum 0\nboot_seconds_count 0\n")
    assert h.labels() is h.labels()


def test_a_labelled_family_without_series_renders_help_and_type_only():
    r = Registry()
    r.counter("hits_total", "Cache hits.", ("algorithm",))
    assert r.render() == b"# HELP hits_total Cache hits.\n# TYPE hits_total counter\n"
    assert Registry().render() == b""


def test_values_format_like_go():
    r = Registry()
    g = r.gauge("g", "G.", ("k",))
    for k, v in (("a", 0.25), ("b", -2), ("c", math.inf), ("d", -math.inf), ("e", math.nan), ("f", 1e20),
                 ("g", 1e-7)):
        g.labels(k).set(v)
    assert [line.split(" ")[1] for line in r.render().decode().splitlines()[2:]] == [
        "0.25", "-2", "+Inf", "-Inf", "NaN", "1e+20", "1e-07"]


def test_cached_children_are_the_same_object():
    r = Registry()
    c = r.counter("calls_total", "Calls.", ("algorithm", "version"))
    child = c.labels("demo/a", "1.0.0")
    child.inc()
    assert c.labels("demo/a", "1.0.0") is child
    c.labels("demo/a", "1.0.0").inc()
    assert child.value == 2
    assert c.labels("demo/a", "1.0.0") is not c.labels("demo/a", "1.0.1")
    g = r.gauge("instances", "Instances.", ("version",))
    assert g.labels(1) is g.labels("1")                   # one series, whatever type the value had
    assert r.render().decode().count("instances{") == 1


def test_gauge_inc_dec_set():
    g = Registry().gauge("in_flight", "In flight.").labels()
    g.inc()
    g.inc(3)
    g.dec()
    assert g.value == 3
    g.set(0.5)
    assert g.value == 0.5


def test_callback_gauges_are_read_at_render_time():
    live = {"demo/b": 2, "demo/a": 1}
    r = Registry()
    g = r.gauge("instances", "Instances.", ("algorithm",), collect=lambda: [((k,), v) for k, v in live.items()])
    r.gauge("in_flight", "In flight.", collect=lambda: [((), sum(live.values()))])
    assert r.render().decode().splitlines()[2:] == [
        'instances{algorithm="demo/a"} 1', 'instances{algorithm="demo/b"} 2',
        "# HELP in_flight In flight.", "# TYPE in_flight gauge", "in_flight 3"]
    live["demo/c"] = 5
    del live["demo/a"]
    assert 'instances{algorithm="demo/c"} 5' in r.render().decode()
    assert 'demo/a' not in r.render().decode()
    with pytest.raises(ValueError):
        g.labels("demo/x")


def test_a_failing_callback_leaves_out_only_its_own_samples():
    def broken():
        raise RuntimeError("state is gone")

    r = Registry()
    r.gauge("broken", "Broken.", collect=broken)
    r.gauge("wrong_arity", "Wrong.", ("a",), collect=lambda: [(("x", "y"), 1)])
    r.counter("fine_total", "Fine.").labels().inc()
    assert r.render().decode() == (
        "# HELP broken Broken.\n# TYPE broken gauge\n"
        "# HELP wrong_arity Wrong.\n# TYPE wrong_arity gauge\n"
        "# HELP fine_total Fine.\n# TYPE fine_total counter\nfine_total 1\n")


def test_default_buckets_cover_half_a_millisecond_to_a_minute():
    assert DEFAULT_BUCKETS[0] == 0.0005 and DEFAULT_BUCKETS[-1] == 60
    assert list(DEFAULT_BUCKETS) == sorted(set(DEFAULT_BUCKETS))


# --- validation ---------------------------------------------------------------------------

def test_registering_a_name_twice_is_refused():
    r = Registry()
    r.counter("calls", "Calls.")
    with pytest.raises(ValueError):
        r.counter("calls_total", "Calls again.")          # the same exposed name
    r.histogram("latency", "Latency.")
    with pytest.raises(ValueError):
        r.gauge("latency_count", "Collides with the histogram's series.")
    with pytest.raises(ValueError):
        r.gauge("latency", "Same name.")


@pytest.mark.parametrize("name", ["", "1abc", "has-dash", "has space", "é"])
def test_invalid_metric_names_are_refused(name):
    with pytest.raises(ValueError):
        Registry().gauge(name, "x")


@pytest.mark.parametrize("labels", [("1a",), ("a-b",), ("__reserved",), ("a", "a"), "algorithm", ("",)])
def test_invalid_label_names_are_refused(labels):
    with pytest.raises(ValueError):
        Registry().counter("c_total", "x", labels)


def test_histogram_rules():
    r = Registry()
    with pytest.raises(ValueError):
        r.histogram("h1", "x", ("le",))
    for buckets in ((), (1, 1), (2, 1), (1, math.nan), (math.inf,)):
        with pytest.raises(ValueError):
            r.histogram("h2", "x", buckets=buckets)
    h = r.histogram("h3", "x", buckets=(1, math.inf))     # +Inf is implied; saying it is fine
    assert r.render().decode().count('le="+Inf"') == 1 and h.bounds == (1.0,)
    assert r.counter("colon:name_total", "Colons are allowed in metric names.")


def test_wrong_number_of_label_values_and_negative_inc_are_refused():
    c = Registry().counter("c_total", "x", ("a", "b"))
    for values in ((), ("x",), ("x", "y", "z")):
        with pytest.raises(ValueError):
            c.labels(*values)
    with pytest.raises(ValueError):
        c.labels("x", "y").inc(-1)
    assert c.labels("x", "y").value == 0


def test_render_from_a_thread_while_series_are_added():
    r = Registry()
    c = r.counter("c_total", "x", ("i",))
    h = r.histogram("h", "x", ("i",))
    errors: list[BaseException] = []
    stop = threading.Event()

    def scrape():
        try:
            while not stop.is_set():
                r.render()
        except BaseException as e:                        # pragma: no cover - the failure we test for
            errors.append(e)

    t = threading.Thread(target=scrape)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)                           # switch threads as often as possible
    t.start()
    try:
        for i in range(20000):
            c.labels(str(i)).inc()
            h.labels(str(i)).observe(0.1)
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(interval)
    assert not errors
    assert r.render().decode().count("c_total{") == 20000


# --- the /metrics server ------------------------------------------------------------------

LOOPS = [pytest.param(asyncio.new_event_loop, id="asyncio")]
try:
    import uvloop
    LOOPS.append(pytest.param(uvloop.new_event_loop, id="uvloop"))
except ImportError:                                       # pragma: no cover
    pass


@pytest.fixture(params=LOOPS)
def run(request):
    def run(coro):
        with asyncio.Runner(loop_factory=request.param) as runner:
            return runner.run(coro)
    return run


async def exchange(port: int, raw: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes and read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(timeout):
            return await reader.read()
    finally:
        writer.close()


def parse(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    assert int(headers["content-length"]) == len(body) or not body
    return int(status_line.split(" ")[1]), headers, body


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n".encode()


async def serving(registry: Registry | None = None, **kwargs):
    registry = registry or Registry()
    server, port = await serve_metrics(registry, **kwargs)
    return registry, server, port


def small_registry() -> Registry:
    r = Registry()
    r.counter("calls_total", "Calls.", ("algorithm",)).labels('demo/"a"').inc()
    r.histogram("call_seconds", "Latency.").labels().observe(0.003)
    return r


def test_get_metrics_returns_the_exposition(run):
    async def scenario():
        registry, server, port = await serving(small_registry())
        try:
            status, headers, body = parse(await exchange(port, get("/metrics")))
            assert (status, headers["content-type"], body) == (200, CONTENT_TYPE, registry.render())
            assert headers["connection"] == "close"
            status, _, body = parse(await exchange(port, get("/metrics?name[]=x", "Connection: keep-alive\r\n")))
            assert status == 200 and body == registry.render()
            status, headers, body = parse(await exchange(port, b"HEAD /metrics HTTP/1.0\n\n"))
            assert status == 200 and body == b"" and int(headers["content-length"]) == len(registry.render())
        finally:
            server.close()
            await server.wait_closed()
    run(scenario())


def test_unknown_paths_and_methods(run):
    async def scenario():
        _, server, port = await serving()
        try:
            assert parse(await exchange(port, get("/nope")))[0] == 404
            assert parse(await exchange(port, get("/metrics/")))[0] == 404
            status, headers, _ = parse(await exchange(
                port, b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"))
            assert status == 405 and headers["allow"] == "GET, HEAD"
        finally:
            server.close()
            await server.wait_closed()
    run(scenario())


@pytest.mark.parametrize("garbage", [
    b"garbage\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",     # a TLS hello, more or less
    b"GET /metrics HTTP/2.0\r\n\r\n",
    b"GET metrics HTTP/1.1\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
    b"\r\n",
])
def test_garbage_is_400_and_the_server_keeps_serving(run, garbage):
    async def scenario():
        registry, server, port = await serving(small_registry())
        try:
            assert parse(await exchange(port, garbage))[0] == 400
            assert parse(await exchange(port, get("/metrics")))[2] == registry.render()
        finally:
            server.close()
            await server.wait_closed()
    run(scenario())


def test_oversized_heads_are_refused(run):
    async def scenario():
        _, server, port = await serving(max_header_bytes=8192)
        try:
            one_long = get("/metrics", "X-Big: " + "a" * 20000 + "\r\n")
            many = get("/metrics", "".join(f"X-{i}: {'b' * 100}\r\n" for i in range(100)))
            long_path = get("/" + "p" * 10000)
            for raw in (one_long, many, long_path):
                assert parse(await exchange(port, raw))[0] == 431
            assert parse(await exchange(port, get("/metrics")))[0] == 200
        finally:
            server.close()
            await server.wait_closed()
    run(scenario())


def test_a_silent_or_slow_client_is_cut_off(run):
    async def scenario():
        _, server, port = await serving(read_timeout=0.5)
        try:
            for raw in (b"", b"GET /metrics HTTP/1.1\r\nHost: x\r\n"):      # nothing; a head never finished
                started = time.monotonic()
                response = await exchange(port, raw, timeout=5.0)
                assert 0.4 < time.monotonic() - started < 3.0
                assert parse(response)[0] == 408
            assert parse(await exchange(port, get("/metrics")))[0] == 200
        finally:
            server.close()
            await server.wait_closed()
    run(scenario())


def test_connections_beyond_the_cap_are_closed_at_once(run):
    async def scenario():
        _, server, port = await serving(read_timeout=5.0, max_connections=1)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)   # holds the one slot
            await asyncio.sleep(0.05)
            started = time.monotonic()
            try:                                              # closed unread: an EOF or a reset
                assert await exchange(port, get("/metrics")) == b""
            except ConnectionResetError:
                pass
            assert time.monotonic() - started < 1.0
            writer.close()
            assert await reader.read() == b""                # hung up without a request: no answer
            assert parse(await exchange(port, get("/metrics")))[0] == 200
        finally:
            server.close()
            await server.wait_closed()
    run(scenario())


def test_a_client_that_hangs_up_early_does_no_harm(run):
    async def scenario():
        _, server, port = await serving()
        try:
            for raw in (b"GET /met", b"GET /metrics HTTP/1.1\r\n"):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(raw)
                await writer.drain()
                writer.close()
            assert parse(await exchange(port, get("/metrics")))[0] == 200
        finally:
            server.close()
            await server.wait_closed()
    run(scenario())


def test_extra_routes(run):
    async def healthz(request):
        return 200, "application/json", b'{"ok": true}'

    async def broken(request):
        raise RuntimeError("boom")

    async def bad_header(request):
        return 200, "text/plain", b"x", [("X-Evil", "a\r\nSet-Cookie: b")]

    async def scenario():
        _, server, port = await serving(extra_routes={"/healthz": healthz, "/broken": broken, "/bad": bad_header})
        try:
            status, headers, body = parse(await exchange(port, get("/healthz")))
            assert (status, headers["content-type"], body) == (200, "application/json", b'{"ok": true}')
            assert parse(await exchange(port, get("/broken")))[0] == 500
            assert parse(await exchange(port, get("/bad")))[0] == 500        # no header injection
            assert parse(await exchange(port, get("/metrics")))[0] == 200
        finally:
            server.close()
            await server.wait_closed()
    run(scenario())


def test_routes_see_the_path_query_and_headers_and_may_answer_headers(run):
    seen = []

    async def echo(request):
        seen.append(request)
        return 401, "application/json", b"{}", [("WWW-Authenticate", "Bearer"), ("Cache-Control", "no-store")]

    async def scenario():
        _, server, port = await serving(extra_routes={"/api/calls": echo})
        try:
            raw = get("/api/calls?algorithm=demo%2Fclean&errors=1&errors=0&empty=&x",
                      "Authorization: Bearer abc\r\nX-Twice: 1\r\nx-twice: 2\r\n")
            status, headers, body = parse(await exchange(port, raw))
            assert (status, body) == (401, b"{}")
            assert headers["www-authenticate"] == "Bearer" and headers["cache-control"] == "no-store"
            [request] = seen
            assert (request.method, request.path) == ("GET", "/api/calls")
            assert request.query == "algorithm=demo%2Fclean&errors=1&errors=0&empty=&x"
            assert request.params() == {"algorithm": "demo/clean", "errors": "1", "empty": "", "x": ""}
            assert request.headers["authorization"] == "Bearer abc"
            assert request.headers["x-twice"] == "1, 2"                        # repeated: joined
            assert request.headers["host"] == "localhost"
            status, headers, body = parse(await exchange(port, b"HEAD /api/calls?q HTTP/1.0\n\n"))
            assert status == 401 and body == b"" and seen[-1].method == "HEAD" and seen[-1].query == "q"
            assert parse(await exchange(port, get("/api/calls/")))[0] == 404     # exact paths only
            assert parse(await exchange(port, get("/api/calls", "Bad Name: x\r\n")))[0] == 400
            many = get("/api/calls", "".join(f"X-{i}: y\r\n" for i in range(101)))
            assert parse(await exchange(port, many))[0] == 431                   # bounded in number too
            assert len(Request("GET", "/", "&".join(f"k{i}=v" for i in range(1000))).params()) == 64
        finally:
            server.close()
            await server.wait_closed()
    run(scenario())


def test_render_is_live(run):
    async def scenario():
        registry, server, port = await serving()
        calls = registry.counter("calls_total", "Calls.")
        try:
            calls.labels().inc()
            assert b"calls_total 1\n" in parse(await exchange(port, get("/metrics")))[2]
            calls.labels().inc()
            assert b"calls_total 2\n" in parse(await exchange(port, get("/metrics")))[2]
        finally:
            server.close()
            await server.wait_closed()
    run(scenario())


def test_any_request_head_gets_one_well_formed_answer_and_the_server_keeps_serving():
    """Property: whatever bytes arrive as a request head, the answer is one HTTP/1.1
    status line with a known status (or nothing, for a head cut short), routes see only
    what parsed, and the next good request is served."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    seen: list[Request] = []

    async def echo(request):
        seen.append(request)
        return 200, "text/plain", repr(request.params()).encode()

    token = st.text(st.characters(min_codepoint=0, max_codepoint=0x2FF), max_size=40)
    heads = st.one_of(
        st.binary(max_size=300),
        st.builds(lambda m, path, q, headers: (f"{m} /{path}?{q} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode("utf-8", "surrogatepass"),
            st.sampled_from(["GET", "HEAD", "POST", "get", "BREW"]), st.one_of(st.just("echo"), token), token,
            st.lists(st.tuples(token, token), max_size=6)),
    )

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(heads)
    def check(raw):
        async def scenario():
            _, server, port = await serving(read_timeout=0.3, extra_routes={"/echo": echo})
            try:
                answer = await exchange(port, raw + b"\r\n\r\n", timeout=5.0)
                if answer:
                    status = int(answer.split(b" ", 2)[1])
                    assert answer.startswith(b"HTTP/1.1 ") and status in (200, 400, 404, 405, 408, 431)
                assert parse(await exchange(port, get("/metrics")))[0] == 200
            finally:
                server.close()
                await server.wait_closed()
        asyncio.run(scenario())

    check()
    assert all(r.path == "/echo" and r.method in ("GET", "HEAD") for r in seen)
