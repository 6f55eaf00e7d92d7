"""The embeddings of a `curate embed` output, read shard by shard (memory-mapped npy files)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import CurateError
from curate.io import fs

META_COLUMNS = ("key", "shard", "input_row", "url", "caption", "width", "height", "aesthetic")


@dataclass
class EmbeddingSet:
    """All shards of one embed output: paths, row offsets, kind (float or bits) and the joined metadata."""

    root: str
    shards: list[int]
    emb_paths: list[str]
    text_paths: list[str | None]
    offsets: np.ndarray  # offsets[s] = global row of shard s's first row; offsets[-1] = N
    dim: int
    kind: str  # "float" or "bits"
    metadata: pa.Table  # META_COLUMNS present in the input, row-aligned with the global order
    transform: Callable[[np.ndarray], np.ndarray] | None = None  # e.g. whitening, applied to float rows on read

    def with_transform(self, transform: Callable[[np.ndarray], np.ndarray] | None, dim: int | None = None) -> EmbeddingSet:
        from dataclasses import replace

        return replace(self, transform=transform, dim=dim or self.dim)

    @property
    def n(self) -> int:
        return int(self.offsets[-1])

    def iter_blocks(self, dtype: type = np.float32) -> Iterator[tuple[int, np.ndarray]]:
        """(global start row, block) per shard, converted to `dtype` one shard at a time."""
        for start, path in zip(self.offsets[:-1], self.emb_paths, strict=True):
            arr = np.load(path, mmap_mode="r")
            if self.kind == "float" and self.transform is not None:
                yield int(start), np.ascontiguousarray(self.transform(arr), dtype=dtype)
            else:
                yield int(start), np.ascontiguousarray(arr, dtype=dtype if self.kind == "float" else np.uint8)

    def load_all(self, dtype: type = np.float16) -> np.ndarray:
        if self.kind == "bits":
            dtype = np.uint8
        out = np.empty((self.n, self.dim if self.kind == "float" else self.dim // 8), dtype=dtype)
        for start, block in self.iter_blocks(dtype):
            out[start : start + len(block)] = block
        return out

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """Rows by global index, read through the memory-mapped shards (no full copy)."""
        rows = np.asarray(rows, np.int64)
        width = self.dim if self.kind == "float" else self.dim // 8
        out = np.empty((len(rows), width), np.float32 if self.kind == "float" else np.uint8)
        shard = np.searchsorted(self.offsets, rows, side="right") - 1
        for s in np.unique(shard):
            sel = np.flatnonzero(shard == s)
            arr = np.load(self.emb_paths[s], mmap_mode="r")
            local = rows[sel] - self.offsets[s]
            order = np.argsort(local)
            block = arr[local[order]]
            out[sel[order]] = self.transform(block) if self.transform is not None and self.kind == "float" else block
        return out

    def load_text(self) -> np.ndarray | None:
        if any(p is None for p in self.text_paths):
            return None
        return np.concatenate([np.load(p).astype(np.float32) for p in self.text_paths if p is not None])


def open_embeddings(root: str) -> EmbeddingSet:
    """Open an embed output folder; checks that every npy file is row-aligned with its metadata."""
    manifest_path = fs.join(root, "manifest.json")
    if not fs.exists(manifest_path):
        raise CurateError(f"{root}: no manifest.json; is this a `curate embed` output?")
    manifest = fs.read_json(manifest_path)
    kind = manifest.get("kind", "float")
    meta_paths = fs.list_shards(fs.join(root, "metadata"))
    shards, emb_paths, text_paths, counts, tables = [], [], [], [], []
    for mp in meta_paths:
        name = mp.rsplit("/", 1)[-1]
        idx = name[len("metadata_") : -len(".parquet")]
        ep = fs.join(root, "img_emb", f"img_emb_{idx}.npy")
        tp = fs.join(root, "text_emb", f"text_emb_{idx}.npy")
        if not fs.exists(ep):
            raise CurateError(f"{ep}: missing (metadata_{idx}.parquet has no embeddings)")
        arr = np.load(ep, mmap_mode="r")
        table = pq.read_table(mp, columns=[c for c in META_COLUMNS if c in pq.read_schema(mp).names])
        if len(arr) != table.num_rows:
            raise CurateError(f"{ep}: {len(arr)} rows but {mp} has {table.num_rows}")
        shards.append(int(idx))
        emb_paths.append(ep)
        text_paths.append(tp if fs.exists(tp) else None)
        counts.append(len(arr))
        tables.append(table)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    dim = int(manifest["dim"])
    metadata = pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
    return EmbeddingSet(root, shards, emb_paths, text_paths, offsets, dim, kind, metadata)
