"""The words rt and rc insert are clean: every vocabulary is filtered through better-profanity's word list, and
over the 1,000 real LAION captions x pools of 5 no inserted word is on it. The default ops leave paraphrase out."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from curate import config
from curate.captions import batch, vocab
from curate.captions.ops import arrow_vocab
from tests.conftest import real_laion


@pytest.fixture(scope="module")
def laion():
    table = real_laion()
    return table.column("TEXT").combine_chunks().cast(pa.string()), pa.array([f"k{i}" for i in range(table.num_rows)])


def test_the_blocklist_is_real_and_every_vocabulary_is_clean_of_it(laion):
    bad = vocab.blocklist()
    assert len(bad) > 500
    from curate.captions.wordnet import single_word_lemmas

    assert sum(w.lower() in bad for w in single_word_lemmas()) > 100  # what the filter takes out of WordNet
    captions, _ = laion
    dataset = vocab.dataset_words(captions.to_pylist())
    for name in vocab.VOCABS:
        words = vocab.load(name, dataset)
        assert len(words) > 1000, name
        assert not [w for w in words if w.lower() in bad], name
    common = vocab.common_words()
    assert {"the", "photo", "house", "blue"} <= set(common) and all(w.isalpha() and len(w) >= 3 for w in common)


@pytest.mark.parametrize("name", ["common", "wordnet", "clip"])
def test_no_offensive_word_is_inserted_into_real_captions(laion, name):
    captions, keys = laion
    words = arrow_vocab(vocab.load(name))
    bad = vocab.blocklist()
    inserted: Counter[str] = Counter()
    for variant in range(5):  # a pool of 5 per caption
        for op in ("rt", "rc"):
            stream = batch.streams(keys, 0, op, variant)
            out = batch.rt(captions, stream, words, n=2) if op == "rt" else batch.rc(captions, stream, words, n=4)
            for before, after in zip(captions.to_pylist(), out.to_pylist(), strict=True):
                if before is None or after is None:
                    continue
                inserted.update(Counter(after.split()) - Counter(before.split()))
    assert sum(inserted.values()) > 10_000  # the ops did insert (rt: 2 words x 5 x ~1,000; rc: 4 words x 5)
    assert not {w: c for w, c in inserted.items() if w.lower() in bad}


def test_default_ops_are_the_research_insertions_and_mc():
    opts = config.RecaptionOptions(dedup="d", output="o")
    assert opts.ops == ("rt", "cwr", "rna") and opts.vocab == "common"
    assert np.all([op in config.CAPTION_OPS for op in opts.ops])


def is_subsequence(small: str, big: str) -> bool:
    it = iter(big)
    return all(c in it for c in small)


ODD = ["a  cat\ton the\u00a0mat ", "  lead and trail  ", "tab\tonly", "line\nbreak here", "wide\u3000space x",
       "plain caption here", "one"]


@pytest.mark.parametrize("op", ["rt", "cwr", "rna"])
def test_insertions_change_nothing_but_the_inserted_words(laion, op):
    """On the real captions and on captions with odd whitespace: the original is a subsequence of every variant,
    and the variant is exactly the inserted words (each with one space) longer: no whitespace rewritten."""
    captions, keys = laion
    caps = pa.concat_arrays([captions, pa.array(ODD)])
    keys = pa.array([f"k{i}" for i in range(len(caps))])
    words = arrow_vocab(vocab.load("common"))
    changed = odd_seen = 0
    for variant in range(5):
        stream = batch.streams(keys, 3, op, variant)
        out = (batch.rt(caps, stream, words, n=2) if op == "rt" else
               batch.cwr(caps, stream, n=2) if op == "cwr" else batch.rna(caps, stream))
        for before, after in zip(caps.to_pylist(), out.to_pylist(), strict=True):
            if not before or not before.split():
                assert after == before
                continue
            added = Counter(after.split()) - Counter(before.split())
            assert is_subsequence(before, after), (before, after)
            assert len(after) - len(before) == sum((len(w) + 1) * c for w, c in added.items()), (before, after)
            changed += after != before
            odd_seen += " ".join(before.split()) != before
    assert changed > 4000 and odd_seen >= 5 * len(ODD) - 10
