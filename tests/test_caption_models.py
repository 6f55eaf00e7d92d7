"""--caption-model / --paraphrase-model: tiny randomly initialised transformers models (no captioning or
paraphrase weights exist offline), saved as ordinary model folders and loaded through the real path."""

from __future__ import annotations

import hashlib
import json

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from curate.captions import models, tiny_models
from curate.cli import cli
from curate.errors import CurateError
from curate.io import image_shards
from curate.io.images import decode_image
from curate.stages import dedup, recaption


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_models")
    return {"blip": tiny_models.save_captioner(str(root / "blip")),
            "t5": tiny_models.save_paraphraser(str(root / "t5"), "seq2seq"),
            "gpt2": tiny_models.save_paraphraser(str(root / "gpt2"), "causal")}


@pytest.fixture(scope="module")
def dd(sample_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("caption_models") / "dd"
    dedup.run(dedup.Options(embeddings=str(sample_run["emb"]), output=str(out), progress=False))
    return out


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))


def rows_of(out):
    return [r for p in sorted((out / "captions").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]


def test_caption_model_adds_each_targeted_images_captions_and_caches_them(sample_run, dd, tiny, tmp_path):
    opts = dict(dedup=str(dd), images=str(sample_run["images"]), caption_model=tiny["blip"], model_k=3,
                pool_size=8, device="cpu", progress=False)
    report = recaption.run(recaption.Options(output=str(tmp_path / "a"), **opts))
    rows = rows_of(tmp_path / "a")
    # every image read here independently of recaption: by key, from every download shard
    images = {row["key"]: data for path in image_shards.shard_files(str(sample_run["images"]))
              for row, data in image_shards.iter_image_samples(path)}
    sha = {key: hashlib.sha256(data).hexdigest() for key, data in images.items()}
    cache = models.Cache()
    direct = models.Captioner(tiny["blip"], 3, "cpu")
    stored = cache.get(direct.key, sorted({sha[r["key"]] for r in rows}))
    made = 0
    for r in rows:
        entries = [c for c, how in zip(r["captions"], r["ops"], strict=True) if how == "caption_model"]
        if not r["targeted"]:
            assert not entries
            continue
        # the cache holds this row's own image's captions (a row given another image would miss or differ),
        # and they are what the model makes of that image, computed here afresh
        expected = stored[sha[r["key"]]]
        assert expected == direct([decode_image(images[r["key"]])[0]])[0] and expected
        assert set(entries) <= set(expected)  # minus texts already in the pool
        assert r["ops"][0] != "caption_model"  # the same for every copy of an image: never the caption to use
        made += len(entries)
    cache.close()
    assert made > 0 and report["pool_entries_by_op"]["caption_model"] == made
    m = report["models"]
    assert m["made_by"] == {"caption_model": tiny["blip"]}
    shas = {sha[r["key"]] for r in rows if r["targeted"]}
    assert m["caption_model_images"] == sum(r["targeted"] for r in rows) and m["caption_model_generated"] == len(shas)
    meta = pq.read_schema(next((tmp_path / "a" / "captions").glob("*.parquet"))).metadata
    assert json.loads(meta[b"curate.models"]) == {"caption_model": tiny["blip"]}
    # a second run, two workers: every image's captions come from the cache, and the pools are the same
    again = recaption.run(recaption.Options(output=str(tmp_path / "b"), workers=2, **opts))
    assert again["models"]["caption_model_generated"] == 0
    assert rows_of(tmp_path / "b") == rows


@pytest.mark.parametrize("kind", ["t5", "gpt2"])
def test_paraphrase_model_adds_paraphrases_of_each_targeted_caption(dd, tiny, tmp_path, kind):
    report = recaption.run(recaption.Options(dedup=str(dd), output=str(tmp_path / "p"), paraphrase_model=tiny[kind],
                                             model_k=2, pool_size=6, ops=("rna",), device="cpu", progress=False))
    direct = models.Paraphraser(tiny[kind], 2, "Paraphrase: {caption}", "cpu")
    made = 0
    for r in rows_of(tmp_path / "p"):
        entries = [c for c, how in zip(r["captions"], r["ops"], strict=True) if how == "paraphrase_model"]
        if not r["targeted"] or not (r["original_caption"] or "").strip():
            assert not entries
            continue
        (expected,) = direct([r["original_caption"]])
        assert set(entries) <= set(expected) and r["original_caption"] not in entries
        made += len(entries)
    assert made > 0 and report["models"]["made_by"] == {"paraphrase_model": tiny[kind]}


def test_model_outputs_become_entries_only_when_clean():
    from curate.captions.vocab import blocklist

    bad = sorted(w for w in blocklist() if w.isalpha())[0]
    assert models.clean_outputs(["  a dog  on grass ", "a dog on grass", "", f"a {bad} dog", "the input"],
                                "the input") == ["a dog on grass"]


def test_a_folder_that_is_not_a_model_is_one_clear_error(sample_run, dd, tmp_path):
    (tmp_path / "nomodel").mkdir()
    with pytest.raises(CurateError, match="--caption-model .*nomodel: cannot load it as a transformers image-to-text"):
        models.Captioner(str(tmp_path / "nomodel"), 2)
    res = CliRunner().invoke(cli, ["recaption", str(dd), str(tmp_path / "out"), "--images", str(sample_run["images"]),
                                    "--caption-model", str(tmp_path / "nomodel"), "--no-progress"])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert "--caption-model" in res.output and "nomodel" in res.output
    assert not list((tmp_path / "out").glob("captions/*.parquet"))
    res = CliRunner().invoke(cli, ["recaption", str(dd), str(tmp_path / "out2"), "--caption-model", "x"])
    assert res.exit_code == 2 and "needs --images" in res.output
