"""`curate download`: input shards of URLs and captions -> image shards, every row accounted for.

img2dataset does the fetching and resizing. curate drives its `Downloader` in this process, one input shard
at a time and in chunks of `chunk_rows` rows (bounded memory), rather than through `img2dataset.download()`,
for three reasons: the URL guards of `curate.net.urlpolicy` must sit in the process that opens connections;
images must be checked (`curate.io.images`) before img2dataset's decoder sees them, because it decodes first
and checks `max_image_area` after; and img2dataset's writers would key samples by its own counters while
curate keys them by the input's key, writes them in input order (deterministic tars) and routes every failure
to the rejects table.
"""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
import types
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate.config import DownloadOptions
from curate.executor import Shard, ShardOutput
from curate.io.images import inspect_image_bytes
from curate.io.keys import generated_key, sanitize_key
from curate.io.parquet import iter_batches, open_parquet, write_table
from curate.io.tar import SampleTarWriter
from curate.net.urlpolicy import PREFIX, check_url, install_guarded_opener, reject_message
from curate.optspec import ensure_valid
from curate.schemas import normalize_input

Options = DownloadOptions  # this stage's options (curate/config.py)
STAGE = "download"


REJECT_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("input_row", pa.int64()),
        ("url", pa.string()),
        ("caption", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
    ]
)

