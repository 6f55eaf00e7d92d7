"""The closed loop: does curation make a trained model copy less? (issue 6's evidence, on CPU)

A small set of real photos with heavy planted duplication (a few images repeated many times, always with the same
caption, as web re-uploads are) trains a tiny pixel-space text-to-image model from scratch: the baseline. The same
images go through curate (embed -> dedup --action drop -> recaption -> export) and train the same model for the
same budget. Both are audited with the same prompts, seeds and features (effnet-lite0).

`python -m bench.closed_loop --steps 600` prints one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.io.tar import SampleTarWriter
from curate.sample.photos import bundled_photos


def write_image_shard(root: Path, n_dup: int, copies: int, seed: int) -> list[dict]:
    """`curate download`-style image shard: n_dup photos x `copies` identical copies + the other photos once."""
    photos = bundled_photos()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(photos))
    (root / "images").mkdir(parents=True)
    tar = SampleTarWriter(str(root / "images" / "00000.tar"))
    rows = []
    for rank, p in enumerate(order.tolist()):
        photo = photos[p]
        img = photo.load()
        img.thumbnail((128, 128))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=92)
        n = copies if rank < n_dup else 1
        for c in range(n):
            key = f"p{p:02d}_{c:03d}"
            tar.write(key, {"jpg": buf.getvalue(), "txt": photo.caption})
            rows.append({"key": key, "row": len(rows), "url": f"http://bench/{key}.jpg", "caption": photo.caption,
                         "width": img.width, "height": img.height, "duplicated": n > 1})
    tar.close()
    pq.write_table(pa.Table.from_pylist([{k: v for k, v in r.items() if k != "duplicated"} for r in rows]),
                   root / "images" / "00000.parquet")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--dup-images", type=int, default=4)
    ap.add_argument("--copies", type=int, default=25)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from curate.stages import audit, dedup, embed, export, recaption, train

    work = Path(args.out or tempfile.mkdtemp(prefix="curate-closed-loop-"))
    rows = write_image_shard(work / "images", args.dup_images, args.copies, args.seed)
    embed.run(str(work / "images"), str(work / "emb"), {}, progress=False)
    dd = dedup.run(str(work / "emb"), str(work / "dedup"), {"action": "drop"}, progress=False)
    recaption.run(str(work / "dedup"), str(work / "recaption"), {"target": "all"}, progress=False)
    export.run(str(work / "images"), str(work / "train_curated"), {"dedup": str(work / "dedup"),
                                                                    "captions": str(work / "recaption")}, progress=False)
    # the raw training set keeps every copy; annotated by dedup so the audit knows which images were duplicated
    dedup.run(str(work / "emb"), str(work / "dedup_annotate"), {}, progress=False)
    export.run(str(work / "images"), str(work / "train_raw"), {"dedup": str(work / "dedup_annotate"),
                                                               "include_duplicates": True}, progress=False)

    train_opts = {"model": "tiny-pixel", "resolution": 32, "steps": args.steps, "batch_size": args.batch_size,
                  "lr": 1e-3, "seed": args.seed, "checkpoint_every": args.steps}
    # prompts: the captions of the duplicated photos and as many unique ones, the same for both models
    dup_caps = list(dict.fromkeys(r["caption"] for r in rows if r["duplicated"]))
    uniq_caps = [r["caption"] for r in rows if not r["duplicated"]][: len(dup_caps)]
    results = {"seed": args.seed, "steps": args.steps, "batch_size": args.batch_size, "images": len(rows),
               "duplicated_photos": args.dup_images, "copies_each": args.copies,
               "dedup_marked": dd["duplicates_marked"]}
    for name in ("raw", "curated"):
        train.run(str(work / f"train_{name}"), str(work / f"model_{name}"), train_opts, progress=False)
        # same corpus, prompts (chosen from it by seed), seeds and features for both models
        rep = audit.run(str(work / f"model_{name}" / "final"), str(work / "train_raw"), str(work / f"audit_{name}"),
                        {"prompts": 2 * len(dup_caps), "steps": 50, "resolution": 32, "seed": args.seed,
                         "guidance_scale": 1.0})  # no caption dropout in training: no guidance
        results[name] = rep["metrics"]
    results["duplicated_captions"] = dup_caps
    _ = uniq_caps
    print(json.dumps(results))
    if args.out is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
