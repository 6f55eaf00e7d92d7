"""Dedup on 50,000 real-image embeddings against a dense all-pairs similarity (what imagededup does), same run.

Images: Fashion-MNIST's training set (Debian's dataset-fashion-mnist, 60,000 real 28x28 photos of clothes; set
CURATE_DEBIAN_PHOTOS to include it in scripts/install_debian_photos.sh, or this script unpacks it), embedded with
effnet-lite0 and written in `curate embed`'s layout. Then: `curate dedup` (knn over exact FAISS, and SemDeDup
partitions) against blocked dense X @ X.T with the same threshold; pairs compared with the dense answer.

`python -m bench.realscale --n 50000` prints one JSON object.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DEB = "dataset-fashion-mnist"
IDX = "usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def load_images(debian_root: Path, n: int) -> np.ndarray:
    path = debian_root / IDX
    if not path.exists():
        subprocess.run(["bash", "scripts/install_debian_photos.sh"], check=True, env={
            **__import__("os").environ, "CURATE_DEBIAN_PHOTOS": DEB})
    with gzip.open(path) as f:
        data = f.read()
    count, rows, cols = (int.from_bytes(data[i : i + 4], "big") for i in (4, 8, 12))
    imgs = np.frombuffer(data, np.uint8, offset=16).reshape(count, rows, cols)
    return imgs[:n]


def embed_dir(root: Path, imgs: np.ndarray, shards: int = 10) -> Path:
    if (root / "manifest.json").exists():
        return root
    from PIL import Image

    from curate.stages.embed import Options, load_models, manifest

    opts = Options(images="", output=str(root), max_image_area=10**9, size=288)
    model, _ = load_models(opts)
    (root / "img_emb").mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(exist_ok=True)
    for s, part in enumerate(np.array_split(np.arange(len(imgs)), shards)):
        out = []
        for b in range(0, len(part), 64):
            batch = [model.preprocess(Image.fromarray(imgs[i]).convert("RGB")) for i in part[b : b + 64]]
            out.append(model.embed(batch))
        np.save(root / "img_emb" / f"img_emb_{s:05d}.npy", np.concatenate(out).astype(np.float16))
        pq.write_table(pa.table({"key": [f"f{i}" for i in part], "shard": np.full(len(part), s, np.int64),
                                 "caption": [None] * len(part)}), root / "metadata" / f"metadata_{s:05d}.parquet")
    (root / "manifest.json").write_text(json.dumps(manifest(opts)))
    return root


def dense_pairs(x: np.ndarray, threshold: float, block: int = 4096) -> set[tuple[int, int]]:
    pairs = set()
    for r0 in range(0, len(x), block):
        s = x[r0 : r0 + block] @ x.T
        r, c = np.nonzero(s >= threshold)
        keep = c > r + r0
        pairs.update(zip((r[keep] + r0).tolist(), c[keep].tolist(), strict=True))
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--threshold", type=float, default=0.95)
    ap.add_argument("--data", default="bench/.data")
    ap.add_argument("--debian-root", default=".data/debian")
    args = ap.parse_args()
    from curate.dedup import index as idx
    from curate.dedup.link import link
    from curate.dedup.pairs import knn_pairs, partition_pairs
    from curate.dedup.vectors import open_embeddings

    t = time.perf_counter()
    root = embed_dir(Path(args.data) / f"fashion-{args.n}", load_images(Path(args.debian_root), args.n))
    embed_s = time.perf_counter() - t
    emb = open_embeddings(str(root))
    x = emb.load_all(np.float32)

    t = time.perf_counter()
    truth = dense_pairs(x, args.threshold)
    dense_s = time.perf_counter() - t

    results = {"n": emb.n, "dim": emb.dim, "threshold": args.threshold, "embed_s": round(embed_s, 1),
               "dense_all_pairs_s": round(dense_s, 2), "dense_pairs": len(truth)}
    for mode in ("knn_flat", "partition"):
        t = time.perf_counter()
        if mode == "knn_flat":
            p = knn_pairs(emb, idx.build(emb, idx.IndexSpec(kind="flat")), 32, args.threshold)
        else:
            p = partition_pairs(emb, args.threshold)
        labels = link(emb.n, p.i, p.j, p.sim, "components")
        secs = time.perf_counter() - t
        found = set(zip(p.i.tolist(), p.j.tolist(), strict=True))
        same = sum(labels[a] == labels[b] for a, b in truth)
        results[mode] = {"seconds": round(secs, 2), "ratio_to_dense": round(secs / dense_s, 3),
                         "pair_recall_direct": round(len(found & truth) / len(truth), 4) if truth else None,
                         "pair_recall_clustered": round(same / len(truth), 4) if truth else None,
                         "pairs_found": len(found)}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
