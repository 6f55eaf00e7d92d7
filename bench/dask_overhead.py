"""The Dask engine's overhead against the local engine, same input, same run (issue 7).

embed: the same image shards embedded by the local engine (one process) and by a LocalCluster with one
single-threaded worker, so the ratio is the engine's cost (task scheduling, worker start, model load in the
worker), not extra parallelism. dedup: the same synthetic embeddings, partition mode, local vs one task per
partition. `python -m bench.dask_overhead --images 512 --vectors 200000` prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from bench.data import image_shards


def timed(fn, *args, **kwargs) -> float:  # noqa: ANN001
    t = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--vectors", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--data", default="bench/.data")
    args = ap.parse_args()

    import distributed

    from bench.vectors import make_vectors
    from curate.stages import dedup, embed

    images = image_shards(Path(args.data) / f"jpegs-{args.images}-{args.shards}", args.images, shards=args.shards)
    tmp = Path(tempfile.mkdtemp(prefix="curate-bench-dask-"))
    cluster = distributed.LocalCluster(host="127.0.0.1", dashboard_address=None, n_workers=1, threads_per_worker=1,
                                       processes=True)
    try:
        def embed_opts(out: str, **kw: object) -> embed.Options:
            return embed.Options(images=str(images), output=str(tmp / out), num_workers=1, progress=False, **kw)

        def dedup_opts(out: str, **kw: object) -> dedup.Options:
            return dedup.Options(embeddings=str(tmp / "vec"), output=str(tmp / out), mode="partition", threshold=0.95,
                                 save_index=False, progress=False, **kw)

        embed_local = timed(embed.run, embed_opts("emb_local"))
        embed_dask = timed(embed.run, embed_opts("emb_dask", engine="dask", scheduler=cluster.scheduler_address))

        make_vectors(tmp / "vec", args.vectors, args.dim)
        dedup_local = timed(dedup.run, dedup_opts("dd_local"))
        dedup_dask = timed(dedup.run, dedup_opts("dd_dask", engine="dask", scheduler=cluster.scheduler_address))
        same = (json.loads((tmp / "dd_local" / "report.json").read_text())["duplicate_clusters"]
                == json.loads((tmp / "dd_dask" / "report.json").read_text())["duplicate_clusters"])
    finally:
        cluster.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({
        "bench": "dask_overhead", "images": args.images, "shards": args.shards, "vectors": args.vectors,
        "dim": args.dim, "workers": 1,
        "embed_local_s": round(embed_local, 2), "embed_dask_s": round(embed_dask, 2),
        "embed_ratio_dask_over_local": round(embed_dask / embed_local, 3),
        "embed_local_img_per_s": round(args.images / embed_local, 1),
        "dedup_local_s": round(dedup_local, 2), "dedup_dask_s": round(dedup_dask, 2),
        "dedup_ratio_dask_over_local": round(dedup_dask / dedup_local, 3),
        "dedup_same_clusters": same,
    }))


if __name__ == "__main__":
    main()
