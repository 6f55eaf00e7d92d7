"""`curate export`: tars that plain webdataset reads, original bytes, caption pools, gap-free shards."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
import webdataset as wds
from PIL import Image

from curate import schemas
from curate.io.image_shards import iter_image_samples
from curate.stages import dedup, export, recaption


def test_export_round_trips_through_plain_webdataset(sample_run, tmp_path):
    dd, rc, out = tmp_path / "dd", tmp_path / "rc", tmp_path / "train"
    dedup.run(dedup.Options(embeddings=str(sample_run["emb"]), output=str(dd), progress=False))
    recaption.run(recaption.Options(dedup=str(dd), output=str(rc), progress=False))
    summary = export.run(export.Options(images=str(sample_run["images"]), output=str(out), dedup=str(dd), captions=str(rc), shard_size=7, min_shards=1, progress=False))
    tars = sorted(out.glob("*.tar"))
    assert [t.name for t in tars] == [f"{j:05d}.tar" for j in range(len(tars))]  # gap-free
    samples = list(wds.WebDataset([str(t) for t in tars], shardshuffle=False))  # no curate code
    kept = [r for p in sorted((dd / "samples").glob("*.parquet")) for r in pq.read_table(p).to_pylist() if r["keep"]]
    assert len(samples) == summary["rows_out"] == len(kept)
    assert all(len(list(wds.WebDataset(str(t), shardshuffle=False))) == 7 for t in tars[:-1])
    originals = {}
    for p in sorted(sample_run["images"].glob("*.parquet")):
        for meta, data in iter_image_samples(str(p)):
            originals[meta["key"]] = data
    captions = {r["key"]: r for p in sorted((rc / "captions").glob("*.parquet")) for r in pq.read_table(p).to_pylist()}
    for s in samples:
        key = s["__key__"]
        assert s["jpg"] == originals[key]  # not re-encoded
        Image.open(io.BytesIO(s["jpg"])).load()
        info = json.loads(s["json"])
        assert s["txt"].decode() == captions[key]["captions"][0] == info["caption"]
        assert info["captions"] == captions[key]["captions"] and info["keep"]
    schemas.validate(pq.read_schema(out / "00000.parquet"), "train_shard", source="sidecar")
    # rerun: resumes (nothing to do), same bytes
    before = {t.name: t.read_bytes() for t in tars}
    export.run(export.Options(images=str(sample_run["images"]), output=str(out), dedup=str(dd), captions=str(rc), shard_size=7, min_shards=1, progress=False))
    assert {t.name: t.read_bytes() for t in sorted(out.glob("*.tar"))} == before


def test_export_without_dedup_keeps_everything(sample_run, tmp_path):
    out = tmp_path / "train"
    summary = export.run(export.Options(images=str(sample_run["images"]), output=str(out), shard_size=1000,
                                        min_shards=1, progress=False))
    n = sum(r["status"] == "success" for p in sample_run["images"].glob("*.parquet")
            for r in pq.read_table(p, columns=["status"]).to_pylist())
    assert summary["rows_out"] == n and len(list(out.glob("*.tar"))) == 1


def test_a_redone_dedup_is_read_again_by_the_same_process(sample_run, tmp_path):
    """Per-process caches (a Dask worker serves many runs) are keyed by the inputs' manifests, not paths only."""
    dd = tmp_path / "dd"

    def exported_counts(threshold: float, out: str) -> tuple[dict, dict]:
        dedup.run(dedup.Options(embeddings=str(sample_run["emb"]), output=str(dd), threshold=threshold, overwrite=True, progress=False))
        recaption.run(recaption.Options(dedup=str(dd), output=str(tmp_path / "rc"), overwrite=True, progress=False))
        export.run(export.Options(images=str(sample_run["images"]), output=str(tmp_path / out), dedup=str(dd), captions=str(tmp_path / "rc"), include_duplicates=True, progress=False))
        sidecar = {r["key"]: r["dup_count"] for p in sorted((tmp_path / out).glob("*.parquet"))
                   for r in pq.read_table(p).to_pylist()}
        truth = {r["key"]: r["dup_count"] for p in sorted((dd / "samples").glob("*.parquet"))
                 for r in pq.read_table(p).to_pylist()}
        return sidecar, truth

    loose, loose_truth = exported_counts(0.5, "a")
    strict, strict_truth = exported_counts(0.99, "b")
    assert loose == loose_truth and strict == strict_truth
    assert loose != strict  # the two dedup runs really differ


def test_shard_size_makes_min_shards_tars_when_there_are_enough_samples():
    def tars(n: int, most: int, min_shards: int) -> int:
        return -(-n // export.shard_size(n, most, min_shards))

    assert export.shard_size(101, 1000, 8) == 13 and tars(101, 1000, 8) == 8  # the demo's 101 samples
    assert tars(5, 1000, 8) == 5  # fewer samples than shards: one per tar
    assert export.shard_size(100_000, 1000, 8) == 1000  # plenty of samples: --shard-size rules
    assert tars(101, 1000, 1) == 1
