"""Reading the image shards `curate download` writes: a webdataset tar + sidecar parquet, or a parquet with bytes."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from typing import Any

import fsspec

from curate.io import fs
from curate.io.parquet import iter_batches, open_parquet

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def tar_for(parquet_path: str) -> str:
    return parquet_path[: -len(".parquet")] + ".tar"


def iter_image_samples(parquet_path: str, batch_size: int = 1000) -> Iterator[tuple[dict[str, Any], bytes | None]]:
    """(metadata row, image bytes) per sample, in the shard's row order; bytes are None when the image is missing.

    With a tar beside the parquet the bytes come from the tar (streamed); else from the parquet's `jpg` column.
    """
    tar = tar_for(parquet_path)
    if fs.exists(tar):
        pf = open_parquet(parquet_path)
        cols = [c for c in pf.schema_arrow.names if c != "jpg"]
        pf.close()
        rows = [row for batch in iter_batches(parquet_path, batch_size=batch_size, columns=cols)
                for row in batch.to_pylist()]
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
    for batch in iter_batches(parquet_path, batch_size=batch_size):
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
