"""The words rt and rc insert are clean: every vocabulary is filtered through better-profanity's word list, and
over the 1,000 real LAION captions x pools of 5 no inserted word is on it. The default ops leave paraphrase out."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate import config
from curate.captions import batch, vocab
from curate.captions.ops import arrow_vocab

CAPTIONS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "laion_captions_1k.parquet"


@pytest.fixture(scope="module")
def laion():
    table = pq.read_table(CAPTIONS)
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
