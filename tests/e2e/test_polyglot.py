"""The mixed-language pipeline of examples/polyglot, end to end (issue 7, "How it is checked").

Seven stages in seven languages, each piping to the next from inside the algorithm:
Node.js cleans -> Go tokenizes -> Rust normalises -> Python scores -> Java labels ->
bash (exec runner) fingerprints -> C++ formats the final record. The example's folders
are published as they are (compiled stages build at publish time) into a real mesh and
called through its ingress like a user would.
"""
import hashlib
import os
import re
import shutil
import subprocess

import pytest

import algomesh
from tests.conftest import EXAMPLES, stored_trace

POLY = EXAMPLES / "polyglot"
# (folder, name, what its stage entry says about the language that ran it), in pipeline order
STAGES = [
    ("clean-node", "poly/clean-node", "(node v"),
    ("tokenize-go", "poly/tokenize-go", "(go1."),
    ("normalize-rust", "poly/normalize-rust", "(rust)"),
    ("score-python", "poly/score-python", "(python 3."),
    ("label-java", "poly/label-java", "(java "),
    ("fingerprint-exec", "poly/fingerprint-exec", "(bash "),
    ("format-cpp", "poly/format-cpp", "(c++ "),
]
NAMES = [name for _, name, _ in STAGES]
FIRST, LAST = NAMES[0], NAMES[-1]


@pytest.fixture(scope="module", autouse=True)
def published(mesh):
    for folder, _, _ in STAGES:
        mesh.publish(POLY / folder)


@pytest.fixture(scope="module")
def first(client):
    return client.algo(FIRST).set_options(timeout=120)  # the first call cold-starts seven runtimes


def _fingerprint(words: list[str]) -> str:
    return hashlib.sha256(" ".join(words).encode()).hexdigest()[:16]


def test_every_stage_adds_its_part(first):
    text = "I LOVE this!!! http://x.co @bob #blessed gr8 day"
    resp = first.pipe(text)
    r = resp.result
    assert resp.metadata.content_type == "json"
    assert r["text"] == text
    # Node.js: URL, mention and hashtag sign gone
    assert r["clean"] == "I LOVE this!!! blessed gr8 day"
    assert r["removed"] == {"urls": 1, "mentions": 1, "hashtags": 1}
    # Go: words and the run of !
    assert r["tokens"] == ["I", "LOVE", "this", "!!!", "blessed", "gr8", "day"]
    # Rust: lower case, shorthand written out, the shouted word noted
    assert r["normalized"] == ["i", "love", "this", "!!!", "blessed", "great", "day"]
    assert r["rewrites"] == [["gr8", "great"]] and r["shouted"] == ["love"]
    # Python: three sentiment words, LOVE counted higher for the capitals; "!!!" adds to the sum
    assert r["hits"] == [["love", pytest.approx(3.2 + 0.733)], ["blessed", 2.9], ["great", 3.1]]
    total = 3.933 + 2.9 + 3.1 + 3 * 0.292
    # C++ rounded the compound to 3 decimals
    assert r["compound"] == round(total / (total * total + 15) ** 0.5, 3) == 0.941
    # Java: label, strength, the strongest words first
    assert (r["label"], r["strength"], r["keywords"]) == ("positive", "strong", ["love", "great", "blessed"])
    # bash: the id is the SHA-256 of the normalised words
    assert r["id"] == _fingerprint(r["normalized"])
    # C++: the summary line
    assert r["summary"] == "positive +0.94 (strong): love, great, blessed"
    # every stage, in order, each saying which language ran it
    assert [s.split(" ")[0] for s in r["stages"]] == [f"{name}@1.0.0" for name in NAMES]
    for entry, (_, _, language) in zip(r["stages"], STAGES):
        assert language in entry, entry


@pytest.mark.parametrize("text, summary", [
    ("Worst. Service. Ever. Waited 2 hours &amp; they were sooooo rude :( https://t.co/x1",
     "negative -0.89 (strong): worst, rude, :("),
    ("Meeting moved to 3pm, room 4B #planning", "neutral +0.00 (none): no sentiment words"),
    ("The new update is not bad at all, really enjoying the faster search",
     "positive +0.76 (strong): enjoying, bad"),
])
def test_known_texts(first, text, summary):
    r = first.pipe(text).result
    assert r["summary"] == summary, r


