"""The tweet sentiment pipeline of examples/tweets, end to end (issue 8, point 1).

ingest -> clean -> lemmatize (simplemma) -> sentiment (VADER 1.0.0, or TextBlob's pattern
lexicon 2.0.0), each stage piping to the next from inside the algorithm. The example's
folders are published as they are into a real mesh and called through its ingress.
"""
import json
import os
import re
import subprocess
import sys

import pytest

import algomesh
from tests.conftest import EXAMPLES, stored_trace

TWEETS = EXAMPLES / "tweets"
FOLDERS = ["sentiment-vader", "sentiment-textblob", "lemmatize", "clean", "ingest"]
SWAPPED = {"sentiment": "tweets/sentiment/2.*"}

KNOWN = [  # (tweet, the label both sentiment algorithms should give it)
    ("I absolutely love this new phone, the camera is amazing!!! 😍", "positive"),
    ("Worst customer service ever. They were rude and the food was terrible.", "negative"),
    ("The meeting moved to 3pm in room 4B.", "neutral"),
    ("The new update is not bad at all", "positive"),       # a negated negative word
    ("I don't like the new design, it's not good.", "negative"),  # n't survives the lemmatizer
]


@pytest.fixture(scope="module", autouse=True)
def published(mesh):
    for folder in FOLDERS:
        mesh.publish(TWEETS / folder)


@pytest.fixture(scope="module")
def ingest(client):
    return client.algo("tweets/ingest").set_options(timeout=120)  # the first call cold-starts four stages


def _records(ingest, tweets, pipeline=None):
    body = {"tweets": tweets} if pipeline is None else {"tweets": tweets, "pipeline": pipeline}
    return ingest.pipe(body).result["records"]


def test_known_tweets_get_sensible_labels(ingest):
    records = _records(ingest, [{"id": f"k{i}", "text": t} for i, (t, _) in enumerate(KNOWN)])
    assert [r["id"] for r in records] == [f"k{i}" for i in range(len(KNOWN))]
    assert [(r["text"], r["sentiment"]["label"]) for r in records] == KNOWN
    for r in records:
        s = r["sentiment"]
        assert (s["algorithm"], s["version"]) == ("tweets/sentiment", "1.0.0")
        assert -1 <= s["score"] <= 1 and abs(s["pos"] + s["neu"] + s["neg"] - 1) < 0.01  # VADER's proportions
    love, worst = records[0]["sentiment"]["score"], records[1]["sentiment"]["score"]
    assert love > 0.8 and worst < -0.8
    assert records[2]["sentiment"]["score"] == 0


def test_clean_stage_on_tricky_input(client):
    text = ("  RT @dj_nimbus: I \u2019can\u2019t\u2019 stop   LOVING this!!! &amp; it\u2019s FREE :) <3 "
            "https://t.co/aB3 www.example.org/x #NewMusic... \u201cwow\u201d \u2014 10/10 \U0001F44D\U0001F3FD\n\t")
    r = client.algo("tweets/clean").pipe(text).result
    assert r["clean"] == "RT I can't stop LOVING this!!! it's FREE 🙂 ❤ NewMusic wow 10 10 👍"
    assert r["text"] == text
    # emails are not mentions, and a bare string with nothing left is still a record
    assert client.algo("tweets/clean").pipe("mail me: ana@example.org").result["clean"] == "mail me ana example org"
    empty = client.algo("tweets/clean").pipe("@bob https://x.co #").result
    assert empty["clean"] == "" and empty["lemmas"] == [] and empty["sentiment"]["label"] == "neutral"


def test_lemmatizer(client):
    r = client.algo("tweets/lemmatize").pipe("The dogs were running and I don't care WON'T stop geese").result
    assert r["tokens"] == ["The", "dogs", "were", "running", "and", "I", "do", "not", "care", "WILL", "NOT", "stop",
                           "geese"]
    assert r["lemmas"] == ["the", "dog", "be", "run", "and", "I", "do", "not", "care", "WILL", "NOT", "stop", "goose"]
    assert r["sentiment"]["version"] == "1.0.0"
    assert client.algo("tweets/lemmatize").pipe("Mice ran faster happier children went!! 🎉🎉").result["lemmas"] == [
        "mouse", "run", "fast", "happy", "child", "go", "!!", "🎉🎉"]


def test_swapping_the_sentiment_stage_is_one_name(client, ingest):
    texts = [t for t, _ in KNOWN]
    default = _records(ingest, texts)
    swapped = _records(ingest, texts, SWAPPED)
    assert {(r["sentiment"]["algorithm"], r["sentiment"]["version"]) for r in default} == {("tweets/sentiment", "1.0.0")}
    assert {(r["sentiment"]["algorithm"], r["sentiment"]["version"]) for r in swapped} == {("tweets/sentiment", "2.0.0")}
    assert all("subjectivity" in r["sentiment"] and "pos" not in r["sentiment"] for r in swapped)
    # only the sentiment differs: the stages before it did the same work
    assert [(r["clean"], r["lemmas"]) for r in swapped] == [(r["clean"], r["lemmas"]) for r in default]
    assert [r["sentiment"]["label"] for r in swapped] == [label for _, label in KNOWN]
    assert [r["sentiment"]["score"] for r in swapped] != [r["sentiment"]["score"] for r in default]
    # the two answer under their own versions, and the metadata says which
    for ref, version in (("tweets/sentiment/1.*", "1.0.0"), ("tweets/sentiment/2.*", "2.0.0")):
        resp = client.algo(ref).pipe(["not", "bad", "at", "all"])
        assert (resp.metadata.algorithm, resp.metadata.version) == ("tweets/sentiment", version)
        assert resp.result["label"] == "positive"
    # and a swapped call is one trace through the four stages, ending in 2.0.0
    resp = ingest.pipe({"tweets": ["what a lovely day"], "pipeline": SWAPPED})
    assert resp.result["records"][0]["sentiment"]["label"] == "positive"
    stages = ["tweets/ingest@1.0.0", "tweets/clean@1.0.0", "tweets/lemmatize@1.0.0", "tweets/sentiment@2.0.0"]
    trace = stored_trace(client, resp.metadata.trace_id, 1 + 2 * 4 + 3, names=[f"apply {s}" for s in stages])
    applies = [s.name for s in trace.spans if s.name.startswith("apply ")]
    assert sorted(applies) == sorted(["apply tweets/ingest@1.0.0", "apply tweets/clean@1.0.0",
                                      "apply tweets/lemmatize@1.0.0", "apply tweets/sentiment@2.0.0"])


