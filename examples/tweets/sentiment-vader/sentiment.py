"""tweets/sentiment 1.0.0: VADER (vaderSentiment; its lexicons ship inside the wheel).

Input: a list of tokens (tweets/lemmatize's lemmas) or a text. Output: {"label", "score",
"pos", "neu", "neg"}: score is VADER's compound in -1..1; the label is positive at 0.05
and above, negative at -0.05 and below, neutral between (VADER's own thresholds).
"""
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

import algomesh

THRESHOLD = 0.05


def load():
    return SentimentIntensityAnalyzer()


def text_of(input) -> str:
    if isinstance(input, str):
        return input
    if isinstance(input, list) and all(isinstance(t, str) for t in input):
        return " ".join(input)
    raise algomesh.InvalidError("tweets/sentiment takes a text or a list of tokens")


def apply(input, analyzer):
    s = analyzer.polarity_scores(text_of(input))
    score = s["compound"]
    label = "positive" if score >= THRESHOLD else "negative" if score <= -THRESHOLD else "neutral"
    return {"label": label, "score": score, "pos": s["pos"], "neu": s["neu"], "neg": s["neg"]}
