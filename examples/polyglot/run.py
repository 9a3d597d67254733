"""The polyglot pipeline: seven stages in seven languages, piping from inside the algorithms.

    python examples/polyglot/run.py [--address HOST:PORT] [TEXT ...]

Publishes the seven stages into a running mesh ($ALGOMESH_ADDRESS or localhost:7700, with
the key in $ALGOMESH_API_KEY; each compiled stage's build step runs at publish time), then
calls the first one with a few texts (or the ones given) and prints each result and its
trace id, one record in full, the waterfall of its trace (one trace through all seven
stages), and what a text with no words left does (an error raised by the last stage,
reaching this client through the six before it). `bash examples/polyglot/demo.sh` sets
everything up and runs this against a mesh of its own.

    poly/clean-node        Node.js  strips URLs, @mentions, # signs, HTML entities
    poly/tokenize-go       Go       words, emoticons, runs of ! and ?
    poly/normalize-rust    Rust     lower case, "soooo" -> "soo", "gr8" -> "great", notes SHOUTING
    poly/score-python      Python   VADER-style lexicon score, compound in -1..1
    poly/label-java        Java     positive / negative / neutral, strength, keywords
    poly/fingerprint-exec  bash     id = SHA-256 of the normalised words (exec runner, jq)
    poly/format-cpp        C++      the final record and its one-line summary

Each stage's manifest lets it call only the next one.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import algomesh

HERE = Path(__file__).resolve().parent

# In pipeline order: (folder, name).
STAGES = [
    ("clean-node", "poly/clean-node"),
    ("tokenize-go", "poly/tokenize-go"),
    ("normalize-rust", "poly/normalize-rust"),
    ("score-python", "poly/score-python"),
    ("label-java", "poly/label-java"),
    ("fingerprint-exec", "poly/fingerprint-exec"),
    ("format-cpp", "poly/format-cpp"),
]
FIRST = STAGES[0][1]
# What each stage adds to the record, in the same order.
PARTS = [["clean", "removed"], ["tokens"], ["normalized", "rewrites", "shouted"], ["compound", "hits"],
         ["label", "strength", "keywords"], ["id"], ["summary"]]

TEXTS = [
    "I LOVE this!!! http://x.co @bob #blessed gr8 day",
    "Worst. Service. Ever. Waited 2 hours &amp; they were sooooo rude :( https://t.co/x1",
    "Meeting moved to 3pm, room 4B #planning",
    "The new update is not bad at all, really enjoying the faster search",
]
NO_WORDS = "@bob http://x.co"

# Spans of one call through the pipeline: the ingress's, then per stage its sidecar's and
# its runner's apply, and between stages the caller's pipe.
SPANS = 1 + 2 * len(STAGES) + len(STAGES) - 1


def publish(client: algomesh.Client) -> None:
    for folder, name in STAGES:
        t0 = time.perf_counter()
        r = client.publish(HERE / folder)
        took = time.perf_counter() - t0
        note = f"built and published in {took:.1f} s" if r.created else "already published"
        print(f"  {name:<22} {r.version.manifest.version}  {r.version.manifest.runtime:<5} {note}")


def wait_for_trace(client: algomesh.Client, trace_id: str, spans: int, timeout: float = 15.0):
    """The trace once the control plane holds ``spans`` spans of it (each process sends its
    own in batches), or what it holds at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            trace = client.trace(trace_id)
            if len(trace.spans) >= spans or time.monotonic() > deadline:
                return trace
        except algomesh.NotFoundError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--address", default=os.environ.get("ALGOMESH_ADDRESS", "localhost:7700"))
    p.add_argument("texts", nargs="*", help=f"texts to send (default: {len(TEXTS)} examples)")
    a = p.parse_args()
    texts = a.texts or TEXTS

    with algomesh.client(address=a.address) as client:
        print(f"Publishing the seven stages into {a.address} (compiled ones build now):")
        publish(client)

        first = client.algo(FIRST)
        print(f"\nCalling {FIRST}, which pipes through all seven stages:")
        print("(the first call cold-starts the stages; later calls are warm)\n")
        records = []
        for text in texts:
            t0 = time.perf_counter()
            resp = first.pipe(text)
            record = resp.result
            ms = (time.perf_counter() - t0) * 1000
            records.append((record, resp.metadata.trace_id))
            print(f"  {record['summary']}")
            print(f"      {json.dumps(text, ensure_ascii=False)}")
            print(f"      id {record['id']}  trace {resp.metadata.trace_id}  {ms:.0f} ms\n")

        record = records[0][0]
        print("The first record in full, by the stage that added each part:")
        print(f"  {'(the input)':<22} {'text':<10} {json.dumps(record['text'], ensure_ascii=False)}")
        for (_, name), fields in zip(STAGES, PARTS):
            for i, field in enumerate(fields):
                print(f"  {name if i == 0 else '':<22} {field:<10} {json.dumps(record[field], ensure_ascii=False)}")
        print(f"  {'(every stage)':<22} {'stages':<10} {record['stages'][0]}")
        for stage in record["stages"][1:]:
            print(f"  {'':<33} {stage}")

        trace_id = records[-1][1]   # a warm call's: the first call's holds the stages' starts too
        trace = wait_for_trace(client, trace_id, SPANS)
        print(f"\nThe last call's trace: {len(trace.spans)} spans, one trace through every stage "
              f"(algomesh trace {trace_id}):")
        out = subprocess.run([sys.executable, "-m", "algomesh.cli", "--address", a.address, "trace", trace_id],
                             capture_output=True, text=True, timeout=60)
        print(out.stdout if out.returncode == 0 else out.stderr)

        print(f"A text with no words left after cleaning, {json.dumps(NO_WORDS)}: the last stage refuses it,")
        print("and its error comes back through the six stages before it:")
        try:
            first.pipe(NO_WORDS).result
            raise SystemExit("  ... but it was answered; the pipeline should have refused it")
        except algomesh.AlgorithmError as e:
            trace = wait_for_trace(client, e.metadata["trace_id"], SPANS)
            failed = [s.name.removeprefix("apply ") for s in trace.spans if s.error and s.name.startswith("apply ")]
            deepest = max(failed, key=lambda name: [n for _, n in STAGES].index(name.split("@")[0]))
            print(f"  {e.reason} ({e.error_type}) raised by {deepest}: {e.message}")
            print(f"  trace {e.metadata['trace_id']}; its stack trace starts:")
            for line in e.stacktrace.strip().splitlines()[:3]:
                print(f"    {line}")


if __name__ == "__main__":
    main()
