"""demo/clean: normalise a tweet, then pipe it to demo/tokenize from inside the algorithm."""
import re

import algomesh

URL = re.compile(r"https?://\S+|www\.\S+")
MENTION = re.compile(r"@\w+")
# Keep letters, digits, apostrophes and the few marks sentiment cares about (! and ?).
NOISE = re.compile(r"[^\w\s'!?]+")
SPACE = re.compile(r"\s+")

client = None


def load():
    global client
    client = algomesh.client()  # inside an algorithm: its own sidecar, no configuration


def clean(text: str) -> str:
    text = URL.sub(" ", text)
    text = MENTION.sub(" ", text)
    text = text.replace("#", " ")
    text = NOISE.sub(" ", text)
    return SPACE.sub(" ", text).strip().lower()


def apply(input):
    if not isinstance(input, str):
        raise TypeError(f"demo/clean takes a tweet as text, not {type(input).__name__}")
    return client.algo("demo/tokenize").pipe(clean(input)).result
