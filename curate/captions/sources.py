"""The models' entries for a shard's targeted rows (recaption's `--caption-model` / `--paraphrase-model`): the
images are read from the `curate download` shards the rows name (dedup's `shard` column is the image shard's
place in the download output, as embed numbered it),
each decoded as embed decodes it; the captions are the rows' own."""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

import pyarrow as pa

from curate.captions import models
from curate.config import RecaptionOptions
from curate.io import image_shards
from curate.io.images import decode_image


def read_images(images: str, wanted: dict[int, set[str]]) -> dict[tuple[int, str], bytes]:
    """The image bytes of the wanted keys, by (shard, key): one streamed pass over each named shard. A shard's
    number is its place among the download output's shard files, as the executor numbered them for embed."""
    sidecars = dict(enumerate(image_shards.shard_files(images)))
    found: dict[tuple[int, str], bytes] = {}
    for shard, keys in sorted(wanted.items()):
        path = sidecars.get(shard)
        if path is None:
            continue
        for row, data in image_shards.iter_image_samples(path):
            if row["key"] in keys and data is not None:
                found[(shard, row["key"])] = data
    return found


def model_entries(opts: RecaptionOptions, keys: list[str], shards: list[int], captions: list[str | None]
                  ) -> tuple[list[tuple[str, pa.Array]], dict[str, Any]]:
    """For the targeted rows (in order): [(how, one list of entries per row)] for `pools.build_pools(extra=)`,
    and counts for the shard's stats."""
    extra: list[tuple[str, pa.Array]] = []
    stats: Counter[str] = Counter()
    if not keys:
        return extra, {}
    cache = models.Cache()
    try:
        if opts.caption_model:
            captioner = models.captioner(opts.caption_model, opts.model_k, opts.device)
            wanted: dict[int, set[str]] = {}
            for key, shard in zip(keys, shards, strict=True):
                wanted.setdefault(shard, set()).add(key)
            data = read_images(opts.images or "", wanted)
            items, at = [], []
            for i, (key, shard) in enumerate(zip(keys, shards, strict=True)):
                blob = data.get((shard, key))
                if blob is None:
                    stats["caption_model_no_image"] += 1
                    continue
                items.append((hashlib.sha256(blob).hexdigest(), blob))
                at.append(i)

            def caption(blobs: list[bytes]) -> list[list[str]]:
                decoded = [decode_image(b)[0] for b in blobs]
                ok = [j for j, img in enumerate(decoded) if img is not None]
                made = captioner([decoded[j] for j in ok]) if ok else []
                out: list[list[str]] = [[] for _ in blobs]
                for j, texts in zip(ok, made, strict=True):
                    out[j] = texts
                return out

            outputs, generated = models.generate_cached(captioner.key, items, caption, opts.model_batch_size, cache)
            per_row: list[list[str]] = [[] for _ in keys]
            for i, texts in zip(at, outputs, strict=True):
                per_row[i] = texts
            stats["caption_model_images"] += len(items)
            stats["caption_model_generated"] += generated
            extra.append(("caption_model", pa.array(per_row, pa.list_(pa.string()))))
        if opts.paraphrase_model:
            paraphraser = models.paraphraser(opts.paraphrase_model, opts.model_k, opts.paraphrase_prompt, opts.device)
            rows = [i for i, c in enumerate(captions) if c and c.strip()]
            items = [(models.text_digest(captions[i] or ""), captions[i]) for i in rows]
            outputs, generated = models.generate_cached(paraphraser.key, items, paraphraser, opts.model_batch_size,
                                                        cache)
            per_row = [[] for _ in keys]
            for i, texts in zip(rows, outputs, strict=True):
                per_row[i] = texts
            stats["paraphrase_model_captions"] += len(items)
            stats["paraphrase_model_generated"] += generated
            extra.append(("paraphrase_model", pa.array(per_row, pa.list_(pa.string()))))
    finally:
        cache.close()
    return extra, dict(stats)


def models_used(opts: RecaptionOptions) -> dict[str, str]:
    """Which model made each kind of model entry (the captions files' metadata and the report say so)."""
    out = {}
    if opts.caption_model:
        out["caption_model"] = opts.caption_model
    if opts.paraphrase_model:
        out["paraphrase_model"] = opts.paraphrase_model
    return out

