"""demo/sentiment: tokens -> {"label", "score", "hits"}.

A small lexicon scorer, written for this example (the tweet pipeline in examples/tweets
swaps in VADER). Negators flip the next sentiment word; intensifiers scale it; each "!"
strengthens the overall score a little.
"""
LEXICON = {
    "love": 3, "loved": 3, "loving": 3, "great": 3, "awesome": 4, "amazing": 4, "excellent": 4,
    "good": 2, "nice": 2, "happy": 3, "glad": 2, "fun": 2, "best": 3, "beautiful": 3, "lovely": 3,
    "win": 2, "won": 2, "thanks": 2, "thank": 2, "like": 1, "liked": 1, "enjoy": 2, "enjoyed": 2,
    "fast": 1, "friendly": 2, "perfect": 4, "brilliant": 4, "fantastic": 4, "recommend": 2,
    "hate": -3, "hated": -3, "awful": -4, "terrible": -4, "horrible": -4, "bad": -2, "worst": -4,
    "sad": -2, "angry": -3, "annoying": -2, "slow": -1, "broken": -2, "fail": -2, "failed": -2,
    "boring": -2, "disappointed": -3, "disappointing": -3, "poor": -2, "rude": -3, "late": -1,
    "cancelled": -2, "delayed": -1, "ugly": -3, "sucks": -3, "wrong": -2, "lost": -2,
}
NEGATORS = {"not", "no", "never", "don't", "doesn't", "didn't", "isn't", "wasn't", "can't", "won't", "nothing"}
INTENSIFIERS = {"very": 1.5, "really": 1.5, "so": 1.3, "extremely": 2.0, "super": 1.5, "totally": 1.4}


def apply(input):
    if not isinstance(input, list) or not all(isinstance(t, str) for t in input):
        raise TypeError("demo/sentiment takes a list of tokens (pipe text through demo/clean first)")
    score, hits, flip, boost = 0.0, [], False, 1.0
    for token in input:
        if token in NEGATORS:
            flip = True
            continue
        if token in INTENSIFIERS:
            boost *= INTENSIFIERS[token]
            continue
        if token in LEXICON:
            value = LEXICON[token] * boost * (-1 if flip else 1)
            score += value
            hits.append([token, round(value, 2)])
        flip, boost = False, 1.0
    score *= 1 + 0.1 * min(input.count("!"), 3)
    label = "positive" if score >= 1 else "negative" if score <= -1 else "neutral"
    return {"label": label, "score": round(score, 2), "hits": hits}
