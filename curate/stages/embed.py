"""`curate embed`: image shards -> row-aligned embeddings in clip-retrieval's layout.

Per image shard i: `img_emb/img_emb_{i}.npy` (float16, L2-normalised; uint8 packed bits for hashes),
`text_emb/text_emb_{i}.npy` when a text model is given, `metadata/metadata_{i}.parquet` (row k describes
row k of the npy files), `rejects/{i}.parquet` for images that could not be decoded; `manifest.json` at the
root. Decoding and preprocessing run in a thread pool ahead of the model, so the model does not wait on
JPEG decoding when decoding is the cheaper of the two.
"""

from __future__ import annotations

import io
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa

from curate import __version__
from curate.config import EmbedOptions
from curate.executor import Shard, ShardOutput
from curate.io.image_shards import iter_image_samples
from curate.io.images import decode_image
from curate.io.parquet import open_parquet, write_table
from curate.optspec import ensure_valid
from curate.stages.download import REJECT_SCHEMA

Options = EmbedOptions  # this stage's options (curate/config.py)
STAGE = "embed"

METADATA_DROP = ("jpg", "exif", "status", "error_message")  # every metadata row is a success: status says nothing

_MODELS: dict[tuple, Any] = {}  # loaded once per process (a worker keeps its model across shards)


def load_models(opts: EmbedOptions) -> tuple[Any, Any]:
    """(image model, text model or None) for embed's options, loaded and warmed up once per process (a worker
    keeps its model across shards); dedup --templates loads the embed run's model through it too."""
    from curate.models import load_image_model, load_text_model

    key = (opts.model, opts.text_model, opts.device, opts.runtime, opts.pooling, opts.resize,
           opts.size)
    if key not in _MODELS:
        image = load_image_model(opts.model, opts.device, runtime=opts.runtime, pooling=opts.pooling,
                                 resize=opts.resize, size=opts.size)
        text = load_text_model(opts.text_model, opts.device, image) if opts.text_model else None
        image.warmup(opts.batch_size)
        _MODELS.clear()
        _MODELS[key] = (image, text)
    return _MODELS[key]


def prefetch_map(fn: Callable[[Any], Any], items: Iterable[Any], workers: int, ahead: int) -> Iterator[tuple[Any, Any]]:
    """(item, fn(item)) in input order, computing up to `ahead` results in `workers` threads in advance."""
    if workers <= 0:
        for item in items:
            yield item, fn(item)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="curate-decode") as pool:
        queue: deque = deque()
        for item in items:
            queue.append((item, pool.submit(fn, item)))
            if len(queue) >= ahead:
                first, fut = queue.popleft()
                yield first, fut.result()
        while queue:
            first, fut = queue.popleft()
            yield first, fut.result()


