"""Build the sample: real photos, AugLy copies with the same or a different caption, a few hostile rows."""

from __future__ import annotations

import io
import os
import shutil
from typing import Any

import numpy as np
import pyarrow as pa

from curate.config import SampleOptions
from curate.io.fs import write_bytes_atomic, write_json_atomic, write_parquet_atomic
from curate.sample.copies import make_copy
from curate.sample.photos import Photo, bundled_photos, tuxpaint_stamps

CAPTION_VARIANTS = (
    "photo of {c}",
    "{c} (reposted)",
    "image: {c}",
    "{c}, high resolution",
    "wallpaper - {c}",
    "{c} #photography",
)

TRUTH_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("source_key", pa.string()),
        ("is_copy", pa.bool_()),
        ("transform", pa.string()),
        ("same_caption", pa.bool_()),
        ("origin", pa.string()),
        ("expect", pa.string()),
    ]
)
INPUT_SCHEMA = pa.schema(
    [("key", pa.string()), ("url", pa.string()), ("caption", pa.string()), ("width", pa.int32()), ("height", pa.int32())]
)


def _jpeg_bytes(img: Any, quality: int = 92) -> bytes:  # noqa: ANN401 (PIL image)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def build_sample(opts: SampleOptions) -> dict[str, Any]:
    """Write `files/`, `input/{i:05d}.parquet`, `truth.parquet` and `sample.json` under `out_dir`.

    Deterministic for a given seed and set of available photos (the Debian stamps are used when installed
    and reported in sample.json either way).
    """
    out_dir, seed, base_url, shards, bad_rows = opts.output, opts.seed, opts.base_url, opts.shards, opts.bad_rows
    copy_share, max_copies, same_caption_share = opts.copy_share, opts.max_copies, opts.same_caption_share
    max_stamps, debian_root = opts.max_stamps, opts.debian_root
    rng = np.random.default_rng(seed)
    photos: list[Photo] = bundled_photos()
    stamps = list(tuxpaint_stamps(debian_root))
    missing = []
    if stamps:
        pick = sorted(rng.choice(len(stamps), size=min(max_stamps, len(stamps)), replace=False).tolist())
        photos += [stamps[i] for i in pick]
    else:
        missing.append("tuxpaint-stamps-default (Debian): not installed, sample uses bundled photos only")

    files_dir = os.path.join(out_dir, "files")
    input_dir = os.path.join(out_dir, "input")
    shutil.rmtree(input_dir, ignore_errors=True)
    os.makedirs(files_dir, exist_ok=True)
    os.makedirs(input_dir, exist_ok=True)
    base = base_url.rstrip("/")

    rows: list[dict[str, Any]] = []
    truth: list[dict[str, Any]] = []
    for i, photo in enumerate(photos):
        img = photo.load()
        key = f"o{i:04d}"
        write_bytes_atomic(os.path.join(files_dir, f"{key}.jpg"), _jpeg_bytes(img))
        rows.append({"key": key, "url": f"{base}/files/{key}.jpg", "caption": photo.caption,
                     "width": img.width, "height": img.height})
        truth.append({"key": key, "source_key": key, "is_copy": False, "transform": None, "same_caption": True,
                      "origin": photo.source_id, "expect": "image"})
        if rng.random() >= copy_share:
            continue
        # per duplicated photo, as on the web: either every copy carries the original caption (the case the
        # research finds riskiest) or each copy has its own variant of it
        same_cluster = bool(rng.random() < same_caption_share)
        for j in range(int(rng.integers(1, max_copies + 1))):
            copy, desc = make_copy(img, rng)
            ckey = f"c{i:04d}_{j}"
            same = same_cluster
            caption = photo.caption if same else str(rng.choice(CAPTION_VARIANTS)).format(c=photo.caption)
            write_bytes_atomic(os.path.join(files_dir, f"{ckey}.jpg"), _jpeg_bytes(copy))
            rows.append({"key": ckey, "url": f"{base}/files/{ckey}.jpg", "caption": caption,
                         "width": copy.width, "height": copy.height})
            truth.append({"key": ckey, "source_key": key, "is_copy": True, "transform": desc, "same_caption": same,
                          "origin": photo.source_id, "expect": "image"})

    if bad_rows:
        write_bytes_atomic(os.path.join(files_dir, "not_an_image.html"), b"<!doctype html><html><body>moved</body></html>")
        hostile = [
            ("bad_404", f"{base}/files/does_not_exist.jpg", "a photo that is gone (404)"),
            ("bad_html", f"{base}/files/not_an_image.html", "an HTML page where an image should be"),
            ("bad_ftp", "ftp://example.org/image.jpg", "an ftp url, never fetched"),
            ("bad_file", "file:///etc/passwd", "a local file url, never read"),
        ]
        for key, url, caption in hostile:
            rows.append({"key": key, "url": url, "caption": caption, "width": None, "height": None})
            truth.append({"key": key, "source_key": None, "is_copy": False, "transform": None, "same_caption": True,
                          "origin": "hostile", "expect": "reject"})

    order = rng.permutation(len(rows))
    rows = [rows[i] for i in order]
    n_shards = max(1, min(shards, len(rows)))
    for s, part in enumerate(np.array_split(np.arange(len(rows)), n_shards)):
        table = pa.Table.from_pylist([rows[i] for i in part], schema=INPUT_SCHEMA)
        path = os.path.join(input_dir, f"{s:05d}.parquet")
        write_parquet_atomic(table, path)
    truth_table = pa.Table.from_pylist(sorted(truth, key=lambda r: r["key"]), schema=TRUTH_SCHEMA)
    write_parquet_atomic(truth_table, os.path.join(out_dir, "truth.parquet"))
    summary = {
        "seed": seed,
        "base_url": base,
        "rows": len(rows),
        "originals": sum(1 for t in truth if t["origin"] != "hostile" and not t["is_copy"]),
        "copies": sum(1 for t in truth if t["is_copy"]),
        "copies_same_caption": sum(1 for t in truth if t["is_copy"] and t["same_caption"]),
        "hostile_rows": sum(1 for t in truth if t["origin"] == "hostile"),
        "shards": n_shards,
        "sources": sorted({p.loader for p in photos}),
        "missing": missing,
    }
    write_json_atomic(os.path.join(out_dir, "sample.json"), summary)
    return summary