def test_negation_and_elongation_reach_the_score(first):
    r = first.pipe("The food is NOT soooo good").result
    assert r["tokens"] == ["The", "food", "is", "NOT", "soooo", "good"]
    assert r["normalized"] == ["the", "food", "is", "not", "soo", "good"]
    assert r["rewrites"] == [["soooo", "soo"]] and r["shouted"] == ["not"]
    [[word, valence]] = r["hits"]
    assert word == "good" and valence < 0            # "not", two words before it, flips it
    assert r["label"] == "negative"


def test_the_same_words_however_written_get_the_same_id(first):
    a = first.pipe("I love this!!!").result
    b = first.pipe("i LOVE   this !!! http://t.co/abc").result
    c = first.pipe("I love that!!!").result
    assert a["normalized"] == b["normalized"] == ["i", "love", "this", "!!!"]
    assert a["id"] == b["id"] == _fingerprint(["i", "love", "this", "!!!"])
    assert c["id"] != a["id"]
    assert a["clean"] != b["clean"]                  # different texts, one id


def test_the_whole_pipeline_is_one_trace_with_every_stage_in_order(client, first):
    first.pipe("warm up, please").result           # cold starts are not what this test is about
    resp = first.pipe("What a lovely, lovely day")
    assert resp.result["label"] == "positive"
    trace_id = resp.metadata.trace_id
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)

    # The chain as it ran: the ingress, then per stage its sidecar and its runner's apply,
    # and between stages the pipe the caller's sidecar made for it.
    chain = [f"call {FIRST}"]
    for i, name in enumerate(NAMES):
        if i:
            chain.append(f"pipe {name}")
        chain += [f"{name}@1.0.0", f"apply {name}@1.0.0"]
    trace = stored_trace(client, trace_id, len(chain), names=chain)
    hops = [s for s in trace.spans if not s.name.startswith("start ")]  # (and any instance it started)
    spans = {s.name: s for s in hops}
    assert sorted(spans) == sorted(chain), sorted(spans)
    assert len(hops) == len(chain)                 # each hop once
    assert {s.trace_id for s in trace.spans} == {trace_id}

    for parent, child in zip(chain, chain[1:]):
        p, c = spans[parent], spans[child]
        assert c.parent_span_id == p.span_id, (child, parent)
        # nested in time (one machine, one clock), so in order
        assert p.start_unix_nano <= c.start_unix_nano and c.end_unix_nano <= p.end_unix_nano, (child, parent)
    assert spans[f"call {FIRST}"].parent_span_id == ""
    # who called whom, as each callee's sidecar saw it
    for caller, callee in zip(NAMES, NAMES[1:]):
        assert spans[f"{callee}@1.0.0"].attributes["algomesh.caller"] == f"{caller}@1.0.0"
        assert spans[f"{callee}@1.0.0"].service == f"{callee}@1.0.0"
        assert spans[f"pipe {callee}"].kind == "client"
    assert not any(s.error for s in trace.spans)


# Each stage that pipes, published again with a manifest that lets it call nothing: its
# pipe to the next stage is refused by the mesh, and the refusal comes back through that
# stage's runner to the client as it came.
@pytest.mark.parametrize("index", range(len(STAGES) - 1), ids=[f for f, _, _ in STAGES[:-1]])
def test_a_stage_may_pipe_only_where_its_manifest_says(mesh, client, tmp_path, index):
    folder, name, _ = STAGES[index]
    following = NAMES[index + 1]
    locked = tmp_path / folder
    shutil.copytree(POLY / folder, locked)
    manifest = (locked / "algomesh.toml").read_text()
    assert f'can_call = ["{following}"]' in manifest         # the example lets it call its next stage only
    manifest = manifest.replace('version = "1.0.0"', 'version = "1.0.1-locked"')
    manifest = manifest.replace(f'can_call = ["{following}"]', "can_call = []")
    (locked / "algomesh.toml").write_text(manifest)
    mesh.publish(locked)

    # What the stage takes: the first takes a text; a later one the record the stages before
    # it make, and the final record (all of the pipeline's answer) holds that and more.
    text = "I LOVE this!!! http://x.co @bob #blessed gr8 day"
    record = client.algo(FIRST).pipe(text).result if index else text
    with pytest.raises(algomesh.PermissionError_) as e:
        client.algo(f"{name}/1.0.1-locked").set_options(timeout=120).pipe(record).result
    assert e.value.reason == "PERMISSION_DENIED"
    assert f"{name} may not pipe to {following}" in e.value.message
    assert e.value.metadata["permission"] == f"can_call:{following}"
    # The published 1.0.0 still may, and `latest` never resolves to a pre-release.
    assert client.algo(name).pipe(record).result["summary"]


