"""Benchmark inputs built from real photos: image shards of JPEGs between 256 and 1024 px."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.io.tar import SampleTarWriter
from curate.sample.copies import make_copy
from curate.sample.photos import bundled_photos, tuxpaint_stamps


def real_photos(debian_root: str | None = ".data/debian") -> list:
    photos = [p.load() for p in bundled_photos()]
    photos += [p.load() for p in list(tuxpaint_stamps(debian_root))[:200]]
    return photos


def image_shards(root: Path, n: int, shards: int = 2, seed: int = 0) -> Path:
    """`curate download`-style image shards (tar + sidecar parquet) of n real JPEGs, 256-1024 px long edge."""
    marker = root / f".done-{n}-{shards}-{seed}"
    if marker.exists():
        return root
    rng = np.random.default_rng(seed)
    photos = real_photos()
    out = root / "images"
    out.mkdir(parents=True, exist_ok=True)
    per = int(np.ceil(n / shards))
    k = 0
    for s in range(shards):
        tar = SampleTarWriter(str(out / f"{s:05d}.tar"))
        rows = []
        for _ in range(min(per, n - k)):
            img = photos[int(rng.integers(len(photos)))]
            img, _ = make_copy(img, rng, max_ops=1)
            edge = int(rng.integers(256, 1025))
            scale = edge / max(img.size)
            img = img.resize((max(16, int(img.width * scale)), max(16, int(img.height * scale))))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=90)
            key = f"b{k:07d}"
            tar.write(key, {"jpg": buf.getvalue(), "txt": "bench"})
            rows.append({"key": key, "input_row": k, "url": f"http://bench/{key}.jpg", "caption": f"photo {k}",
                         "width": img.width, "height": img.height})
            k += 1
        tar.close()
        pq.write_table(pa.Table.from_pylist(rows), out / f"{s:05d}.parquet")
    marker.touch()
    os.sync()
    return root
