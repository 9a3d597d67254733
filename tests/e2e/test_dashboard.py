"""The dashboard in a real browser: headless Debian Chromium driven by Playwright.

A mesh runs the quickstart pipeline (``sentiment.pipe(clean.pipe(tweet))``; demo/clean
pipes to demo/tokenize inside) a few times plus one call that fails; the test opens the
URL `algomesh up` printed, finds the pipeline in the call graph, filters the calls, opens
the pipeline's waterfall and a span's attributes, and asserts on what the page shows.
Screenshots for a person to look at: tests/artifacts/dashboard-*.png.

Chromium comes from Debian (tests/setup.sh installs it); Playwright's own browser
download (`playwright install`) is never used.
"""
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

import pytest

import algomesh
from tests.conftest import EXAMPLES, ROOT
from tests.e2e.test_dashboard_api import dashboard_url

QUICKSTART = EXAMPLES / "quickstart"
ARTIFACTS = ROOT / "tests" / "artifacts"
TWEETS = ["I LOVE this!! @bob http://x.co", "what a lovely day", "this is awful"]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WAIT = 15_000  # ms: the page refreshes every 2 s; spans arrive in batches every 0.5 s


def off_the_loop(fn):
    """``fn()`` on another thread: sync Playwright runs an event loop on this one, and the
    sync SDK refuses to block a running loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result(timeout=120)


def chromium() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    assert os.path.exists(path), "Debian's chromium is missing: run tests/setup.sh (apt-get install chromium)"
    return path


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def traffic(mesh, client):
    def run():
        for folder in ("tokenize", "clean", "sentiment"):
            mesh.publish(QUICKSTART / folder)
        clean, sentiment = client.algo("demo/clean"), client.algo("demo/sentiment")
        pipelines = [sentiment.pipe(clean.pipe(t)) for t in TWEETS]
        assert [p.result["label"] for p in pipelines] == ["positive", "positive", "negative"]
        with pytest.raises(algomesh.AlgorithmError) as failed:
            clean.pipe(42).result                               # demo/clean takes text
        return {"pipelines": [p.metadata.trace_id for p in pipelines], "failed": failed.value.metadata["trace_id"]}
    return off_the_loop(run)


class Watched:
    """A page that records every request it makes, and any error it logs."""

    def __init__(self, browser):
        self.context = browser.new_context(viewport={"width": 1440, "height": 1000})
        self.page = self.context.new_page()
        self.requests: list = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r))
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)

    def hosts(self) -> set[str]:
        return {urlparse(r.url).hostname for r in self.requests if not r.url.startswith(("data:", "blob:"))}


def edge(page, caller: str, callee: str):
    return page.locator(f'[data-test="graph-edge"][data-caller="{caller}"][data-callee="{callee}"]')


def test_the_dashboard_shows_the_pipeline_its_calls_and_its_waterfall(mesh, client, browser, traffic):
    from playwright.sync_api import expect

    base, token = dashboard_url(mesh)
    w = Watched(browser)
    page = w.page
    page.goto(f"{base}/?token={token}")
    expect(page).to_have_title("algomesh dashboard")
    assert "token" not in page.url                                  # taken out of the address bar

    # the header: the mesh's status
    expect(page.locator("#mesh-status")).to_have_text("mesh up", timeout=WAIT)
    expect(page.locator("#mesh-summary")).to_contain_text(mesh.address)
    expect(page.locator("#mesh-summary")).to_contain_text("3 algorithms")

    # Algorithms: demo/clean 1.0.0 with a warm instance
    clean = page.locator('[data-test="algorithm-version"][data-algorithm="demo/clean"][data-version="1.0.0"]')
    expect(clean).to_have_attribute("data-state", "warm", timeout=WAIT)
    instances = clean.locator('[data-test="instance"]')
    expect(instances.first).to_have_text("warm")
    # (the burst of pipelines may have made the scheduler add an instance, warm or on its way)
    assert set(instances.all_inner_texts()) <= {"warm", "starting"}
    expect(clean).to_contain_text("latest")
    expect(page.locator("#algorithms-panel")).to_contain_text("demo/tokenize")

    # the call graph: the pipeline's edges, each with its calls, error rate and latency
    n = len(TWEETS)
    first, piped = edge(page, "client", "demo/clean@1.0.0"), edge(page, "demo/clean@1.0.0", "demo/tokenize@1.0.0")
    latency = re.compile(r"^p50/p95 \d+(\.\d)?/\d+(\.\d)? ms$")
    expect(first.locator('[data-test="edge-calls"]')).to_have_text(f"{n + 1} calls · 25% errors", timeout=WAIT)
    expect(first.locator('[data-test="edge-latency"]')).to_have_text(latency)
    expect(piped.locator('[data-test="edge-calls"]')).to_have_text(f"{n} calls · 0% errors", timeout=WAIT)
    expect(piped.locator('[data-test="edge-latency"]')).to_have_text(latency)
    expect(edge(page, "client", "demo/sentiment@1.0.0")).to_have_attribute("data-calls", str(n))
    # the scheduler learned that clean always pipes to tokenize: that edge pre-starts it (drawn thick)
    expect(piped).to_have_attribute("data-prestart", "true", timeout=WAIT)
    expect(first).to_have_attribute("data-prestart", "false")
    expect(page.locator("#graph-caption")).to_contain_text("thick: the scheduler pre-starts the callee")
    for node in ("client", "demo/clean@1.0.0", "demo/tokenize@1.0.0", "demo/sentiment@1.0.0"):
        expect(page.locator(f'[data-test="graph-node"][data-node="{node}"]')).to_be_visible()
    # laid out left to right along the pipe
    xs = [page.locator(f'[data-test="graph-node"][data-node="{node}"]').bounding_box()["x"]
          for node in ("client", "demo/clean@1.0.0", "demo/tokenize@1.0.0")]
    assert xs == sorted(xs) and len(set(xs)) == 3, xs

    # the recent calls: every hop of every call, newest first
    calls = page.locator('[data-test="call"]')
    expect(calls).to_have_count(3 * n + 1, timeout=WAIT)
    w.shot("overview")

    # it refreshes by itself: one more pipeline shows up without a reload
    off_the_loop(lambda: client.algo("demo/sentiment").pipe(client.algo("demo/clean").pipe("one more lovely call")).result)
    expect(first).to_have_attribute("data-calls", str(n + 2), timeout=WAIT)
    expect(calls).to_have_count(3 * n + 4, timeout=WAIT)
    expect(first.locator('[data-test="edge-calls"]')).to_have_text(f"{n + 2} calls · 20% errors")

    # filters: errors only shows the failing call, with its reason
    page.check("#filter-errors")
    expect(calls).to_have_count(1, timeout=WAIT)
    expect(calls.first).to_have_attribute("data-trace", traffic["failed"])
    expect(calls.first.locator('[data-test="call-status"]')).to_have_text("ALGORITHM_ERROR")
    expect(calls.first.locator('[data-test="call-target"]')).to_have_text("demo/clean@1.0.0")
    w.shot("errors-only")
    page.uncheck("#filter-errors")
    expect(calls).to_have_count(3 * n + 4, timeout=WAIT)
    # slower than: nothing took a minute; every call took more than 0 ms
    page.fill("#filter-slower", "60000")
    expect(page.locator('[data-test="calls-empty"]')).to_have_text("No calls match.", timeout=WAIT)
    page.fill("#filter-slower", "")
    expect(calls).to_have_count(3 * n + 4, timeout=WAIT)
    # by algorithm, from the select
    page.select_option("#filter-algorithm", "demo/sentiment")
    expect(calls).to_have_count(n + 1, timeout=WAIT)
    expect(page.locator('[data-test="call"][data-algorithm="demo/sentiment"]')).to_have_count(n + 1)
    page.click("#filter-clear")
    expect(calls).to_have_count(3 * n + 4, timeout=WAIT)
    # clicking a node lists the calls to it; the client node, the calls from clients
    page.locator('[data-test="graph-node"][data-node="demo/sentiment@1.0.0"]').click()
    expect(calls).to_have_count(n + 1, timeout=WAIT)
    expect(page.locator('[data-test="call"][data-algorithm="demo/sentiment"]')).to_have_count(n + 1)
    expect(page.locator("#filter-algorithm")).to_have_value("demo/sentiment@1.0.0")
    page.locator('[data-test="graph-node"][data-node="client"]').click()
    expect(calls).to_have_count(2 * n + 3, timeout=WAIT)                # clean (+1 failed) and sentiment
    expect(page.locator('[data-test="call"][data-caller="client"]')).to_have_count(2 * n + 3)

    # clicking the pipe's edge lists the calls on that edge
    piped.locator('[data-test="edge-label"]').click()
    expect(piped).to_have_class(re.compile(r"\bselected\b"))
    expect(calls).to_have_count(n + 1, timeout=WAIT)
    for i in range(n + 1):
        expect(calls.nth(i)).to_have_attribute("data-caller", "demo/clean@1.0.0")
        expect(calls.nth(i).locator('[data-test="call-target"]')).to_have_text("demo/tokenize@1.0.0")
    expect(page.locator("#calls-caption")).to_contain_text("from demo/clean@1.0.0 · to demo/tokenize@1.0.0")
    w.shot("edge-filter")

    # its waterfall: the pipeline's spans, nested
    page.locator(f'[data-test="call"][data-trace="{traffic["pipelines"][0]}"] [data-test="trace-link"]').click()
    panel = page.locator("#waterfall-panel")
    expect(panel).to_be_visible()
    expect(page.locator("#waterfall-trace")).to_have_text(traffic["pipelines"][0])
    spans = page.locator('[data-test="span"]')
    # nine spans of calls, plus the starts of the instances this pipeline was the first to need
    # (the pipelines ran at once, so each start is in the trace of whichever asked first)
    chain = ["call demo/clean", "demo/clean@1.0.0", "apply demo/clean@1.0.0", "pipe demo/tokenize",
             "demo/tokenize@1.0.0", "apply demo/tokenize@1.0.0"]
    expect(spans.filter(has_not=page.locator('[data-test="span-name"]', has_text=re.compile(r"^start ")))) \
        .to_have_count(9, timeout=WAIT)
    names = spans.locator('[data-test="span-name"]').all_text_contents()
    started = [n for n in names if n.startswith("start ")]
    assert set(started) <= {"start demo/clean@1.0.0", "start demo/tokenize@1.0.0", "start demo/sentiment@1.0.0"}
    hops = [i for i, n in enumerate(names) if not n.startswith("start ")]
    assert [names[i] for i in hops[:6]] == chain, names
    assert {"call demo/sentiment", "demo/sentiment@1.0.0", "apply demo/sentiment@1.0.0"} <= set(names)
    depths = [int(spans.nth(i).get_attribute("data-depth")) for i in hops[:6]]
    assert depths == [0, 1, 2, 3, 4, 5]
    # nested on screen: each name starts further right, each bar within its parent's
    starts = [spans.nth(i).locator('[data-test="span-name"]').bounding_box()["x"] for i in hops[:6]]
    assert starts == sorted(starts) and len(set(starts)) == 6, starts
    bars = [spans.nth(i).locator(".wf-bar").bounding_box() for i in hops[:6]]
    for parent, child in zip(bars, bars[1:]):
        # (a bar is at least 2 px wide, so a very short span may stick out by that much)
        assert parent["x"] - 1 <= child["x"] and child["x"] + child["width"] <= parent["x"] + parent["width"] + 3
    expect(page.locator("#waterfall-caption")).to_contain_text(f"{9 + len(started)} spans")

    # a span's attributes
    spans.filter(has=page.locator('[data-test="span-name"]', has_text=re.compile(r"^demo/tokenize@1\.0\.0$"))).click()
    details = page.locator("#span-details")
    expect(details.locator('[data-test="span-details-name"]')).to_have_text("demo/tokenize@1.0.0")
    expect(details.locator('[data-test="attribute"][data-key="algomesh.caller"] td')).to_have_text("demo/clean@1.0.0")
    expect(details.locator('[data-test="attribute"][data-key="algomesh.version"] td')).to_have_text("1.0.0")
    expect(details.locator('[data-test="span-status"] td')).to_have_text("ok")
    w.shot("waterfall")

    # the failing call's waterfall: its spans red, with the reason
    page.click("#filter-clear")
    page.check("#filter-errors")
    expect(calls).to_have_count(1, timeout=WAIT)
    calls.first.click()
    expect(page.locator("#waterfall-trace")).to_have_text(traffic["failed"])
    failed = page.locator('[data-test="span"][data-ok="false"]')
    expect(failed).to_have_count(3, timeout=WAIT)                  # call, inbound, apply
    assert failed.first.locator(".wf-bar").evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(239, 68, 68)"
    page.locator('[data-test="span"][data-name="apply demo/clean@1.0.0"]').click()
    expect(details.locator('[data-test="attribute"][data-key="algomesh.error_reason"] td')).to_have_text("ALGORITHM_ERROR")
    expect(details.locator('[data-test="span-status"] td')).to_have_text(re.compile("^error"))
    w.shot("waterfall-error")
    page.click("#waterfall-close")
    expect(panel).to_be_hidden()

    # everything came from the mesh's own HTTP port, and the API calls carried the token
    assert w.hosts() == {"127.0.0.1"}, w.hosts()
    api_calls = [r for r in w.requests if urlparse(r.url).path.startswith("/api/")]
    assert api_calls and all(r.headers.get("authorization") == f"Bearer {token}" for r in api_calls)
    assert not w.errors, w.errors                                  # no script errors, no CSP violations
    w.context.close()


def test_without_the_token_the_page_asks_for_it_and_the_api_answers_401(mesh, browser, traffic):
    from playwright.sync_api import expect

    base, token = dashboard_url(mesh)
    w = Watched(browser)
    page = w.page
    page.goto(base + "/")
    expect(page.locator("#token-needed")).to_be_visible(timeout=WAIT)
    expect(page.locator("#mesh-status")).to_have_text("token needed")
    expect(page.locator("#main")).to_be_hidden()
    for path in ("/api/overview", "/api/calls?errors=1", f"/api/trace?id={traffic['failed']}"):
        assert page.request.get(base + path).status == 401
        assert page.request.get(base + path, headers={"Authorization": "Bearer nope"}).status == 401
    assert page.request.get(base + "/api/overview", headers={"Authorization": f"Bearer {token}"}).status == 200
    w.shot("token-needed")

    page.fill("#token-input", token)                                # pasting the token works too
    page.click("#token-form button")
    expect(page.locator("#mesh-status")).to_have_text("mesh up", timeout=WAIT)
    expect(page.locator('[data-test="graph-edge"]').first).to_be_visible(timeout=WAIT)
    assert w.hosts() == {"127.0.0.1"}
    w.context.close()
