"""Vocabularies for random insertions (rt, rc; train's and audit's RT): common English words, WordNet lemmas,
the dataset's own caption words, or CLIP's BPE words; every one without the words of an offensive-word list.

- `common` (the default): the most frequent English words by `wordfreq` (its data ships in the wheel), letters
  only, 3 letters or more: what a caption's noise words should look like.
- The blocklist is `better-profanity`'s maintained word list (one entry a line; single-word entries are the
  ones an insertion could draw). WordNet's lemmas alone put slurs into 14 of 10,000 real captions.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from pathlib import Path

from curate.errors import CurateError

VOCABS = ("common", "wordnet", "dataset", "clip")
COMMON_WORDS = 20_000
_WORD = re.compile(r"[^\W\d_]{2,}", re.UNICODE)


@functools.cache
def blocklist() -> frozenset[str]:
    """Lower-cased entries of better-profanity's word list."""
    try:
        import better_profanity
    except ImportError:
        raise CurateError("caption vocabularies need better-profanity (pip install better-profanity)") from None
    path = Path(better_profanity.__file__).with_name("profanity_wordlist.txt")
    return frozenset(ln.strip().lower() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip())


def clean(words: Iterable[str]) -> tuple[str, ...]:
    """`words` without the blocklist's (compared lower-cased), in their order."""
    bad = blocklist()
    return tuple(w for w in words if w.lower() not in bad)


@functools.cache
def common_words(n: int = COMMON_WORDS) -> tuple[str, ...]:
    """The n most frequent English words (wordfreq), letters only, at least 3 of them, blocklist removed."""
    try:
        import wordfreq
    except ImportError:
        raise CurateError("--vocab common needs wordfreq (pip install wordfreq)") from None
    return clean(w for w in wordfreq.top_n_list("en", n) if len(w) >= 3 and w.isascii() and w.isalpha())


def dataset_words(captions: Iterable[str | None], min_count: int = 1) -> list[str]:
    """Distinct lower-cased words of the captions (sorted, so the vocabulary is the same in every process),
    blocklist removed."""
    counts: dict[str, int] = {}
    for c in captions:
        for w in _WORD.findall(c or ""):
            lw = w.lower()
            counts[lw] = counts.get(lw, 0) + 1
    return list(clean(sorted(w for w, k in counts.items() if k >= min_count)))


@functools.cache
def clip_words() -> tuple[str, ...]:
    """Whole-word tokens of the CLIP BPE vocabulary that ships with open_clip (49,408 tokens)."""
    try:
        from open_clip.tokenizer import SimpleTokenizer
    except ImportError:
        raise CurateError("--vocab clip needs open_clip_torch") from None
    enc = SimpleTokenizer().encoder
    return clean(sorted({t[:-4] for t in enc if t.endswith("</w>") and t[:-4].isalpha() and len(t) > 5}))


@functools.cache
def _wordnet_words() -> tuple[str, ...]:
    from curate.captions.wordnet import single_word_lemmas

    return clean(single_word_lemmas())


def load(name: str, dataset: list[str] | None = None) -> tuple[str, ...]:
    """A vocabulary by name, blocklist removed."""
    if name == "common":
        return common_words()
    if name == "wordnet":
        return _wordnet_words()
    if name == "dataset":
        return clean(dataset or ())
    if name == "clip":
        return clip_words()
    raise CurateError(f"unknown vocabulary {name!r}; one of {', '.join(VOCABS)}")