def test_an_error_in_the_last_stage_reaches_the_client_with_its_reason(client, first):
    text = "@bob http://x.co"                       # no words left after cleaning
    with pytest.raises(algomesh.AlgorithmError) as e:
        first.pipe(text).result
    err = e.value
    assert err.reason == "ALGORITHM_ERROR"
    assert err.message == f'nothing to format: no words left after cleaning "{text}"'
    assert err.error_type == "std::invalid_argument"
    assert "Format::apply" in err.stacktrace         # the C++ stage's own frames, through six runners
    assert (err.algorithm, err.version) == (LAST, "1.0.0")   # the failing stage, named

    # Its trace says the same: every stage's apply failed, the C++ one first (the innermost),
    # with the reason.
    applies = [f"apply {name}@1.0.0" for name in NAMES]
    trace = stored_trace(client, err.metadata["trace_id"], 1 + 2 * len(NAMES) + len(NAMES) - 1, names=applies)
    spans = {s.name: s for s in trace.spans}
    assert all(spans[a].error for a in applies), [(a, spans[a].error) for a in applies]
    assert spans[applies[-1]].attributes["algomesh.error_reason"] == "ALGORITHM_ERROR"
    assert min(applies, key=lambda a: spans[a].end_unix_nano) == applies[-1]

    # The pipeline serves on.
    assert first.pipe("all good again :)").result["label"] == "positive"


def test_the_readme_command_runs_the_demo():
    """`bash examples/polyglot/demo.sh`, as the README says: toolchains set up, a mesh of its
    own in a temporary data directory, the stages published and called, the mesh stopped."""
    env = {k: v for k, v in os.environ.items() if k not in ("ALGOMESH_API_KEY", "ALGOMESH_ADDRESS")}
    out = subprocess.run(["bash", str(POLY / "demo.sh")], capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    for name in NAMES:   # published into the fresh mesh: built and published
        assert re.search(rf"^  {re.escape(name)} +1\.0\.0 +\w+ +built and published in", text, re.M), text
    summaries = re.findall(r"^  ((?:positive|negative|neutral) [-+]\d\.\d\d .*)$", text, re.M)
    assert summaries == ["positive +0.94 (strong): love, great, blessed", "negative -0.89 (strong): worst, rude, :(",
                         "neutral +0.00 (none): no sentiment words", "positive +0.76 (strong): enjoying, bad"], text
    assert len(re.findall(r"^      id [0-9a-f]{16}  trace [0-9a-f]{32}  \d+ ms$", text, re.M)) == 4, text
    assert re.search(r'^  poly/normalize-rust +normalized +\["i", "love", "this", "!!!", "blessed", "great", "day"\]$',
                     text, re.M), text
    waterfall = text[text.index("The last call's trace: 21 spans"):]
    assert [n for n in NAMES if f"apply {n}@1.0.0" in waterfall] == NAMES, waterfall
    assert f"ALGORITHM_ERROR (std::invalid_argument) raised by {LAST}@1.0.0: nothing to format" in text
    assert text.rstrip().endswith("Mesh stopped.")
    scratch = re.search(r"algomesh up --data-dir (\S+)/data\)", text).group(1)
    assert not os.path.exists(scratch)              # its temporary data directory is gone
