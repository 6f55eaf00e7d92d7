"""Reading the image shards `curate download` writes (img2dataset's layout: a webdataset tar + a sidecar parquet
with a row per input row, or a parquet with the bytes), an img2dataset output folder, or curate's older layout
(the shards one folder down, in `images/`, and only the successes in the sidecar)."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc

from curate.io import fs
from curate.io.parquet import iter_batches, open_parquet

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


SUCCESS = "success"  # img2dataset's status of a row whose image is in the shard


def shard_files(folder: str) -> list[str]:
    """The sidecar parquet files of a download output folder (or of a list/glob of them), in order."""
    legacy = fs.join(folder, "images")
    return fs.list_shards(legacy if _is_dir(legacy) else folder)


def _is_dir(path: str) -> bool:
    filesystem, p = fs.url_to_fs(path)
    return filesystem.isdir(p)


def successes(batch: pa.RecordBatch) -> pa.RecordBatch:
    """A sidecar batch's downloaded rows (all of them in a sidecar without a status column)."""
    if "status" not in batch.schema.names:
        return batch
    return batch.filter(pc.fill_null(pc.equal(batch.column("status"), SUCCESS), False))


def iter_sidecar(parquet_path: str, batch_size: int = 1000, columns: list[str] | None = None
                 ) -> Iterator[pa.RecordBatch]:
    """A sidecar's downloaded rows as record batches (`columns` plus status, when it has one)."""
    if columns is not None:
        pf = open_parquet(parquet_path)
        names = pf.schema_arrow.names
        pf.close()
        columns = [*columns, *(["status"] if "status" in names and "status" not in columns else [])]
    for batch in iter_batches(parquet_path, batch_size=batch_size, columns=columns):
        yield successes(batch)


def tar_for(parquet_path: str) -> str:
    return parquet_path[: -len(".parquet")] + ".tar"


def iter_image_samples(parquet_path: str, batch_size: int = 1000) -> Iterator[tuple[dict[str, Any], bytes | None]]:
    """(metadata row, image bytes) per downloaded sample (status success), in the shard's row order; bytes are
    None when the image is missing.

    With a tar beside the parquet the bytes come from the tar (streamed); else from the parquet's `jpg` column.
    """
    tar = tar_for(parquet_path)
    if fs.exists(tar):
        pf = open_parquet(parquet_path)
        cols = [c for c in pf.schema_arrow.names if c != "jpg"]
        pf.close()
        rows = [row for batch in iter_sidecar(parquet_path, batch_size, cols) for row in batch.to_pylist()]
        images = _iter_tar_images(tar)
        pending: dict[str, bytes] = {}
        for row in rows:
            key = row["key"]
            while key not in pending:
                nxt = next(images, None)
                if nxt is None:
                    break
                pending[nxt[0]] = nxt[1]
            yield row, pending.pop(key, None)
        return
    for batch in iter_sidecar(parquet_path, batch_size):
        for row in batch.to_pylist():
            data = row.pop("jpg", None)
            yield row, data


def _iter_tar_images(tar_path: str) -> Iterator[tuple[str, bytes]]:
    """(key, image bytes) from a webdataset tar, streamed; keys split at the first dot, as webdataset does."""
    with fsspec.open(tar_path, "rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            name = member.name.rsplit("/", 1)[-1]
            key, _, ext = name.partition(".")
            if ext.lower() in IMAGE_EXTS:
                handle = tar.extractfile(member)
                if handle is not None:
                    yield key, handle.read()
