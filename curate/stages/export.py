"""`curate export`: image shards + dedup tables + caption pools -> training-ready webdataset tars.

A global plan (metadata only) lists the samples to export in input order and cuts them into output shards of
`--shard-size` samples, fewer when that makes `--min-shards` tars (gap-free numbering, whatever the input shard sizes); each output shard is then one unit
of the shard executor, so tars are atomic and a rerun resumes. Each sample: `{key}.jpg` (the downloaded bytes,
not re-encoded), `{key}.txt` (the caption to use), `{key}.json` (caption pool and how each entry was made,
dup_count, cluster_id, memorization_risk, original metadata); a sidecar `{j:05d}.parquet` lists them.
"""

from __future__ import annotations

import functools
import hashlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate import optspec
from curate.config import ExportOptions
from curate.errors import CurateError
from curate.executor import Shard, ShardOutput, execution, output_lock, run_stage, summarize
from curate.io import fs
from curate.io.image_shards import iter_image_samples, iter_sidecar, shard_files
from curate.io.keys import sanitize_key
from curate.io.parquet import read_table, write_table
from curate.io.tar import SampleTarWriter
from curate.optspec import ensure_valid

Options = ExportOptions  # this stage's options (curate/config.py)
STAGE = "export"
SIDECAR_SCHEMA = pa.schema([
    ("key", pa.string()), ("caption", pa.string()), ("captions", pa.list_(pa.string())), ("dup_count", pa.int64()),
    ("cluster_id", pa.int64()), ("memorization_risk", pa.float32()), ("keep", pa.bool_()),
    ("source_shard", pa.string()), ("url", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
])


def _table_by_key(folder: str | None, sub: str, columns: list[str]) -> dict[str, dict[str, Any]]:
    if not folder:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for path in fs.list_shards(fs.join(folder, sub)):
        for row in read_table(path, columns=columns).to_pylist():
            out[row["key"]] = row
    return out


def shard_size(samples: int, most: int, min_shards: int) -> int:
    """Samples per output tar: at most `most`, and small enough to make `min_shards` tars when there are that
    many samples, so that a DataLoader with several workers (webdataset splits by shard) gives each one work."""
    return max(1, min(most, -(-samples // max(1, min_shards))))


def plan(opts: ExportOptions) -> tuple[pa.Table, dict[str, int], int]:
    """(key, source parquet, output shard) for every sample to export, in input order; the counts of image
    rows left out, by reason; and the number of image rows read."""
    dedup = _table_by_key(opts.dedup, "samples", ["key", "keep"])
    keys, sources = [], []
    excluded: dict[str, int] = defaultdict(int)
    planned: set[str] = set()
    seen = 0
    for path in shard_files(opts.images):
        for key in (k for batch in iter_sidecar(path, columns=["key"]) for k in batch.column("key").to_pylist()):
            seen += 1
            if key in planned:  # the same key in two input shards: tars need unique keys, the first one wins
                excluded["duplicate_key"] += 1
                continue
            if opts.dedup and key not in dedup:
                excluded["dropped_by_dedup"] += 1  # dedup --action drop lists it in its drops/
                continue
            if dedup and not dedup[key]["keep"] and not opts.include_duplicates:
                excluded["duplicate_not_kept"] += 1  # dedup kept another member of its cluster
                continue
            keys.append(key)
            planned.add(key)
            sources.append(path)
    if not keys:
        raise CurateError(f"{opts.images}: nothing to export")
    size = shard_size(len(keys), opts.shard_size, opts.min_shards)
    out = [i // size for i in range(len(keys))]
    return pa.table({"key": keys, "source": sources, "out_shard": out}), dict(sorted(excluded.items())), seen


@functools.cache
def _joined(dedup: str | None, captions: str | None, _stamps: object = None) -> tuple[dict, dict]:
    return (_table_by_key(dedup, "samples", ["key", "cluster_id", "dup_count", "memorization_risk", "keep"]),
            _table_by_key(captions, "captions", ["key", "captions", "ops"]))


@dataclass(frozen=True)
class Job:
    """What each export shard task gets: the options, and the plan's digest (recorded with them: new inputs
    change the plan, and a changed plan needs --overwrite)."""

    options: ExportOptions
    plan: str

    def recorded(self) -> dict[str, Any]:
        return {**optspec.recorded(self.options), "plan": self.plan}


def export_shard(shard: Shard, out: ShardOutput, job: Job) -> dict[str, Any]:
    options = job.options
    j = int(shard.input.rsplit(":", 1)[1])
    plan_table = pq.read_table(fs.url_to_fs(fs.join(shard.output_root, "_work", "plan.parquet"))[1],
                               filters=[("out_shard", "=", j)])
    wanted = plan_table.column("key").to_pylist()
    # keyed by the inputs' manifests too: a Dask worker may serve a later run whose dedup/captions were redone
    stamps = tuple(fs.stamp(fs.join(d, "_stage.json")) if d else None for d in (options.dedup, options.captions))
    dedup, captions = _joined(options.dedup, options.captions, stamps)
    found: dict[str, tuple[dict[str, Any], bytes | None]] = {}
    planned_source = dict(zip(wanted, plan_table.column("source").to_pylist(), strict=True))
    for source in dict.fromkeys(planned_source.values()):
        for meta, data in iter_image_samples(source):
            if planned_source.get(meta["key"]) == source and meta["key"] not in found:
                found[meta["key"]] = (meta, data)
    with SampleTarWriter(out.path(f"{shard.name}.tar")) as tar:
        rows = []
        missing = defaultdict(int)
        for key in wanted:
            meta, data = found.get(key, (None, None))
            if meta is None or data is None:
                missing["missing_image"] += 1
                continue
            safe = sanitize_key(key)
            d, c = dedup.get(key, {}), captions.get(key, {})
            if c:  # recaption's pool: its first entry is the caption to use
                pool = c["captions"] or []
                caption = pool[0] if pool else None
            else:
                caption = meta.get("caption")
                pool = [caption] if caption else []
            info = {
                "key": safe, "caption": caption, "captions": pool, "caption_ops": c.get("ops") or ["original"] * len(pool),
                "dup_count": d.get("dup_count", 1), "cluster_id": d.get("cluster_id"),
                "memorization_risk": d.get("memorization_risk", 0.0), "keep": d.get("keep", True),
                "metadata": {k: v for k, v in meta.items() if k not in ("exif",)},
            }
            tar.write(safe, {"jpg": data, "txt": caption or "", "json": info})
            rows.append({"key": safe, "caption": caption, "captions": pool, "dup_count": info["dup_count"],
                         "cluster_id": info["cluster_id"], "memorization_risk": info["memorization_risk"],
                         "keep": info["keep"], "source_shard": meta.get("shard") if isinstance(meta.get("shard"), str)
                         else str(meta.get("shard", "")), "url": meta.get("url"), "width": meta.get("width"),
                         "height": meta.get("height")})
    write_table(pa.Table.from_pylist(rows, schema=SIDECAR_SCHEMA), out.path(f"{shard.name}.parquet"))
    return {"rows_in": len(wanted), "rows_out": len(rows), "rows_rejected": sum(missing.values()),
            "reasons": dict(missing)}


def run(opts: ExportOptions) -> dict[str, Any]:
    """The stage, holding its output's lock from the global step to the report (executor.output_lock)."""
    ensure_valid(opts)
    with output_lock(opts.output):
        return _run(opts)


def _run(opts: ExportOptions) -> dict[str, Any]:
    output = opts.output
    table, excluded, image_rows = plan(opts)
    fs.write_parquet_atomic(table, fs.join(output, "_work", "plan.parquet"))
    n_out = int(table.column("out_shard").to_numpy().max()) + 1
    units = [f"export:{j}" for j in range(n_out)]
    digest = hashlib.sha256("\n".join(table.column("key").to_pylist()).encode()).hexdigest()
    stats = run_stage(STAGE, export_shard, units, output, Job(opts, digest), rows_total=table.num_rows,
                      **execution(opts))
    summary = {**summarize(stats), "image_rows": image_rows, "excluded": excluded}
    fs.write_json_atomic(fs.join(output, "summary.json"), summary)
    return summary