def test_each_stage_may_call_only_the_next(ingest):
    # clean's manifest allows tweets/lemmatize only: a pipeline that skips a stage is refused
    with pytest.raises(algomesh.PermissionError_) as e:
        _records(ingest, ["great"], {"lemmatize": "tweets/sentiment/1.*"})
    assert e.value.reason == "PERMISSION_DENIED" and "tweets/sentiment" in e.value.message


@pytest.mark.parametrize("body, message", [
    ('{"text": "fine"}\nnot json\n', "line 2: not JSON"),
    ('{"id": 1, "txt": "typo"}', 'line 1: no "text" string'),
    ({"tweets": ["ok"], "pipeline": {"sentimnet": "tweets/sentiment/2.*"}}, "unknown pipeline stage 'sentimnet'"),
    ({"tweets": ["ok"], "pipeline": {"sentiment": 2}}, '"pipeline" is an object'),
    ({"tweet": ["ok"]}, 'needs "tweets"'),
    (42, "JSON lines (text) or a JSON list"),
])
def test_bad_input_is_invalid_input(ingest, body, message):
    with pytest.raises(algomesh.InvalidError) as e:
        ingest.pipe(body).result
    assert e.value.reason == "INVALID_INPUT" and message in e.value.message, e.value.message


def test_the_sample_file_through_the_pipeline(ingest):
    lines = (TWEETS / "tweets.jsonl").read_text(encoding="utf-8")
    tweets = [json.loads(line) for line in lines.splitlines()]
    assert len(tweets) >= 250 and len({t["text"] for t in tweets}) == len(tweets)
    records = ingest.pipe(lines).result["records"]  # JSON lines as text, as a file holds them
    assert [r["id"] for r in records] == [t["id"] for t in tweets]
    assert all(r["fields"]["user"] == t["user"] for r, t in zip(records, tweets))
    labels = {r["sentiment"]["label"] for r in records}
    assert labels == {"positive", "negative", "neutral"}
    by_id = {r["id"]: r for r in records}
    assert all(by_id[i]["sentiment"]["label"] == "neutral" for i in (3, 9, 12))   # notices and plans
    assert by_id[1]["sentiment"]["label"] == "positive" and by_id[11]["sentiment"]["label"] == "negative"


def test_run_script_reads_stdin(mesh):
    tweets = "\n".join(json.dumps({"text": t}) for t, _ in KNOWN)
    env = {**os.environ, "ALGOMESH_API_KEY": mesh.api_key}
    out = subprocess.run([sys.executable, str(TWEETS / "run.py"), "--address", mesh.address, "--no-publish",
                          "--sentiment", "tweets/sentiment/2.*", "-"],
                         input=tweets, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "tweets/lemmatize/1.* -> tweets/sentiment/2.*" in out.stdout
    assert re.search(r"Scored 5 tweets in .* by tweets/sentiment 2\.0\.0:", out.stdout), out.stdout
    counts = dict(re.findall(r"^  (positive|neutral|negative) +(\d+)", out.stdout, re.M))
    assert counts == {"positive": "2", "neutral": "1", "negative": "2"}, out.stdout
    assert re.search(r"algomesh trace [0-9a-f]{32}$", out.stdout.strip()), out.stdout


def test_the_readme_command_runs_the_demo():
    """`bash examples/tweets/demo.sh`: a mesh of its own, the stages published, the sample
    scored with VADER and then with the sentiment stage swapped, the mesh stopped."""
    env = {k: v for k, v in os.environ.items() if k not in ("ALGOMESH_API_KEY", "ALGOMESH_ADDRESS")}
    out = subprocess.run(["bash", str(TWEETS / "demo.sh")], capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    for name, version in [("tweets/sentiment", "1.0.0"), ("tweets/sentiment", "2.0.0"), ("tweets/lemmatize", "1.0.0"),
                          ("tweets/clean", "1.0.0"), ("tweets/ingest", "1.0.0")]:
        assert re.search(rf"^  {re.escape(name)} +{version}  published$", text, re.M), text
    n = len((TWEETS / "tweets.jsonl").read_text(encoding="utf-8").splitlines())
    runs = re.findall(rf"^Scored {n} tweets in .* by (tweets/sentiment \d\.\d\.\d):$", text, re.M)
    assert runs == ["tweets/sentiment 1.0.0", "tweets/sentiment 2.0.0"], text
    counts = re.findall(r"^  (?:positive|neutral|negative) +(\d+)", text, re.M)
    assert len(counts) == 6 and sum(map(int, counts[:3])) == n and sum(map(int, counts[3:])) == n, text
    assert len(re.findall(r"algomesh trace [0-9a-f]{32}$", text, re.M)) == 2
    assert text.rstrip().endswith("Mesh stopped.")
    scratch = re.search(r"algomesh up --data-dir (\S+)/data\)", text).group(1)
    assert not os.path.exists(scratch)
