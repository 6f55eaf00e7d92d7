"""Caption operations from the research, as pure seeded functions of (caption, key, seed).

The random choices of every call come from (seed, key, operation, variant) by hashing, so a caption's result
does not depend on shard order, worker count or what else was processed. RT, CWR, RNA and RC are implemented
once, over whole Arrow columns (curate/captions/batch.py); the functions here apply them to one caption. None of these functions
returns an empty caption for a non-empty one; an empty or null caption is returned as it is.

  paraphrase  replace up to k content words with WordNet synonyms of their most frequent sense (by WordNet's
              sense-tagged counts, across parts of speech; there is no part-of-speech tagger offline); never
              inside what curate/captions/protect.py protects, never in a caption that is not English
  rt          random token addition: insert n random vocabulary words at random positions
  cwr         caption word repetition: insert n words of the caption itself at random positions
  rna         random number addition: insert a number in 0..99,999 at a random position
  rc          random caption replacement: n random vocabulary words (the research's RC: 4 tokens)
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from collections.abc import Callable, Sequence
from typing import Any

import pyarrow as pa

from curate.captions import batch, protect
from curate.config import CAPTION_OPS

OPS = CAPTION_OPS  # declared with recaption's options

# a short stop-word list (nltk's stopwords corpus is not available offline)
STOPWORDS = frozenset("""
a an the and or but if then else of at by for with about against between into through during before after
above below to from up down in out on off over under again further once here there when where why how all any
both each few more most other some such no nor not only own same so than too very s t can will just don should
now is are was were be been being have has had having do does did doing i me my we our you your he him his she
her it its they them their what which who whom this that these those am as until while photo image picture
""".split())

# number words: WordNet's synonyms of "two" are "ii", "2", "deuce"
NUMBER_WORDS = frozenset("""
zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen
eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million billion first
second third fourth fifth dozen half single double triple
""".split())

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*", re.UNICODE)


def rng_for(seed: int, key: str, op: str, variant: int = 0) -> random.Random:
    digest = hashlib.blake2b(f"{seed}\x00{key}\x00{op}\x00{variant}".encode("utf-8", "surrogatepass"),
                             digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def _match_case(template: str, word: str) -> str:
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def synonyms(word: str, wordnet: Any, multiword: bool = False) -> list[str]:  # noqa: ANN401 (nltk reader)
    """Synonyms of `word` in its most frequent WordNet sense, itself excluded (cached per word)."""
    return list(_synonyms(word.lower(), wordnet, multiword))


@functools.lru_cache(maxsize=200_000)
def _is_lemma(lower: str, wordnet: Any) -> bool:  # noqa: ANN401
    return wordnet.morphy(lower) == lower


@functools.lru_cache(maxsize=200_000)
def _synonyms(lower: str, wordnet: Any, multiword: bool) -> tuple[str, ...]:  # noqa: ANN401
    return tuple(_synonyms_uncached(lower, wordnet, multiword))


def _synonyms_uncached(word: str, wordnet: Any, multiword: bool) -> list[str]:  # noqa: ANN401
    lower = word.lower()
    synsets = wordnet.synsets(lower)
    if not synsets:
        return []
    # the most frequent sense across parts of speech: the sense-tagged counts of this word's lemma in each
    # synset (WordNet's cntlist); ties keep WordNet's own order
    def count(synset: Any) -> int:  # noqa: ANN401
        return max((lemma.count() for lemma in synset.lemmas() if lemma.name().lower() == lower), default=0)

    best = max(synsets, key=count)
    out = []
    for lemma in best.lemmas():
        name = lemma.name()
        if name.lower() == lower or (not multiword and ("_" in name or "-" in name)):
            continue
        if not name.replace("_", "").replace("-", "").isalpha():  # "two" -> "2", "II": not a word swap
            continue
        out.append(name.replace("_", " "))
    return sorted(set(out), key=out.index)


def paraphrase(caption: str | None, key: str, seed: int, wordnet: Any, k: int = 2,  # noqa: ANN401
               multiword: bool = False, variant: int = 0) -> str | None:
    """Replace up to k content words by WordNet synonyms; everything else (case, punctuation, spacing) stays."""
    if not caption or not caption.strip() or not protect.is_english(caption):
        return caption
    rng = rng_for(seed, key, "paraphrase", variant)
    kept = protect.spans(caption)  # URLs, entities, numbers, all caps, names and brands, foreign words
    candidates = []
    for m in _WORD.finditer(caption):
        w = m.group(0)
        if len(w) < 3 or w.lower() in STOPWORDS or w.lower() in NUMBER_WORDS or not w.isascii():
            continue
        if protect.covered(kept, m.start(), m.end()):
            continue
        if not _is_lemma(w.lower(), wordnet):  # inflected forms: a lemma's synonym would break agreement
            continue
        syns = synonyms(w, wordnet, multiword)
        if syns:
            candidates.append((m.start(), m.end(), w, syns))
    if not candidates:
        return caption
    chosen = sorted(rng.sample(candidates, min(k, len(candidates))))
    out, last = [], 0
    for start, end, w, syns in chosen:
        out.append(caption[last:start])
        out.append(_match_case(w, rng.choice(syns)))
        last = end
    out.append(caption[last:])
    return "".join(out)


_ARROW: dict[int, tuple[Sequence[str], pa.Array]] = {}


def arrow_vocab(words: Sequence[str]) -> pa.Array:
    """A word list as an Arrow array, converted once per list object (vocabularies hold ~100k words)."""
    if isinstance(words, pa.Array):
        return words
    hit = _ARROW.get(id(words))
    if hit is None or hit[0] is not words:
        hit = (words, pa.array(list(words), pa.large_string()))
        _ARROW[id(words)] = hit  # holds a reference, so the id cannot be reused by another list
    return hit[1]


def _one(fn: Callable[..., pa.Array], caption: str | None, key: str, seed: int, op: str, variant: int,
         *args: Any, **kwargs: Any) -> str | None:  # noqa: ANN401
    """A batch operation (curate/captions/batch.py) on one caption: the same result as in a whole column."""
    stream = batch.streams([key], seed, op, variant)
    return fn(pa.array([caption], pa.string()), stream, *args, **kwargs)[0].as_py()


def rt(caption: str | None, key: str, seed: int, vocab: Sequence[str], n: int = 2, variant: int = 0) -> str | None:
    """Random token addition: n vocabulary words inserted at random positions."""
    return _one(batch.rt, caption, key, seed, "rt", variant, arrow_vocab(vocab), n=n)


def cwr(caption: str | None, key: str, seed: int, n: int = 2, variant: int = 0) -> str | None:
    """Caption word repetition: n of the caption's words inserted again at random positions."""
    return _one(batch.cwr, caption, key, seed, "cwr", variant, n=n)


