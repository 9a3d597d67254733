"""The tweet sentiment pipeline: ingest -> clean -> lemmatize (simplemma) -> sentiment.

    python examples/tweets/run.py [--address HOST:PORT] [--sentiment REF] [--lemmatize REF] [FILE | -]

Publishes the stages into a running mesh ($ALGOMESH_ADDRESS or localhost:7700, with the
key in $ALGOMESH_API_KEY), sends the tweets of FILE (JSON lines, one {"text": ...} a line;
default: the 300 sample tweets in tweets.jsonl; "-" reads stdin) to tweets/ingest in
batches, and prints the count per label, a few examples, which sentiment algorithm
answered, and one call's trace id. `bash examples/tweets/demo.sh` sets everything up and
runs this against a mesh of its own, once with each sentiment algorithm.

Every stage pipes to the next from inside the algorithm, and may call only that one:

    tweets/ingest        reads the JSON lines, sends each tweet on (16 at a time)
    tweets/clean         URLs, @mentions, # signs, punctuation (not ! ?), whitespace; :) -> 🙂
    tweets/lemmatize     tokens and simplemma lemmas (running -> run, don't -> do not)
    tweets/sentiment     1.0.0 VADER (vaderSentiment) | 2.0.0 TextBlob's pattern lexicon

Which algorithm serves each stage is named in ONE place, PIPELINE below; a stage is
swapped by changing its name or version there (or with --sentiment / --lemmatize), with
nothing republished: PIPELINE travels with the tweets and each stage pipes to what it names.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import algomesh

HERE = Path(__file__).resolve().parent

# The pipeline: stage -> algorithm (owner/name[/version]). Swap a stage here.
PIPELINE = {
    "clean": "tweets/clean/1.*",
    "lemmatize": "tweets/lemmatize/1.*",
    "sentiment": "tweets/sentiment/1.*",  # 2.* for TextBlob's pattern lexicon instead of VADER
}
FOLDERS = ["sentiment-vader", "sentiment-textblob", "lemmatize", "clean", "ingest"]
INGEST = "tweets/ingest/1.*"
BATCH = 100  # tweets per call to tweets/ingest


def publish(client: algomesh.Client) -> None:
    for folder in FOLDERS:
        r = client.publish(HERE / folder)
        m = r.version.manifest
        print(f"  {m.name:<18} {m.version}  {'published' if r.created else 'already published'}")


def batches(lines: list[str], size: int) -> list[str]:
    lines = [line for line in lines if line.strip()]
    return ["\n".join(lines[i:i + size]) for i in range(0, len(lines), size)]


def score(client: algomesh.Client, source: str, pipeline: dict, batch: int) -> tuple[list[dict], str, float]:
    """Every record, the trace id of the first batch's call, and the seconds it all took."""
    ingest = client.algo(INGEST).set_options(timeout=300)
    t0 = time.perf_counter()
    # Two batches in the pipeline at once (a progress line on a terminal), answers in order.
    calls = ingest.map([{"tweets": chunk, "pipeline": pipeline} for chunk in batches(source.splitlines(), batch)],
                       concurrency=2)
    records = [r for call in calls for r in call.result["records"]]
    return records, (calls[0].metadata.trace_id if calls else ""), time.perf_counter() - t0


def summary(records: list[dict], trace_id: str, took: float) -> None:
    counts = Counter(r["sentiment"]["label"] for r in records)
    answered = Counter(f'{r["sentiment"]["algorithm"]} {r["sentiment"]["version"]}' for r in records)
    print(f"\nScored {len(records)} tweets in {took:.1f} s ({len(records) / took:.0f} tweets/s), "
          f"by {', '.join(answered)}:")
    for label in ("positive", "neutral", "negative"):
        n = counts.get(label, 0)
        print(f"  {label:<9} {n:4d}  {'█' * round(40 * n / max(len(records), 1))}")
    print("\nA few of them:")
    shown: Counter = Counter()
    for r in records:
        label = r["sentiment"]["label"]
        if shown[label] < 2:
            shown[label] += 1
            print(f"  {label:>8} {r['sentiment']['score']:+.2f}  {json.dumps(r['text'], ensure_ascii=False)}")
            print(f"  {'':>8} {'lemmas':>5}  {' '.join(r['lemmas'])}")
    print(f"\nOne call's trace (its batch through every stage): algomesh trace {trace_id}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("file", nargs="?", default=str(HERE / "tweets.jsonl"), help='JSON lines of tweets; "-" for stdin')
    p.add_argument("--address", default=os.environ.get("ALGOMESH_ADDRESS", "localhost:7700"))
    p.add_argument("--sentiment", help=f"the sentiment stage (default {PIPELINE['sentiment']})")
    p.add_argument("--lemmatize", help=f"the lemmatize stage (default {PIPELINE['lemmatize']})")
    p.add_argument("--batch", type=int, default=BATCH, help=f"tweets per call (default {BATCH})")
    p.add_argument("--no-publish", action="store_true", help="the stages are published already")
    a = p.parse_args()
    pipeline = {**PIPELINE, **{k: v for k, v in (("sentiment", a.sentiment), ("lemmatize", a.lemmatize)) if v}}
    source = sys.stdin.read() if a.file == "-" else Path(a.file).read_text(encoding="utf-8")

    with algomesh.client(address=a.address) as client:
        if not a.no_publish:
            print(f"Publishing the stages into {a.address}:")
            publish(client)
        print("\nPipeline: tweets/ingest -> " + " -> ".join(pipeline.values()))
        try:
            records, trace_id, took = score(client, source, pipeline, max(a.batch, 1))
        except algomesh.InvalidError as e:
            raise SystemExit(f"{e.reason}: {e.message}") from None
        if not records:
            raise SystemExit("no tweets in the input")
        summary(records, trace_id, took)


if __name__ == "__main__":
    main()
