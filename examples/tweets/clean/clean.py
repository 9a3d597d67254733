"""tweets/clean: a tweet's text -> the same, cleaned; then piped on to the lemmatize stage.

Input: a record {"text", ...} (as tweets/ingest sends it; its "pipeline" may name the
lemmatize stage) or a bare string. Output: whatever the rest of the pipeline returns for
the record with "clean" added.

Cleaning: HTML entities decoded; URLs, @mentions and the # of hashtags removed; text
emoticons turned into the emoji they stand for (":)" -> 🙂, so a sentiment stage can read
them after the punctuation is gone); every punctuation mark and symbol removed except
"!" and "?" (they carry sentiment), apostrophes inside words (don't), and emoji
(skin-tone modifiers are dropped);
whitespace collapsed. Case is kept: SHOUTING is a signal for the sentiment stage.
"""
import html
import re
import unicodedata

import algomesh

NEXT, DEFAULT = "lemmatize", "tweets/lemmatize/1.*"

URL = re.compile(r"\b(?:https?://|www\.)\S+", re.IGNORECASE)
MENTION = re.compile(r"(?<!\w)@\w+")
EMOTICONS = {":-)": "🙂", ":)": "🙂", "(:": "🙂", ":-D": "😀", ":D": "😀", ";)": "😉", ";-)": "😉",
             ":-(": "🙁", ":(": "🙁", ":'(": "😢", ":/": "😕", ":-/": "😕", "<3": "❤", "</3": "💔"}
EMOTICON = re.compile("|".join(re.escape(e) for e in sorted(EMOTICONS, key=len, reverse=True)) + r"(?!\w)")
APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'"})
KEEP = {"!", "?", "'"}
SKIN_TONES = {chr(c) for c in range(0x1F3FB, 0x1F400)}

client = None


def load():
    global client
    client = algomesh.client()


def _keep(ch: str) -> bool:
    if ch in KEEP or ch.isspace():
        return True
    cat = unicodedata.category(ch)
    # letters, digits, marks (accents, variation selectors), emoji and other symbols (So),
    # the zero-width joiner and variation selectors that join emoji sequences
    return cat[0] in "LNM" or cat == "So" or ch in "\u200d\ufe0f"


def clean(text: str) -> str:
    text = html.unescape(text).translate(APOSTROPHES)
    text = URL.sub(" ", text)
    text = MENTION.sub(" ", text)
    text = EMOTICON.sub(lambda m: f" {EMOTICONS[m.group(0)]} ", text)
    text = "".join(ch if _keep(ch) else "" if ch in SKIN_TONES else " " for ch in text)
    # an apostrophe survives only inside a word (don't, it's): not as a quote mark
    text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)
    return " ".join(text.split())


def apply(input):
    if isinstance(input, str):
        input = {"text": input}
    if not isinstance(input, dict) or not isinstance(input.get("text"), str):
        raise algomesh.InvalidError('tweets/clean takes a tweet: text, or an object with a "text" string')
    record = {**input, "clean": clean(input["text"])}
    return client.algo(record.get("pipeline", {}).get(NEXT, DEFAULT)).pipe(record).result
