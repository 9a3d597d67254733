"""tweets/lemmatize: cleaned text -> tokens and their lemmas (simplemma, English); then
piped on to the sentiment stage, whose answer is added to the record.

Input: a record with "clean" (as tweets/clean sends it; its "pipeline" may name the
sentiment stage) or a bare string. Output: the record with "tokens", "lemmas" and
"sentiment" ({"label", "score", ...} plus the "algorithm" and "version" that answered).

Tokens are words (apostrophes inside), runs of ! and ?, and runs of emoji. A negated
contraction is split first, because the lemmatizer would drop its negation
("don't" -> "do"): don't -> do not, can't -> can not, won't -> will not. A word in
capitals keeps them in its lemma (AMAZING -> AMAZING), so emphasis reaches the scorer.
"""
import re

import simplemma

import algomesh

NEXT, DEFAULT = "sentiment", "tweets/sentiment/1.*"

TOKEN = re.compile(r"\w+(?:'\w+)*|[!?]+|[^\w\s!?]+")
NEGATED = {"can't": "can", "won't": "will", "ain't": "is", "shan't": "shall"}  # the others: drop n't

client = None


def load():
    global client
    client = algomesh.client()


def tokenize(text: str) -> list[str]:
    tokens = []
    for tok in TOKEN.findall(text):
        low, shout = tok.lower(), tok.isupper()
        if low in NEGATED or (low.endswith("n't") and len(low) > 3):
            base = NEGATED.get(low, tok[:-3])
            tokens += [base.upper() if shout else base, "NOT" if shout else "not"]
        else:
            tokens.append(tok)
    return tokens


def lemma(token: str) -> str:
    if not token[0].isalnum():
        return token
    out = simplemma.lemmatize(token.lower(), lang="en")
    return out.upper() if token.isupper() and len(token) > 1 else out


def apply(input):
    if isinstance(input, str):
        input = {"clean": input}
    if not isinstance(input, dict) or not isinstance(input.get("clean"), str):
        raise algomesh.InvalidError('tweets/lemmatize takes cleaned text, or an object with a "clean" string')
    tokens = tokenize(input["clean"])
    lemmas = [lemma(t) for t in tokens]
    resp = client.algo(input.get("pipeline", {}).get(NEXT, DEFAULT)).pipe(lemmas)
    scored = resp.result
    meta = resp.metadata
    return {**input, "tokens": tokens, "lemmas": lemmas,
            "sentiment": {**scored, "algorithm": meta.algorithm, "version": meta.version}}