def rna(caption: str | None, key: str, seed: int, variant: int = 0) -> str | None:
    """Random number addition: a number in 0..99,999 at a random position."""
    return _one(batch.rna, caption, key, seed, "rna", variant)


def rc(caption: str | None, key: str, seed: int, vocab: Sequence[str] = (), n: int = 4,
       variant: int = 0) -> str | None:
    """Random caption replacement: n random vocabulary words instead of the caption (the research's RC)."""
    return _one(batch.rc, caption, key, seed, "rc", variant, arrow_vocab(vocab), n=n)


def apply(op: str, caption: str | None, key: str, seed: int, context: dict[str, Any], variant: int = 0) -> str | None:
    """Run one named operation with its parameters from `context` (wordnet, vocab, n, k, rc_n)."""
    fns: dict[str, Callable[[], str | None]] = {
        "paraphrase": lambda: paraphrase(caption, key, seed, context["wordnet"], k=context.get("k", 2),
                                         multiword=context.get("multiword", False), variant=variant),
        "rt": lambda: rt(caption, key, seed, context["vocab"], n=context.get("n", 2), variant=variant),
        "cwr": lambda: cwr(caption, key, seed, n=context.get("n", 2), variant=variant),
        "rna": lambda: rna(caption, key, seed, variant=variant),
        "rc": lambda: rc(caption, key, seed, context.get("vocab", ()), n=context.get("rc_n", 4), variant=variant),
    }
    if op not in fns:
        raise ValueError(f"unknown caption operation {op!r}; one of {', '.join(OPS)}")
    return fns[op]()
