"""What word-level caption edits leave alone, on the issue's real examples and on 1,000 real LAION captions."""

from __future__ import annotations

import re

import pyarrow as pa
import pytest

from curate.captions import ops, pool, protect
from curate.captions.wordnet import wordnet
from tests.conftest import real_laion


@pytest.fixture(scope="module")
def real_captions() -> list[str]:
    return [c for c in real_laion(["TEXT"]).column("TEXT").to_pylist() if c and c.strip()]


@pytest.mark.parametrize(("caption", "kept"), [
    ("HASBRO Monopoly: Rick and Morty Edition", ["HASBRO", "Monopoly", "Rick", "Morty", "Edition"]),
    ("Etolea, Extra Virgin Olive Oil", ["Etolea", "Extra", "Virgin", "Olive", "Oil"]),
    ("The Killer inside me", ["The", "Killer"]),
    ("Vietnam War memorial at dusk", ["Vietnam", "War"]),
    ("Salt &amp; pepper shakers, www.example.com/shop", ["&amp;", "www.example.com/shop"]),
    ("poster 13oct two 2019 i6 3-pack", ["13oct", "2019", "i6", "3-pack"]),
    ("mail me at someone@example.org today", ["someone@example.org"]),
])
def test_spans_cover_names_brands_urls_entities_and_numbers(caption, kept):
    spans = protect.spans(caption)
    for token in kept:
        start = caption.index(token)
        assert protect.covered(spans, start, start + len(token)), (caption, token, spans)


@pytest.mark.parametrize(("caption", "english"), [
    ("Best friends taking selfie using smartphone", True),
    ("a red bicycle leaning on a wall", True),
    ("Chemise slim-fit", False),
    ("Chemise slim-fit homme en coton bleu", False),
    ("Der Hund spielt mit dem Ball im Garten", False),
    ("Perro jugando con una pelota en el parque", False),
    ("東京タワーの夜景", False),
    ("Красивый закат над морем", False),
    ("2019 / 12", True),
])
def test_is_english(caption, english):
    assert protect.is_english(caption) is english


def test_paraphrase_never_edits_a_protected_token_of_real_captions(real_captions):
    wn = wordnet()
    changed = 0
    # paraphrase changes few real captions as they are (tests/data/paraphrase_labels.json): each one also
    # ends in words it does replace, so that every caption's own tokens are put to the test
    for i, caption in enumerate(real_captions):
        caption = f"{caption} near the vast woods"
        out = ops.paraphrase(caption, f"k{i}", 0, wn, k=2)
        if out == caption:
            continue
        changed += 1
        assert protect.is_english(caption), caption
        # every protected stretch of the original is still there, in order
        for start, end in protect.spans(caption):
            assert caption[start:end] in out, (caption, out, caption[start:end])
        assert not re.search(r"&\w+;", out) or re.findall(r"&\w+;", out) == re.findall(r"&\w+;", caption)
    assert changed > 800  # the English ones


def test_non_english_captions_are_left_alone_by_paraphrase_and_rt():
    wn = wordnet()
    foreign = ["Chemise slim-fit homme en coton bleu", "Der Hund spielt mit dem Ball im Garten", "東京タワーの夜景"]
    english = ["a small dog playing with a ball in the garden"] * 3
    for i, caption in enumerate(foreign):
        assert all(ops.paraphrase(caption, f"k{i}", s, wn, k=3) == caption for s in range(5))
    captions = pa.array(foreign + english, pa.string())
    keys = pa.array([f"k{i}" for i in range(len(captions))])
    hashes = pool.batch.key_hashes(keys)
    out = pool.apply_op("rt", captions, keys, hashes, 0, {"vocab": ["apple", "river", "stone"], "n": 2}, 0)
    assert out.to_pylist()[:3] == foreign
    # inside the pools too: rt adds nothing to a foreign caption's pool
    for i, caption in enumerate(foreign + english):
        made, how = pool.build_pool(caption, f"k{i}", 0, [], ("rt",), 5, {"vocab": ["apple", "river", "stone"]})
        assert (made, how) == ([caption], ["original"]) if i < 3 else len(made) > 1
    assert all(o != e for o, e in zip(out.to_pylist()[3:], english, strict=True))
    assert [ops.rt(c, f"k{i}", 0, ["apple", "river"]) == c for i, c in enumerate(foreign + english)] == \
        [True] * 3 + [False] * 3  # the per-caption function is the same code


def test_the_column_language_check_judges_each_row_as_it_judges_it_alone(real_captions):
    tricky = [None, "", "   ", "2019 i6 3-pack", "東京タワーの夜景", "Chemise slim-fit homme en coton bleu",
              "Der Hund spielt mit dem Ball im Garten", "a small dog l'amour on the grass", "Café au lait — a cup"]
    column = pa.array(tricky + real_captions, pa.string())
    got = protect.english(column)
    assert got[:7].tolist() == [True, True, True, True, False, False, False]
    assert got.tolist() == [protect.is_english(c or "") for c in tricky + real_captions]
    assert 0.9 < got[len(tricky):].mean() < 1  # most real LAION captions are English, not all
