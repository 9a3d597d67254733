"""tweets/ingest: tweets in, scored records out.

Input, any of:
  - text: JSON lines, one tweet a line: an object with "text" (and optionally "id"; other
    fields are kept under "fields"), or a bare JSON string; blank lines are skipped;
  - a JSON list of such tweets;
  - a JSON object {"tweets": <either of the above>, "pipeline": {"clean": REF,
    "lemmatize": REF, "sentiment": REF}}, where each REF (owner/name[/version]) picks the
    algorithm for that stage. Missing stages keep their defaults (PIPELINE below).

Each tweet goes to the clean stage as a record {"id", "text", "pipeline"}; clean pipes it
to lemmatize, lemmatize to sentiment, and the finished record comes back up the chain.
Up to WINDOW tweets are in the pipeline at once (algo.map).
Output: {"records": [...], "pipeline": {...}}.
A tweet that cannot be read is INVALID_INPUT naming its line.
"""
import json

import algomesh

# The default pipeline; a request's "pipeline" overrides any of it.
PIPELINE = {"clean": "tweets/clean/1.*", "lemmatize": "tweets/lemmatize/1.*", "sentiment": "tweets/sentiment/1.*"}
WINDOW = 16  # tweets in flight at once (well under each stage's max_in_flight)

client = None


def load():
    global client
    client = algomesh.client()


def _tweet(item, where: str) -> dict:
    if isinstance(item, str):
        return {"text": item}
    if not isinstance(item, dict):
        raise algomesh.InvalidError(f"{where}: a tweet is an object with \"text\" or a string, not {type(item).__name__}")
    text = item.get("text")
    if not isinstance(text, str):
        raise algomesh.InvalidError(f"{where}: no \"text\" string in {json.dumps(item)[:80]}")
    record = {"text": text}
    if "id" in item:
        record["id"] = item["id"]
    fields = {k: v for k, v in item.items() if k not in ("id", "text")}
    if fields:
        record["fields"] = fields
    return record


def read_tweets(source) -> list[dict]:
    """Tweets from JSON-lines text or a JSON list, each numbered by where it came from."""
    if isinstance(source, list):
        return [_tweet(item, f"tweet {i}") for i, item in enumerate(source)]
    if not isinstance(source, str):
        raise algomesh.InvalidError(f"tweets are JSON lines (text) or a JSON list, not {type(source).__name__}")
    tweets = []
    for n, line in enumerate(source.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as e:
            raise algomesh.InvalidError(f"line {n}: not JSON ({e.msg}): {line[:80]}") from None
        tweets.append(_tweet(item, f"line {n}"))
    return tweets


def pipeline_of(asked) -> dict:
    if asked is None:
        return dict(PIPELINE)
    if not isinstance(asked, dict) or not all(isinstance(v, str) and v for v in asked.values()):
        raise algomesh.InvalidError('"pipeline" is an object of stage -> "owner/name[/version]"')
    unknown = sorted(set(asked) - set(PIPELINE))
    if unknown:
        raise algomesh.InvalidError(f"unknown pipeline stage {unknown[0]!r}; the stages are {', '.join(PIPELINE)}")
    return {**PIPELINE, **asked}


def apply(input):
    if isinstance(input, dict):
        if "tweets" not in input:
            raise algomesh.InvalidError('a JSON object needs "tweets" (JSON lines or a list)')
        extra = sorted(set(input) - {"tweets", "pipeline"})
        if extra:
            raise algomesh.InvalidError(f'unknown field {extra[0]!r}: the fields are "tweets" and "pipeline"')
        tweets, pipeline = read_tweets(input["tweets"]), pipeline_of(input.get("pipeline"))
    else:
        tweets, pipeline = read_tweets(input), dict(PIPELINE)

    for i, tweet in enumerate(tweets):
        tweet.setdefault("id", i + 1)
        tweet["pipeline"] = pipeline
    # At most WINDOW tweets in the pipeline at once; responses come back in input order,
    # and a tweet that fails raises its own typed error here.
    records = [resp.result for resp in client.algo(pipeline["clean"]).map(tweets, concurrency=WINDOW)]
    for record in records:
        record.pop("pipeline", None)
    return {"records": records, "pipeline": pipeline}
