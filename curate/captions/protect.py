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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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


# the words a caption's language is judged by: runs of letters (any script) with ' ’ - inside them
LANGUAGE_SPLIT = r"[^\p{L}'’-]+"  # RE2 (Arrow)
_EDGE = "'’-"


def english(captions: pa.Array) -> np.ndarray:
    """Which captions are English enough for English word edits, over a whole column: mostly Latin letters, and
    under a third of their words (of 2 letters or more) foreign. A caption with no words (only numbers or codes)
    counts as English: nothing to get wrong; a null one too. Words are split in Arrow and each distinct word is
    judged once (`is_foreign`), so the cost follows the distinct words, not the rows."""
    caps = pc.fill_null(captions.cast(pa.large_string()), "")
    n = len(caps)
    out = np.ones(n, bool)
    if n == 0:
        return out
    for r in np.flatnonzero(~pc.string_is_ascii(caps).to_numpy(zero_copy_only=False)):
        out[r] = latin_share(caps[int(r)].as_py()) >= 0.7  # ASCII letters are all Latin: only these rows
    words = pc.split_pattern_regex(pc.utf8_lower(caps), LANGUAGE_SPLIT)
    row = pc.list_parent_indices(words).to_numpy()
    flat = pc.utf8_trim(pc.list_flatten(words), _EDGE)
    keep = pc.greater(pc.utf8_length(flat), 1).to_numpy(zero_copy_only=False)
    row = row[keep]
    codes = flat.filter(pa.array(keep)).dictionary_encode()
    foreign = np.array([is_foreign(w) for w in codes.dictionary.to_pylist()], bool)
    per_row = np.bincount(row, minlength=n)
    foreign_per_row = np.bincount(row, weights=foreign[codes.indices.to_numpy()], minlength=n)
    return out & ((per_row == 0) | (foreign_per_row * 3 < per_row))


@functools.lru_cache(maxsize=100_000)
def is_english(caption: str) -> bool:
    """`english` of one caption."""
    return bool(english(pa.array([caption], pa.large_string()))[0])
