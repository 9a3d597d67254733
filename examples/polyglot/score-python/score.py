"""poly/score-python, stage 4 of examples/polyglot (Python): the record from
poly/normalize-rust in; its normalised tokens scored, piped on to poly/label-java.
Answers with what the rest of the pipeline answers.

The score is VADER's recipe (Hutto & Gilbert, 2014) on a small lexicon written for this
example: each sentiment word has a valence from -4 to +4; a booster word before it
("very", "so") scales it, a negation within the three words before it ("not", "never")
flips and damps it (x -0.74), a word the author SHOUTED (poly/normalize-rust lists them)
counts 0.733 more; each "!" adds 0.292 (up to four); the sum s becomes the compound score
s / sqrt(s^2 + 15), in -1..1.
"""
import math
import os
import sys

import algomesh

NEXT = "poly/label-java"

LEXICON = {
    "love": 3.2, "loved": 2.9, "lovely": 2.8, "like": 2.0, "liked": 1.8, "good": 1.9, "great": 3.1,
    "amazing": 2.8, "awesome": 3.1, "excellent": 3.2, "wonderful": 2.7, "fantastic": 2.6, "brilliant": 2.8,
    "perfect": 2.7, "best": 3.2, "happy": 2.7, "glad": 2.0, "nice": 1.8, "fun": 2.3, "enjoy": 2.2,
    "enjoying": 2.4, "thanks": 1.9, "thank": 1.5, "blessed": 2.9, "beautiful": 2.9, "recommend": 1.5,
    "win": 2.8, "fast": 0.8, "friendly": 2.2, "yay": 2.4, "wow": 2.8, "cool": 1.3, "ok": 0.9, ":)": 2.0,
    ":d": 2.3, ";)": 0.9, ":p": 1.4,
    "hate": -2.7, "hated": -3.2, "awful": -2.0, "terrible": -2.1, "horrible": -2.5, "bad": -2.5,
    "worst": -3.1, "worse": -2.1, "sad": -2.1, "angry": -2.3, "annoying": -1.7, "annoyed": -1.6,
    "slow": -0.7, "broken": -2.1, "fail": -2.5, "failed": -2.3, "boring": -1.3, "disappointed": -1.9,
    "disappointing": -2.2, "poor": -2.1, "rude": -2.0, "ugly": -2.3, "sucks": -1.5, "wrong": -2.1,
    "lost": -1.3, "delayed": -0.9, "cancelled": -1.0, "problem": -1.7, "useless": -1.8, "ruined": -2.4,
    ":(": -1.9,
}
BOOSTERS = {"very": 0.293, "so": 0.293, "really": 0.293, "extremely": 0.293, "super": 0.293, "totally": 0.293,
            "absolutely": 0.293, "incredibly": 0.293, "soo": 0.293, "quite": -0.293, "slightly": -0.293,
            "kinda": -0.293, "barely": -0.293, "somewhat": -0.293}
NEGATIONS = {"not", "no", "never", "don't", "doesn't", "didn't", "isn't", "wasn't", "aren't", "can't", "won't",
             "cannot", "nothing", "nobody", "without", "neither", "nor"}
CAPS = 0.733
NEGATE = -0.74
EXCLAIM = 0.292
ALPHA = 15


def score(tokens: list[str], shouted: set[str]) -> tuple[float, list[list]]:
    """(compound, hits): hits are [token, valence as counted]."""
    total, hits = 0.0, []
    for i, token in enumerate(tokens):
        if token not in LEXICON:
            continue
        valence = LEXICON[token]
        if token in shouted:
            valence += math.copysign(CAPS, valence)
        for back, before in enumerate(reversed(tokens[max(0, i - 3):i])):
            if before in BOOSTERS:  # the further back, the weaker
                valence += math.copysign(BOOSTERS[before], valence) * (1, 0.95, 0.9)[back]
            if before in NEGATIONS:
                valence *= NEGATE
        total += valence
        hits.append([token, round(valence, 3)])
    if total:
        bangs = min(sum(t.count("!") for t in tokens), 4)
        total += math.copysign(bangs * EXCLAIM, total)
    compound = total / math.sqrt(total * total + ALPHA)
    return round(compound, 4), hits


def apply(record):
    if not isinstance(record, dict) or not isinstance(record.get("normalized"), list):
        raise TypeError("poly/score-python takes the record of poly/normalize-rust (JSON with \"normalized\" tokens)")
    compound, hits = score(record["normalized"], set(record.get("shouted", [])))
    record["compound"] = compound
    record["hits"] = hits
    record.setdefault("stages", []).append(
        f"{os.environ['ALGOMESH_ALGORITHM']}@{os.environ['ALGOMESH_VERSION']} (python {sys.version.split()[0]})")
    # An error of a later stage is raised here as it came, and answered as it came.
    return algomesh.client().algo(NEXT).pipe(record).result