# img2dataset's sidecar columns and types (key, status, error_message, sizes as int32, exif, sha256) and curate's
# own (input_row, source_key); the input's other columns follow them
BASE_FIELDS = [
    ("key", pa.string()),
    ("input_row", pa.int64()),
    ("url", pa.string()),
    ("caption", pa.string()),
    ("status", pa.string()),
    ("error_message", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("original_width", pa.int32()),
    ("original_height", pa.int32()),
    ("sha256", pa.string()),
    ("exif", pa.string()),
    ("source_key", pa.string()),
]
# input columns renamed on the way out because the output has its own column of that name
INPUT_RENAMES = {"width": "source_width", "height": "source_height"}
STATUS_DICT_MAX = 1000  # distinct messages kept in {i}_stats.json's status_dict (img2dataset caps it likewise)


def reason_of(message: str | None, stage_of_failure: str) -> tuple[str, str]:
    """Map an img2dataset error string to a rejects reason code (schemas/rejects.yaml) and a detail."""
    msg = (message or "").strip()
    if PREFIX in msg:  # a curate guard's decision, possibly wrapped by urllib ("<urlopen error ...>")
        rest = msg[msg.index(PREFIX) + len(PREFIX) :].rstrip(">")
        reason, _, detail = rest.partition(": ")
        return reason, detail
    low = msg.lower()
    if "redirection to url" in low and "is not allowed" in low:  # urllib refused a redirect to file:// etc.
        return "unsupported_scheme", msg
    if msg.startswith("HTTP Error"):
        return "http_error", msg
    if "timed out" in low or "timeout" in low:
        return "timeout", msg
    if "x-robots-tag" in low:
        return "robots_disallowed", msg
    if "hash mismatch" in low:
        return "hash_mismatch", msg
    if "unknown url type" in low:
        return "unsupported_scheme", msg
    if stage_of_failure == "failed_to_resize":
        if "too small" in low:
            return "image_too_small", msg
        if "aspect ratio" in low:
            return "aspect_ratio", msg
        if "area too large" in low:
            return "decompression_bomb", msg
        return "decode_error", msg or "the resizer failed"
    if not msg:
        return "downloader_error", "no result from the downloader"
    return "network_error", msg


class _CheckedResizer:
    """img2dataset's Resizer behind curate's byte checks, so bombs and truncated files are never decoded by it."""

    def __init__(self, resizer: Any, max_image_area: int) -> None:  # noqa: ANN401 (img2dataset's class)
        self.resizer = resizer
        self.max_image_area = max_image_area

    def __call__(self, img_stream: io.BytesIO, blurring_bbox_list: Any = None) -> tuple:  # noqa: ANN401
        img_stream.seek(0)
        verdict = inspect_image_bytes(img_stream.getvalue(), self.max_image_area)
        if verdict is not None:
            return None, None, None, None, None, reject_message(*verdict)
        img_stream.seek(0)
        return self.resizer(img_stream, blurring_bbox_list)


class _Collector:
    """Stands in for an img2dataset sample writer: keeps one chunk's results, keyed by input row."""

    def __init__(self) -> None:
        self.results: dict[int, tuple[bytes | None, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> _Collector:  # noqa: ANN401 (img2dataset's writer signature)
        return self

    def reset(self) -> None:
        self.results = {}

    def write(self, img_str: bytes | None, key: str, caption: str | None, meta: dict[str, Any]) -> None:
        with self._lock:
            self.results[int(meta["curate_row"])] = (img_str, meta)

    def close(self) -> None:
        pass


def _img2dataset() -> tuple[type, type]:
    """(Downloader, Resizer). img2dataset's package imports wandb for a logger curate never uses, and importing
    wandb makes two temp folders in $TMPDIR (wandb-artifacts, wandb-media) that only a clean exit removes: every
    killed run left them behind. A placeholder stands in for wandb during that import (unless wandb is already
    imported), and is taken out of sys.modules after, so a later `import wandb` gets the real one."""
    placeholder = None
    if "wandb" not in sys.modules:
        placeholder = sys.modules["wandb"] = types.ModuleType("wandb")
    try:
        from img2dataset.downloader import Downloader
        from img2dataset.resizer import Resizer
    finally:
        if placeholder is not None and sys.modules.get("wandb") is placeholder:
            del sys.modules["wandb"]
    return Downloader, Resizer


def _make_downloader(options: DownloadOptions, collector: _Collector, scratch: str) -> Any:  # noqa: ANN401
    Downloader, Resizer = _img2dataset()  # noqa: N806 (classes)

    resizer = Resizer(
        image_size=options.image_size,
        resize_mode=options.resize_mode,
        resize_only_if_bigger=options.resize_only_if_bigger,
        encode_quality=options.encode_quality,
        encode_format=options.encode_format,
        min_image_size=options.min_image_size,
        max_image_area=options.max_image_area,
        max_aspect_ratio=options.max_aspect_ratio,
    )
    return Downloader(
        sample_writer_class=collector,
        resizer=_CheckedResizer(resizer, options.max_image_area),
        thread_count=options.threads,
        save_caption=True,
        extract_exif=True,
        output_folder=scratch,
        column_list=["url", "caption", "curate_row"],
        timeout=options.timeout,
        number_sample_per_shard=10**9,
        oom_shard_count=5,
        compute_hash="sha256",
        verify_hash_type=None,
        encode_format=options.encode_format,
        retries=options.retries,
        user_agent_token="curate",
        disallowed_header_directives=["noai", "noimageai", "noindex", "noimageindex"],
    )


def _caption_text(value: object) -> tuple[str | None, str | None]:
    """(caption, error): bytes are decoded as UTF-8; anything else non-string is an error."""
    if value is None or isinstance(value, str):
        return value, None
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8"), None
        except UnicodeDecodeError as err:
            return None, f"caption is not valid UTF-8 ({err.reason} at byte {err.start})"
    return str(value), None


def download_shard(shard: Shard, out: ShardOutput, opts: DownloadOptions) -> dict[str, Any]:
    """The stage core: one input shard -> img2dataset's `{i}.tar` + `{i}.parquet` + `{i}_stats.json`, and
    curate's `rejects/{i}.parquet`. The parquet has a row for every input row (status `success`,
    `failed_to_download` or `failed_to_resize`, as img2dataset writes it); the tar holds the successes."""
    install_guarded_opener(opts.allow_private_network, opts.max_bytes)
    started = time.time()
    fmt = opts.output_format
    tar = SampleTarWriter(out.path(f"{shard.name}.tar")) if fmt == "webdataset" else None
    meta_path = out.path(f"{shard.name}.parquet")
    meta_writer: pq.ParquetWriter | None = None
    out_schema: pa.Schema | None = None
    rejects: list[dict[str, Any]] = []
    reasons: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    messages: Counter[str] = Counter()
    seen_keys: set[str] = set()
    rows_in = rows_out = 0
    scratch = os.path.join(out.tmp_dir, "scratch")
    os.makedirs(scratch, exist_ok=True)

    def fail(rec: dict[str, Any], status: str, reason: str, detail: str) -> dict[str, Any]:
        """Record a row that did not download: in the rejects table, and in the sidecar with img2dataset's
        status and an error_message that names curate's reason."""
        reasons[reason] += 1
        rejects.append({"key": rec["key"], "input_row": rec["input_row"], "url": rec["url"],
                        "caption": rec["caption"], "stage": STAGE, "reason": reason, "detail": detail})
        return {**rec, "status": status, "error_message": reject_message(reason, detail)}

    collector = _Collector()
    downloader = _make_downloader(opts, collector, scratch)  # once per shard; each chunk reuses it
    pf = open_parquet(shard.input)
    renames = normalize_input(pf.schema_arrow, dict(opts.column_map), source=shard.input)
    pf.close()
    for chunk_no, batch in enumerate(iter_batches(shard.input, batch_size=opts.chunk_rows, renames=renames)):
        extra_fields = [f for f in batch.schema if f.name not in ("url", "caption", "key")]
        if out_schema is None:
            fields = list(BASE_FIELDS)
            fields += [(INPUT_RENAMES.get(f.name, f.name), f.type) for f in extra_fields]
            if fmt == "parquet":
                fields.append(("jpg", pa.binary()))
            out_schema = pa.schema(fields)
            meta_writer = pq.ParquetWriter(meta_path, out_schema, compression="zstd")
        rows = batch.to_pylist()
        base = rows_in
        rows_in += len(rows)
        sidecar: dict[int, dict[str, Any]] = {}  # input row -> its sidecar row, for every row of the chunk
        prepared: dict[int, dict[str, Any]] = {}
        fetch: list[dict[str, Any]] = []
        for j, rec in enumerate(rows):
            row = base + j
            has_key = "key" in rec and rec["key"] is not None
            key = sanitize_key(rec.get("key")) or generated_key(shard.index, row)
            caption, cap_err = _caption_text(rec.get("caption"))
            url = rec.get("url")
            extras = {INPUT_RENAMES.get(f.name, f.name): rec.get(f.name) for f in extra_fields}
            base_rec = {"key": key, "input_row": row, "url": url.strip() if isinstance(url, str) else None,
                        "caption": caption, "source_key": str(rec["key"]) if has_key else None, **extras}
            if key in seen_keys:
                sidecar[row] = fail(base_rec, "failed_to_download", "duplicate_key",
                                    f"key {key!r} already used in this shard")
                continue
            seen_keys.add(key)
            if cap_err:
                sidecar[row] = fail(base_rec, "failed_to_download", "caption_not_utf8", cap_err)
                continue
            verdict = check_url(url, opts.allow_private_network)
            if verdict is not None:
                sidecar[row] = fail({**base_rec, "url": url if isinstance(url, str) else None},
                                    "failed_to_download", *verdict)
                continue
            prepared[row] = base_rec
            fetch.append({"url": base_rec["url"], "caption": caption, "curate_row": row})

        collector.reset()
        if fetch:
            chunk_file = os.path.join(scratch, f"chunk{chunk_no}.feather")
            table = pa.Table.from_pylist(
                fetch, schema=pa.schema([("url", pa.string()), ("caption", pa.string()), ("curate_row", pa.int64())])
            )
            with pa.OSFile(chunk_file, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
            downloader.download_shard((chunk_no, chunk_file))

        for row in sorted(prepared):
            rec = prepared[row]
            img, meta = collector.results.get(row, (None, {}))
            if img is None or meta.get("status") != "success":
                status = "failed_to_resize" if meta.get("status") == "failed_to_resize" else "failed_to_download"
                sidecar[row] = fail(rec, status, *reason_of(meta.get("error_message"), meta.get("status", "")))
                continue
            rec.update(
                status="success", error_message=None, width=meta["width"], height=meta["height"],
                original_width=meta["original_width"], original_height=meta["original_height"],
                sha256=meta["sha256"], exif=meta.get("exif"),
            )
            if tar is not None:
                tar.write(rec["key"], {opts.encode_format: img, "txt": rec["caption"] or "", "json": rec})
            else:
                rec = {**rec, "jpg": img}
            sidecar[row] = rec
            rows_out += 1
        ordered = [sidecar[row] for row in sorted(sidecar)]
        for rec in ordered:
            statuses[rec["status"]] += 1
            messages[rec["error_message"] or "success"] += 1
        if ordered:
            assert meta_writer is not None
            meta_writer.write_table(pa.Table.from_pylist(ordered, schema=out_schema))
        out.advance(len(rows))

    if meta_writer is None:  # empty input shard: still write an empty, well-typed table
        out_schema = pa.schema(BASE_FIELDS + ([("jpg", pa.binary())] if fmt == "parquet" else []))
        meta_writer = pq.ParquetWriter(meta_path, out_schema, compression="zstd")
    meta_writer.close()
    if tar is not None:
        tar.close()
    rejects.sort(key=lambda r: r["input_row"])
    write_table(pa.Table.from_pylist(rejects, schema=REJECT_SCHEMA), out.path(f"rejects/{shard.name}.parquet"))
    ended = time.time()
    img2dataset_stats = {  # img2dataset's {i}_stats.json fields, so scripts that sum them keep working
        "count": rows_in, "successes": rows_out, "failed_to_download": statuses["failed_to_download"],
        "failed_to_resize": statuses["failed_to_resize"], "duration": ended - started, "start_time": started,
        "end_time": ended, "status_dict": dict(messages.most_common(STATUS_DICT_MAX)),
    }
    with open(out.path(f"{shard.name}_stats.json"), "w", encoding="utf-8") as f:
        json.dump(img2dataset_stats, f, indent=4)
    return {
        "rows_in": rows_in,
        "rows_out": rows_out,
        "rows_rejected": len(rejects),
        "reasons": dict(sorted(reasons.items())),
        "output_format": fmt,
    }


def run(opts: DownloadOptions) -> dict[str, Any]:
    """Check every input shard's schema, download the shards not done yet, return the summary."""
    from curate.executor import execution, run_stage, summarize
    from curate.io.fs import join, list_shards, write_json_atomic
    from curate.io.laion import check_input_shards
    from curate.io.parquet import num_rows

    ensure_valid(opts)
    inputs = list_shards(list(opts.inputs))
    check_input_shards(inputs, dict(opts.column_map))
    total = sum(num_rows(p) for p in inputs)
    stats = run_stage(STAGE, download_shard, inputs, opts.output, opts, rows_total=total, **execution(opts))
    summary = summarize(stats)
    write_json_atomic(join(opts.output, "summary.json"), summary)
    return summary
