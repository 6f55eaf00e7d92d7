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
import sys
import tempfile
import time
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
            rows.append({"key": key, "input_row": len(rows), "url": f"http://bench/{key}.jpg", "caption": photo.caption,
                         "width": img.width, "height": img.height, "duplicated": n > 1})
    tar.close()
    pq.write_table(pa.Table.from_pylist([{k: v for k, v in r.items() if k != "duplicated"} for r in rows]),
                   root / "images" / "00000.parquet")
    return rows


SUMMARY_MEASURES = {  # name: (path into a result, what it is)
    "share_above_0.5": (("generations", "share_above_threshold"), "share of generations with top-1 SSCD > 0.5"),
    "p95": (("generations", "p95"), "p95 top-1 similarity, all prompts"),
    "p95_duplicated": (("generations_of_duplicated", "p95"), "p95 top-1 similarity, duplicated prompts"),
    "source_match_duplicated": (("top1_is_source_share", "duplicated"),
                                "duplicated-prompt generations whose nearest image is their source (chance 0.05)"),
    "source_match_all": (("top1_is_source_share", "all"), "all generations whose nearest image is their source"),
}


def summarize(paths: list[str]) -> dict:
    """Per seed and across seeds (median, min, max) for raw and curated: the evidence files of several seeds."""
    import statistics

    per_seed = []
    for path in sorted(paths):
        doc = json.loads(Path(path).read_text())
        r = doc.get("result", doc)
        row = {"seed": r["seed"], "file": Path(path).name}
        for data in ("raw", "curated"):
            for name, (keys, _) in SUMMARY_MEASURES.items():
                value = r[data]
                for k in keys:
                    value = value[k]
                row[f"{data}.{name}"] = value
        per_seed.append(row)
    spread = {}
    for col in [c for c in per_seed[0] if "." in c]:
        values = [row[col] for row in per_seed]
        spread[col] = {"median": round(statistics.median(values), 4), "min": min(values), "max": max(values)}
    curated_lower = sum(row["curated.source_match_duplicated"] < row["raw.source_match_duplicated"] for row in per_seed)
    return {"seeds": len(per_seed), "measures": {k: v[1] for k, v in SUMMARY_MEASURES.items()},
            "per_seed": per_seed, "spread": spread,
            "seeds_where_curated_matches_its_source_less_often": curated_lower}


def main() -> None:
    if sys.argv[1:2] == ["--summarize"]:  # python -m bench.closed_loop --summarize FILE... (evidence files)
        print(json.dumps(summarize(sys.argv[2:])))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--dup-images", type=int, default=4)
    ap.add_argument("--copies", type=int, default=25)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--audit-seeds", type=int, default=3, help="Generation seeds per prompt set (more samples).")
    ap.add_argument("--caption-dropout", type=float, default=0.0)
    ap.add_argument("--guidance", type=float, default=1.0, help="Classifier-free guidance (needs caption dropout).")
    args = ap.parse_args()
    from curate.stages import audit, dedup, embed, export, recaption, train

    work = Path(args.out or tempfile.mkdtemp(prefix="curate-closed-loop-"))
    rows = write_image_shard(work / "images", args.dup_images, args.copies, args.seed)
    embed.run(embed.Options(images=str(work / "images"), output=str(work / "emb"), progress=False))
    dd = dedup.run(dedup.Options(embeddings=str(work / "emb"), output=str(work / "dedup"), action="drop", progress=False))
    recaption.run(recaption.Options(dedup=str(work / "dedup"), output=str(work / "recaption"), target="all", progress=False))
    export.run(export.Options(images=str(work / "images"), output=str(work / "train_curated"), dedup=str(work / "dedup"), captions=str(work / "recaption"), progress=False))
    # the raw training set keeps every copy; annotated by dedup so the audit knows which images were duplicated
    dedup.run(dedup.Options(embeddings=str(work / "emb"), output=str(work / "dedup_annotate"), progress=False))
    export.run(export.Options(images=str(work / "images"), output=str(work / "train_raw"), dedup=str(work / "dedup_annotate"), include_duplicates=True, progress=False))

    train_opts = {"model": "tiny-pixel", "resolution": 32, "steps": args.steps, "batch_size": args.batch_size,
                  "lr": 1e-3, "seed": args.seed, "checkpoint_every": args.steps,
                  "caption_dropout": args.caption_dropout}
    # prompts: chosen from the raw corpus by each audit seed (half from duplicated photos), the same for both
    dup_caps = list(dict.fromkeys(r["caption"] for r in rows if r["duplicated"]))
    results = {"seed": args.seed, "steps": args.steps, "batch_size": args.batch_size, "images": len(rows),
               "duplicated_photos": args.dup_images, "copies_each": args.copies, "audit_seeds": args.audit_seeds,
               "caption_dropout": args.caption_dropout, "guidance": args.guidance,
               "dedup_marked": dd["duplicates_marked"], "audit_embed_model": audit.audit_model("auto")}
    for name in ("raw", "curated"):
        start = time.time()
        train.run(train.Options(train=str(work / f"train_{name}"), output=str(work / f"model_{name}"), **train_opts, progress=False))
        train_s = time.time() - start
        results[name] = {"train_seconds": round(train_s, 1)}
        # two audits of the same generations' kind: against the training images as downloaded, and at the
        # generation's own resolution (what a 32 px model saw, so what it could copy: --match-resolution)
        for view, match in (("full_resolution", False), ("match_resolution", True)):
            tables = []
            for s in range(args.audit_seeds):
                out = work / f"audit_{name}_{view}_{s}"
                audit.run(audit.Options(model=str(work / f"model_{name}" / "final"), train=str(work / "train_raw"),
                                        output=str(out), prompts=2 * len(dup_caps), steps=50, resolution=32,
                                        seed=args.seed * 1000 + s, guidance_scale=args.guidance,
                                        match_resolution=match))
                tables.append(pq.read_table(out / "matches.parquet"))
            m = pa.concat_tables(tables).to_pydict()
            sims, dup = np.array(m["top1_sim"]), np.array(m["source_dup_count"]) > 1
            src = np.array(m["top1_is_source"], bool)
            entry = {
                "generations": audit.similarity_stats(sims, 0.5),
                "generations_of_duplicated": audit.similarity_stats(sims[dup], 0.5),
                "generations_of_unique": audit.similarity_stats(sims[~dup], 0.5),
                "top1_is_source_share": {"all": round(float(src.mean()), 3), "duplicated": round(float(src[dup].mean()), 3),
                                         "unique": round(float(src[~dup].mean()), 3),
                                         "chance": round(1 / len({r["caption"] for r in rows}), 3)},
            }
            if view == "full_resolution":
                results[name].update(entry)  # the keys earlier evidence files have
            else:
                results[name][view] = entry
    results["duplicated_captions"] = dup_caps
    print(json.dumps(results))
    if args.out is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
