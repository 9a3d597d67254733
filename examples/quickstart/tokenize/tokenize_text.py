"""demo/tokenize: text -> list of tokens ("!" and "?" stand alone; contractions stay whole)."""
import re

TOKEN = re.compile(r"[\w']+|[!?]")


def apply(input):
    if not isinstance(input, str):
        raise TypeError(f"demo/tokenize takes text, not {type(input).__name__}")
    return TOKEN.findall(input.lower())