def embed_shard(shard: Shard, out: ShardOutput, opts: EmbedOptions) -> dict[str, Any]:
    image_model, text_model = load_models(opts)
    max_area = opts.max_image_area

    def prepare(sample: tuple[dict[str, Any], bytes | None]) -> tuple[Any, str | None, str | None]:
        _, data = sample
        if data is None:
            return None, "missing_image", "no image bytes for this key in the shard"
        img, reason, detail = decode_image(data, max_area, image_model.draft_size)
        if img is None:
            return None, reason, detail
        try:
            return image_model.preprocess(img), None, None
        except Exception as err:  # noqa: BLE001 (a degenerate image the preprocessing cannot take)
            return None, "preprocess_error", f"{type(err).__name__}: {err}"

    rows: list[dict[str, Any]] = []
    chunks: list[np.ndarray] = []
    rejects: list[dict[str, Any]] = []
    reasons: Counter[str] = Counter()
    batch: list[Any] = []
    rows_in = 0

    def flush() -> None:
        if batch:
            chunks.append(image_model.embed(batch))
            out.advance(len(batch))
            batch.clear()

    samples = iter_image_samples(shard.input)
    ahead = max(2 * opts.batch_size, 8)
    for (meta, _), (arr, reason, detail) in prefetch_map(prepare, samples, opts.num_workers, ahead):
        rows_in += 1
        if arr is None:
            reasons[reason] += 1
            rejects.append({"key": meta.get("key"), "input_row": meta.get("input_row"), "url": meta.get("url"),
                            "caption": meta.get("caption"), "stage": STAGE, "reason": reason, "detail": detail})
            continue
        rows.append({k: v for k, v in meta.items() if k not in METADATA_DROP}
                    | {"shard": shard.index, "npy_row": len(rows)})
        batch.append(arr)
        if len(batch) >= opts.batch_size:
            flush()
    flush()

    bits = image_model.kind == "bits"
    width = image_model.dim // 8 if bits else image_model.dim
    emb = np.concatenate(chunks) if chunks else np.zeros((0, width), np.uint8 if bits else np.float32)
    _save_npy(out.path(f"img_emb/img_emb_{shard.name}.npy"), emb.astype(np.uint8 if bits else np.float16))
    if text_model is not None:
        captions = [r.get("caption") or "" for r in rows]
        text = [text_model.embed_text(captions[i : i + 256]) for i in range(0, len(captions), 256)]
        text_emb = np.concatenate(text) if text else np.zeros((0, text_model.dim), np.float32)
        _save_npy(out.path(f"text_emb/text_emb_{shard.name}.npy"), text_emb.astype(np.float16))
    write_table(_metadata_table(rows, shard.input), out.path(f"metadata/metadata_{shard.name}.parquet"))
    write_table(pa.Table.from_pylist(rejects, schema=REJECT_SCHEMA), out.path(f"rejects/{shard.name}.parquet"))
    return {"rows_in": rows_in, "rows_out": len(rows), "rows_rejected": len(rejects),
            "reasons": dict(sorted(reasons.items()))}


def _metadata_table(rows: list[dict[str, Any]], sidecar: str) -> pa.Table:
    """The metadata rows with the sidecar's column types (width stays int32, as img2dataset writes it), then
    `shard` and `npy_row` (int64): row k describes row k of the npy files, whatever `input_row` says."""
    pf = open_parquet(sidecar)
    source = pf.schema_arrow
    pf.close()
    fields = [f for f in source if f.name not in METADATA_DROP and f.name not in ("shard", "npy_row")]
    schema = pa.schema([*fields, ("shard", pa.int64()), ("npy_row", pa.int64())])
    return pa.Table.from_pylist(rows, schema=schema)


def _save_npy(path: str, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def manifest(opts: EmbedOptions) -> dict[str, Any]:
    image_model, text_model = load_models(opts)
    bits = image_model.kind == "bits"
    doc = {
        **image_model.describe(),
        "img_emb_dtype": "uint8 (packed bits, np.packbits)" if bits else "float16",
        "normalization": None if bits else "l2",
        "layout": "clip-retrieval: img_emb/img_emb_{i}.npy, text_emb/text_emb_{i}.npy, metadata/metadata_{i}.parquet",
        "row_alignment": "row k of every npy file of shard i is row k of metadata_{i}.parquet",
        "curate_version": __version__,
    }
    if text_model is not None:
        doc.update(text_model.describe(), text_emb_dtype="float16")
    return doc


def run(opts: EmbedOptions) -> dict[str, Any]:
    """Embed every image shard of a `curate download` output folder (or a list/glob of its parquet files)."""
    from curate.executor import execution, run_stage, summarize
    from curate.io import fs
    from curate.io.image_shards import shard_files
    from curate.io.parquet import num_rows

    ensure_valid(opts)
    image_dir, output = opts.images, opts.output
    inputs = shard_files(image_dir)
    total = sum(num_rows(p) for p in inputs)  # sidecar rows (failed downloads included): the bar's upper bound
    doc = manifest(opts)  # loads the model here: a spec without weights fails before any shard starts
    fs.ensure_dir(output)
    stats = run_stage(STAGE, embed_shard, inputs, output, opts, rows_total=total, **execution(opts))
    fs.write_json_atomic(fs.join(output, "manifest.json"), doc)
    summary = {**summarize(stats), "model": opts.model,
               "seconds": round(sum(s.get("seconds", 0.0) for s in stats), 3)}  # shard wall time, for benchmarks
    fs.write_json_atomic(fs.join(output, "summary.json"), summary)
    return summary
