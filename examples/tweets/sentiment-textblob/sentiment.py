"""tweets/sentiment 2.0.0: TextBlob's PatternAnalyzer (textblob; its lexicon ships inside
the wheel, and this analyzer needs no NLTK corpus, so it works offline).

A different lexicon approach from VADER's (1.x): the pattern library's lexicon of about
2,900 mostly adjectives, each with a polarity, subjectivity and intensity, averaged over
the text with negation ("not good") and intensifiers ("very good") applied. It knows no
emoji, no SHOUTING and no "!".

Input: a list of tokens (tweets/lemmatize's lemmas) or a text. Output: {"label", "score",
"subjectivity"}: score is the polarity in -1..1; the label is positive at 0.05 and above,
negative at -0.05 and below, neutral between.
"""
from textblob.en.sentiments import PatternAnalyzer

import algomesh

THRESHOLD = 0.05


def load():
    return PatternAnalyzer()


def text_of(input) -> str:
    if isinstance(input, str):
        return input
    if isinstance(input, list) and all(isinstance(t, str) for t in input):
        return " ".join(input)
    raise algomesh.InvalidError("tweets/sentiment takes a text or a list of tokens")


def apply(input, analyzer):
    s = analyzer.analyze(text_of(input).lower())
    score = round(s.polarity, 4)
    label = "positive" if score >= THRESHOLD else "negative" if score <= -THRESHOLD else "neutral"
    return {"label": label, "score": score, "subjectivity": round(s.subjectivity, 4)}
