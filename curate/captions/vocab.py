"""Vocabularies for random insertions: WordNet lemmas, the dataset's own caption words, or CLIP's BPE words."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from curate.errors import CurateError

VOCABS = ("wordnet", "dataset", "clip")
_WORD = re.compile(r"[^\W\d_]{2,}", re.UNICODE)


def dataset_words(captions: Iterable[str | None], min_count: int = 1) -> list[str]:
    """Distinct lower-cased words of the captions (sorted, so the vocabulary is the same in every process)."""
    counts: dict[str, int] = {}
    for c in captions:
        for w in _WORD.findall(c or ""):
            lw = w.lower()
            counts[lw] = counts.get(lw, 0) + 1
    return sorted(w for w, k in counts.items() if k >= min_count)


@functools.cache
def clip_words() -> tuple[str, ...]:
    """Whole-word tokens of the CLIP BPE vocabulary that ships with open_clip (49,408 tokens)."""
    try:
        from open_clip.tokenizer import SimpleTokenizer
    except ImportError:
        raise CurateError("--vocab clip needs open_clip_torch") from None
    enc = SimpleTokenizer().encoder
    return tuple(sorted({t[:-4] for t in enc if t.endswith("</w>") and t[:-4].isalpha() and len(t) > 5}))


def load(name: str, dataset: list[str] | None = None) -> tuple[str, ...]:
    if name == "wordnet":
        from curate.captions.wordnet import single_word_lemmas

        return single_word_lemmas()
    if name == "dataset":
        return tuple(dataset or ())
    if name == "clip":
        return clip_words()
    raise CurateError(f"unknown vocabulary {name!r}; one of {', '.join(VOCABS)}")
