"""Embed throughput: the whole `curate embed` against the forward-only rate of the same runtime, same run.

`python -m bench.embed --model effnet-lite0 --n 512` prints one JSON object (images/s, ratio, peak RSS).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from bench.cli_run import run_curate
from bench.data import image_shards


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="effnet-lite0")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--size", type=int, default=None, help="the model's input size (embed --size)")
    ap.add_argument("--resize", default="short", help="embed --resize")
    ap.add_argument("--data", default="bench/.data")
    args = ap.parse_args()

    from curate.io.image_shards import iter_image_samples
    from curate.io.images import decode_image
    from curate.stages import embed

    root = image_shards(Path(args.data) / f"jpegs-{args.n}", args.n)
    opts = embed.Options(images=str(root), output="", model=args.model, batch_size=args.batch_size,
                         num_workers=args.num_workers, size=args.size, resize=args.resize)
    model, _ = embed.load_models(opts)

    # baseline 1: decode + preprocess alone, one thread
    samples = [b for p in sorted((root / "images").glob("*.parquet")) for _, b in iter_image_samples(str(p))]
    t = time.perf_counter()
    items = []
    for b in samples[: min(len(samples), 256)]:
        img, _, _ = decode_image(b, draft_size=model.draft_size)
        items.append(model.preprocess(img))
    decode_rate = len(items) / (time.perf_counter() - t)

    # baseline 2: the model's forward pass alone on already-preprocessed batches (same runtime)
    batch = [items[i % len(items)] for i in range(args.batch_size)]
    model.embed(batch)  # warm-up
    reps = max(2, min(8, int(200 / args.batch_size))) if "open_clip" not in args.model else 2
    t = time.perf_counter()
    for _ in range(reps):
        model.embed(batch)
    forward_rate = reps * len(batch) / (time.perf_counter() - t)

    # the whole stage, as users run it: the CLI in its own process (its peak RSS is the stage's own);
    # the rate counts the shards' wall time (summary.json), not the one-off model load
    out = Path(tempfile.mkdtemp(prefix="curate-bench-embed-"))
    try:
        wall, stage_rss = run_curate("embed", str(root), str(out / "emb"), "--no-progress", "--model", args.model,
                                     "--batch-size", str(args.batch_size), "--num-workers", str(args.num_workers),
                                     "--resize", args.resize, *(["--size", str(args.size)] if args.size else []))
        summary = json.loads((out / "emb" / "summary.json").read_text())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    stage_rate = summary["rows_out"] / summary["seconds"]
    print(json.dumps({
        "model": args.model, "runtime": getattr(model, "runtime", "torch"), "images": summary["rows_out"],
        "decode_preprocess_images_per_s_one_thread": round(decode_rate, 1),
        "forward_only_images_per_s": round(forward_rate, 1),
        "curate_embed_images_per_s": round(stage_rate, 1),
        "ratio_to_forward_only": round(stage_rate / forward_rate, 3),
        "curate_embed_wall_s_with_model_load": round(wall, 2),
        "curate_embed_peak_rss_mb": round(stage_rss, 1),
        "batch_size": args.batch_size, "num_workers": args.num_workers, "size": args.size, "resize": args.resize,
    }))


if __name__ == "__main__":
    main()
