"""The clients users already have, pointed at curate's outputs with no curate code: webdataset in a DataLoader
with several workers, HF datasets, embedding-reader (autofaiss's reader) + faiss, polars; and every table curate
writes checked against its schema, one Arrow type per column name across all of them."""

from __future__ import annotations

import collections

import numpy as np
import pyarrow.parquet as pq
import pytest

from curate import schemas
from curate.stages import dedup, export, recaption


@pytest.fixture(scope="module")
def run_root(sample_run, tmp_path_factory):
    """The session's sample run (sample, download, embed) plus dedup, recaption and a default export."""
    root = tmp_path_factory.mktemp("clients")
    dedup.run(dedup.Options(embeddings=str(sample_run["emb"]), output=str(root / "dedup"), progress=False))
    recaption.run(recaption.Options(dedup=str(root / "dedup"), output=str(root / "recaption"), progress=False))
    summary = export.run(export.Options(images=str(sample_run["images"]), output=str(root / "train"),
                                        dedup=str(root / "dedup"), captions=str(root / "recaption"), progress=False))
    return {**sample_run, "dedup": root / "dedup", "recaption": root / "recaption", "train": root / "train",
            "export": summary}


TABLES = [  # (stage output, file pattern inside it, schema); other files (work files) are left out
    ("sample", "input/*.parquet", "input_shard"), ("sample", "truth.parquet", "sample_truth"),
    ("images", "rejects/*.parquet", "rejects"), ("images", "*.parquet", "image_shard"),
    ("emb", "rejects/*.parquet", "rejects"), ("emb", "metadata/*.parquet", "embeddings"),
    ("dedup", "samples/*.parquet", "dedup_samples"), ("dedup", "clusters.parquet", "dedup_clusters"),
    ("recaption", "captions/*.parquet", "captions"), ("recaption", "cluster_texts/*.parquet", "cluster_texts"),
    ("train", "*.parquet", "train_shard"),
]


def test_every_table_matches_its_schema_and_each_column_has_one_type(run_root):
    types: dict[str, dict[str, list[str]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    checked = collections.Counter()
    for stage, pattern, schema_name in TABLES:
        for path in sorted(run_root[stage].glob(pattern)):
            arrow = pq.read_schema(path)
            schemas.validate(arrow, schema_name, source=str(path))  # exact int32/int64 where curate writes
            checked[schema_name] += 1
            for field in arrow:
                types[field.name][str(field.type)].append(f"{stage}/{path.relative_to(run_root[stage])}")
    assert set(checked) == {name for _, _, name in TABLES}
    mixed = {name: {t: paths[:2] for t, paths in by.items()} for name, by in types.items() if len(by) > 1}
    assert not mixed, mixed
    assert str(pq.read_schema(next(run_root["images"].glob("*.parquet"))).field("width").type) == "int32"


def test_polars_concatenates_sizes_from_every_table(run_root):
    import polars as pl

    frames = [pl.read_parquet(str(run_root[name] / sub), columns=["key", "width", "height"])
              for name, sub in (("images", "*.parquet"), ("emb", "metadata/*.parquet"), ("train", "*.parquet"))]
    joined = pl.concat(frames)
    assert joined.height == sum(f.height for f in frames) and joined.schema["width"] == pl.Int32


def test_webdataset_in_a_dataloader_with_two_workers_reads_every_sample(run_root):
    import torch
    import webdataset as wds

    tars = sorted(str(p) for p in run_root["train"].glob("*.tar"))
    assert len(tars) >= 8  # --min-shards: a default export gives every worker shards
    dataset = wds.WebDataset(tars, shardshuffle=False).decode("pil").to_tuple("__key__", "jpg", "txt")
    loader = torch.utils.data.DataLoader(dataset, num_workers=2, batch_size=None)
    keys = [key for key, img, _ in loader if img.size[0] > 0]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == run_root["export"]["rows_out"]


def test_hf_datasets_reads_the_training_tars(run_root, tmp_path):
    from datasets import load_dataset

    tars = sorted(str(p) for p in run_root["train"].glob("*.tar"))
    ds = load_dataset("webdataset", data_files={"train": tars}, split="train", cache_dir=str(tmp_path))
    assert len(ds) == run_root["export"]["rows_out"]
    row = ds[0]
    assert row["jpg"].size[0] > 0 and isinstance(row["txt"], str) and row["json"]["key"] == row["__key__"]


def test_embedding_reader_and_faiss_over_emb(run_root):
    import faiss
    from embedding_reader import EmbeddingReader

    emb = run_root["emb"]
    reader = EmbeddingReader(embeddings_folder=str(emb / "img_emb"), metadata_folder=str(emb / "metadata"),
                             meta_columns=["key", "npy_row", "input_row"], file_format="parquet_npy")
    shards = {p.name.split("_")[-1][:5]: np.load(p) for p in sorted((emb / "img_emb").glob("*.npy"))}
    vectors, keys, npy_rows = [], [], []
    for batch, meta in reader(batch_size=37, start=0, end=reader.count, show_progress=False):
        vectors.append(batch)
        keys += list(meta["key"])
        npy_rows += list(meta["npy_row"])
    total = sum(len(a) for a in shards.values())
    assert reader.count == total == len(keys) == len(set(keys))
    # npy_row names the vector's row in its shard's npy file: joining on it pairs the right rows
    assert npy_rows == [r for name in sorted(shards) for r in range(len(shards[name]))]
    metadata = [r for p in sorted((emb / "metadata").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert any(r["input_row"] != r["npy_row"] for r in metadata)  # failed downloads leave gaps in input_row
    data = np.concatenate(vectors).astype(np.float32)
    assert np.array_equal(data, np.concatenate([shards[k] for k in sorted(shards)]).astype(np.float32))

    # autofaiss reads the img_emb folder with embedding-reader's numpy format: same vectors, and a flat faiss
    # index over them answers as a brute-force search does
    plain = EmbeddingReader(embeddings_folder=str(emb / "img_emb"), file_format="npy")
    flat = np.concatenate([b for b, _ in plain(batch_size=1000, start=0, end=plain.count, show_progress=False)])
    index = faiss.IndexFlatIP(flat.shape[1])
    index.add(flat.astype(np.float32))
    sims, ids = index.search(data[:10], 5)
    brute = data[:10] @ flat.astype(np.float32).T
    assert np.allclose(sims, -np.sort(-brute, axis=1)[:, :5], atol=1e-4)
    assert all(brute[q, ids[q, 0]] >= brute[q].max() - 1e-4 for q in range(10))
