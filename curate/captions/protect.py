"""What word-level caption edits must leave alone: URLs, e-mail addresses, HTML entities, numbers and words glued
to digits, all-caps tokens, names and brands (runs of capitalised words, and capitalised words away from a
sentence start: in a caption in Title Case, that is every capitalised word), words that belong to another
language, and whole captions that are not English.

Language is judged with wordfreq's frequency lists (the package behind `--vocab common`): a word is foreign when
another language uses it much more often than English does and English rarely does; a caption is not English
when enough of its words are foreign or most of its letters are outside the Latin script.
"""

from __future__ import annotations

import functools
import re
import unicodedata

URL = re.compile(r"(?:https?://|ftp://|www\.)\S+|\S+\.(?:com|org|net|de|fr|co\.uk|io|html?|jpe?g|png)\b\S*",
                 re.IGNORECASE)
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
ENTITY = re.compile(r"&(?:#\d+|#x[0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")
WITH_DIGIT = re.compile(r"\S*\d\S*")  # 2019, 13oct, i6, 3-pack, 1/2: numbers and words glued to them
TOKEN = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*", re.UNICODE)
OTHER_LANGUAGES = ("fr", "de", "es", "it", "pt", "nl", "pl", "sv", "tr", "id")


def spans(caption: str) -> list[tuple[int, int]]:
    """Character spans of `caption` no word-level edit may touch, merged and sorted."""
    found = [m.span() for pattern in (URL, EMAIL, ENTITY, WITH_DIGIT) for m in pattern.finditer(caption)]
    words = list(TOKEN.finditer(caption))
    for i, w in enumerate(words):
        text = w.group(0)
        if len(text) > 1 and text.isupper():  # HASBRO, USA, NASA
            found.append(w.span())
        elif text[:1].isupper() and _in_title_run(words, i, caption):
            found.append(w.span())
        elif is_foreign(text):
            found.append(w.span())
    merged: list[tuple[int, int]] = []
    for start, end in sorted(found):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _in_title_run(words: list[re.Match], i: int, caption: str) -> bool:
    """A capitalised word that is a name or brand: next to another capitalised word (Rick and Morty, Vietnam War,
    Extra Virgin Olive Oil), or capitalised away from a sentence start."""
    def titled(j: int) -> bool:
        return 0 <= j < len(words) and words[j].group(0)[:1].isupper()

    if titled(i - 1) or titled(i + 1):
        return True
    before = caption[: words[i].start()].rstrip()
    sentence_start = not before or before[-1] in ".!?:;|-–—\"'(["
    return not sentence_start


def covered(span_list: list[tuple[int, int]], start: int, end: int) -> bool:
    """Does [start, end) overlap one of the protected spans?"""
    return any(s < end and start < e for s, e in span_list)


@functools.lru_cache(maxsize=200_000)
def is_foreign(word: str) -> bool:
    """A word that another language uses far more often than English, and English seldom (chemise, homme, und)."""
    from wordfreq import zipf_frequency

    lower = word.lower()
    english = zipf_frequency(lower, "en")
    if english >= 4.0:
        return False
    other = max(zipf_frequency(lower, lang) for lang in OTHER_LANGUAGES)
    return other - english >= 1.5


def latin_share(caption: str) -> float:
    letters = [ch for ch in caption if ch.isalpha()]
    if not letters:
        return 1.0
    return sum("LATIN" in unicodedata.name(ch, "") for ch in letters) / len(letters)


@functools.lru_cache(maxsize=100_000)
def is_english(caption: str) -> bool:
    """Is the caption English enough for English word edits? Mostly Latin letters, and under a third of its
    words foreign (a caption with no words, only numbers or codes, counts as English: nothing to get wrong)."""
    if latin_share(caption) < 0.7:
        return False
    words = [w.group(0) for w in TOKEN.finditer(caption) if len(w.group(0)) > 1]
    if not words:
        return True
    foreign = sum(is_foreign(w) for w in words)
    return foreign / len(words) < 1 / 3
