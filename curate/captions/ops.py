"""Caption operations from the research, as pure seeded functions of (caption, key, seed).

The random choices of every call come from (seed, key, operation, variant) by hashing, so a caption's result
does not depend on shard order, worker count or what else was processed. RT, CWR, RNA and RC are implemented
once, over whole Arrow columns (curate/captions/batch.py); the functions here apply them to one caption. None of these functions
returns an empty caption for a non-empty one; an empty or null caption is returned as it is.

  paraphrase  replace up to k words with WordNet synonyms, only where WordNet's sense-tagged counts make the
              word's meaning and part of speech nearly certain (no tagger is offline) and the synonym is a
              common word whose own commonest sense is the same; never inside what curate/captions/protect.py
              protects, never in a caption that is not English. Safe and narrow: it changes about 1% of real
              LAION captions (docs/stages/recaption.md has the hand labels)
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


def synonyms(word: str, wordnet: Any, multiword: bool = False) -> list[str]:  # noqa: ANN401 (nltk reader)
    """The synonyms paraphrase may put in place of `word` (see `_synonyms_uncached`), cached per word."""
    return list(_synonyms(word.lower(), wordnet, multiword)[1])


@functools.lru_cache(maxsize=200_000)
def _is_lemma(lower: str, wordnet: Any) -> bool:  # noqa: ANN401
    return wordnet.morphy(lower) == lower


@functools.lru_cache(maxsize=200_000)
def _synonyms(lower: str, wordnet: Any, multiword: bool) -> tuple[str, tuple[str, ...]]:  # noqa: ANN401
    """(part of speech of the sense, its synonyms)."""
    pos, syns = _synonyms_uncached(lower, wordnet, multiword)
    return pos, tuple(syns)


# how sure the choice must be, from WordNet's sense-tagged counts (cntlist): there is no part-of-speech tagger
# offline, so a word is replaced only where its commonest reading is nearly certain
SENSE_SHARE = 0.5  # the chosen sense's share of all the word's tagged uses, any part of speech
POS_SHARE = 0.9  # the share of the sense's part of speech (noun or adjective) among them
MIN_COUNT = 10  # tagged uses of the word, at least
SYNONYM_SHARE = 0.6  # the synonym's own commonest sense is the same one, with this share of its uses
SYNONYM_MIN_COUNT = 5
SYNONYM_ZIPF = 3.3  # wordfreq: the synonym is a common word, and at most 10x rarer than the word
_POS = {"n": "noun", "a": "adj", "s": "adj", "v": "verb", "r": "adv"}
# words whose commonest reading the counts get wrong in captions ("a little tangy"), and colours, whose WordNet
# synonyms are other colours ("red" -> "carmine")
KEEP_WORDS = frozenset("""
little lot bit kind sort lots plenty red orange yellow green blue purple violet pink brown black white grey gray
gold silver beige navy teal maroon cream ivory tan
""".split())


# What the rules above give for wordfreq's 20,000 commonest English words is 103 words; each pair was read by
# hand, and these read wrong in a caption (another meaning, register or grammar: "50 percent" -> "50
# percentage", "someone holding" -> "person holding", "art style" -> "art manner"), so they are never made
STRUCK = frozenset("""
government>authorities authorities>government thought>idea idea>thought hour>hr minute>min gram>gm gram>g
technology>engineering earth>globe district>territory funny>comic manager>director older>elderly
finding>determination determination>finding faith>religion animal>beast creature>beast marketing>selling
fellow>lad strategy>scheme scheme>strategy confidence>assurance existence>being advertising>ad
neighborhood>locality philosophy>doctrine settlement>colony curious>peculiar curious>queer peculiar>queer
plain>apparent plain>evident fundamental>central engagement>battle remarkable>singular examination>scrutiny
leaf>foliage striking>spectacular dealer>trader companion>comrade comrade>companion papa>pa
conception>concept commission>committee committee>commission style>manner style>mode mode>manner mode>style
manner>mode manner>style motive>motivation percent>percentage percentage>percent someone>person
person>someone theme>topic process>procedure country>nation purpose>intention huge>vast enormous>tremendous
""".split())


def _uses(lemma: str, wordnet: Any) -> list[tuple[int, Any]]:  # noqa: ANN401
    """(tagged count of `lemma` in the synset, synset) for each synset of the word."""
    return [(max((x.count() for x in s.lemmas() if x.name().lower() == lemma), default=0), s)
            for s in wordnet.synsets(lemma)]


def _dominant(uses: list[tuple[int, Any]], min_count: int, share: float) -> Any:  # noqa: ANN401
    """The commonest sense when it has `share` of the uses and its part of speech POS_SHARE of them, else None."""
    total = sum(c for c, _ in uses)
    if total < min_count:
        return None
    count, best = max(uses, key=lambda u: u[0])
    same_pos = sum(c for c, s in uses if _POS[s.pos()] == _POS[best.pos()])
    return best if count >= share * total and same_pos >= POS_SHARE * total else None


def _synonyms_uncached(word: str, wordnet: Any, multiword: bool) -> tuple[str, list[str]]:  # noqa: ANN401
    """Synonyms of `word` that keep its meaning and its grammar, measured on real captions: the word's
    commonest sense (by WordNet's tagged counts) must be a noun or adjective sense with SENSE_SHARE of its uses
    and its part of speech POS_SHARE of them; a synonym must be a common word (wordfreq), in lower case, whose
    own commonest sense is that same one. Returns (the sense's part of speech, the synonyms); no synonyms: the
    word stays."""
    import wordfreq

    lower = word.lower()
    if lower in KEEP_WORDS:
        return "", []
    best = _dominant(_uses(lower, wordnet), MIN_COUNT, SENSE_SHARE)
    if best is None or _POS[best.pos()] not in ("noun", "adj"):
        return "", []
    floor = max(SYNONYM_ZIPF, wordfreq.zipf_frequency(lower, "en") - 1.0)
    out = []
    for lemma in best.lemmas():
        name = lemma.name()
        if name.lower() == lower or name != name.lower() or (not multiword and ("_" in name or "-" in name)):
            continue
        if not name.replace("_", "").replace("-", "").isalpha():  # "two" -> "2", "II": not a word swap
            continue
        if name.endswith("s") and wordnet.synsets(name[:-1]):  # "works" (of "plant"): also a plural
            continue
        text = name.replace("_", " ")
        if wordfreq.zipf_frequency(text, "en") < floor:
            continue
        if _dominant(_uses(name, wordnet), SYNONYM_MIN_COUNT, SYNONYM_SHARE) != best:
            continue
        if f"{lower}>{text}" in STRUCK:
            continue
        out.append(text)
    return _POS[best.pos()], sorted(set(out), key=out.index)


def _noun_follows(caption: str, end: int, wordnet: Any) -> bool:  # noqa: ANN401
    """Whether the word after a space at `end` can be a noun: the word at `end` may be a compound's modifier
    ("child abuse", "cell phone"), where a synonym reads wrong."""
    if end >= len(caption) or caption[end] != " ":
        return False
    nxt = _WORD.match(caption, end + 1)
    return bool(nxt) and _is_noun(nxt.group(0).lower(), wordnet)


@functools.lru_cache(maxsize=200_000)
def _is_noun(lower: str, wordnet: Any) -> bool:  # noqa: ANN401
    return bool(wordnet.synsets(lower, pos="n"))


def paraphrase(caption: str | None, key: str, seed: int, wordnet: Any, k: int = 2,  # noqa: ANN401
               multiword: bool = False, variant: int = 0, english: bool | None = None) -> str | None:
    """Replace up to k words by synonyms that keep meaning and grammar (`_synonyms_uncached`); everything else
    (case, punctuation, spacing) stays. Only lower-case words in their dictionary form, outside what
    curate/captions/protect.py protects (names, brands, URLs, numbers, foreign words), not joined to another
    word by - / _ or an apostrophe, and not a noun modifying the noun after it; never in a caption that is not
    English (`english`: what `protect.english` said of it, when the caller judged a whole column)."""
    if not caption or not caption.strip():
        return caption
    candidates = []  # the words it would replace, cheapest tests first: most captions have none
    kept: list[tuple[int, int]] | None = None
    for m in _WORD.finditer(caption):
        w, start, end = m.group(0), m.start(), m.end()
        if len(w) < 3 or not w.islower() or not w.isascii() or w in STOPWORDS or w in NUMBER_WORDS:
            continue
        if (start > 0 and caption[start - 1] in "-_/'’") or (end < len(caption) and caption[end] in "-_/'’"):
            continue
        if not _is_lemma(w, wordnet):  # inflected forms: a lemma's synonym would break agreement
            continue
        pos, syns = _synonyms(w, wordnet, multiword)
        if not syns or (pos == "noun" and _noun_follows(caption, end, wordnet)):
            continue
        if kept is None:
            kept = protect.spans(caption)  # URLs, entities, numbers, all caps, names and brands, foreign words
        if protect.covered(kept, start, end):
            continue
        candidates.append((start, end, w, syns))
    if not candidates or not (protect.is_english(caption) if english is None else english):
        return caption
    rng = rng_for(seed, key, "paraphrase", variant)
    if not candidates:
        return caption
    chosen = sorted(rng.sample(candidates, min(k, len(candidates))))
    out, last = [], 0
    for start, end, _, syns in chosen:
        out.append(caption[last:start])
        out.append(rng.choice(syns))
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
