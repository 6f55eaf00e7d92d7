"""The embeddings of a `curate embed` output, read shard by shard (memory-mapped npy files)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import CurateError
from curate.io import fs

# the metadata columns dedup reads: keys (held for every row), then shard, caption, sizes and LAION's aesthetic
# score, read per shard for the rows that need them; url and input_row are never read
META_COLUMNS = ("key", "shard", "caption", "width", "height", "aesthetic")


def index_type(n: int) -> type:
    """Row numbers and cluster ids of `n` rows: int32 below 2^31 rows (half the memory of int64)."""
    return np.int32 if n < 2**31 else np.int64


@dataclass
class EmbeddingSet:
    """All shards of one embed output: paths, row offsets and kind (float or bits). The metadata columns, keys
    included, stay in the shards (`read_column`, `values_of`): at 12M LAION rows their captions alone are 0.7 GB,
    their keys 0.2 GB."""

    root: str
    shards: list[int]
    emb_paths: list[str]
    text_paths: list[str | None]
    offsets: np.ndarray  # offsets[s] = global row of shard s's first row; offsets[-1] = N
    dim: int
    kind: str  # "float" or "bits"
    meta_paths: list[str]  # metadata_{i}.parquet per shard
    columns: frozenset[str]  # META_COLUMNS every shard's metadata has
    transform: Callable[[np.ndarray], np.ndarray] | None = None  # e.g. whitening, applied to float rows on read

    def with_transform(self, transform: Callable[[np.ndarray], np.ndarray] | None, dim: int | None = None) -> EmbeddingSet:
        from dataclasses import replace

        return replace(self, transform=transform, dim=dim or self.dim)

    @property
    def n(self) -> int:
        return int(self.offsets[-1])

    def iter_blocks(self, dtype: type = np.float32) -> Iterator[tuple[int, np.ndarray]]:
        """(global start row, block) per shard, converted to `dtype` one shard at a time."""
        for s, start in enumerate(self.offsets[:-1].tolist()):
            yield start, self.shard_block(s, dtype)

    def shard_block(self, s: int, dtype: type = np.float32) -> np.ndarray:
        """Shard `s`'s rows, converted to `dtype` (bits stay uint8), the transform applied."""
        arr = np.load(self.emb_paths[s], mmap_mode="r")
        if self.kind == "float" and self.transform is not None:
            return np.ascontiguousarray(self.transform(arr), dtype=dtype)
        return np.ascontiguousarray(arr, dtype=dtype if self.kind == "float" else np.uint8)

    def load_all(self, dtype: type = np.float16) -> np.ndarray:
        if self.kind == "bits":
            dtype = np.uint8
        out = np.empty((self.n, self.dim if self.kind == "float" else self.dim // 8), dtype=dtype)
        for start, block in self.iter_blocks(dtype):
            out[start : start + len(block)] = block
        return out

    def gather(self, rows: np.ndarray, dtype: type = np.float32) -> np.ndarray:
        """Rows by global index, as `dtype` (floats), read from each shard they fall in by positioned reads:
        no full copy, and no shard's pages stay in this process."""
        rows = np.asarray(rows, np.int64)
        order = None if np.all(rows[1:] >= rows[:-1]) else np.argsort(rows, kind="stable")
        ordered = rows if order is None else rows[order]
        width = self.dim if self.kind == "float" else self.dim // 8
        out = np.empty((len(rows), width), dtype if self.kind == "float" else np.uint8)
        cut = np.searchsorted(ordered, self.offsets)  # where each shard's rows start among the sorted rows
        for s, path in enumerate(self.emb_paths):
            a, b = int(cut[s]), int(cut[s + 1])
            if a == b:
                continue
            block = _read_rows(path, ordered[a:b] - self.offsets[s])
            out[a:b] = self.transform(block) if self.transform is not None and self.kind == "float" else block
        if order is None:
            return out
        result = np.empty_like(out)
        result[order] = out
        return result

    def read_column(self, name: str, rows: np.ndarray | None = None) -> pa.Array:
        """A metadata column (one of `columns`) for `rows` (sorted global rows; all rows when None), read shard
        by shard from the shards those rows fall in."""
        if name not in self.columns:
            raise CurateError(f"{self.root}: the metadata has no {name} column")
        rows = np.arange(self.n) if rows is None else np.asarray(rows, np.int64)
        cut = np.searchsorted(rows, self.offsets)
        parts = []
        for s, path in enumerate(self.meta_paths):
            a, b = int(cut[s]), int(cut[s + 1])
            if a < b:
                column = pq.read_table(path, columns=[name]).column(name).combine_chunks()
                parts.append(column.take(pa.array(rows[a:b] - self.offsets[s])))
        if not parts:
            return pa.array([], pq.read_schema(self.meta_paths[0]).field(name).type if self.meta_paths else pa.null())
        return pa.concat_arrays([p.cast(parts[0].type) for p in parts])

    def values_of(self, name: str, rows: np.ndarray) -> list:
        """A metadata column's values for a few rows in any order (a gallery's, a report's), read from the
        shards they are in."""
        rows = np.asarray(rows, np.int64)
        order = np.argsort(rows, kind="stable")
        got = self.read_column(name, rows[order]).to_pylist()
        out: list = [None] * len(rows)
        for pos, value in zip(order.tolist(), got, strict=True):
            out[pos] = value
        return out

    def gather_text(self, rows: np.ndarray) -> np.ndarray | None:
        """Caption embeddings of `rows` (sorted global rows) as float32, or None when some shard has none."""
        if any(p is None for p in self.text_paths):
            return None
        rows = np.asarray(rows, np.int64)
        cut = np.searchsorted(rows, self.offsets)
        out = [np.asarray(_read_rows(p, rows[int(cut[s]) : int(cut[s + 1])] - self.offsets[s]), np.float32)
               for s, p in enumerate(self.text_paths) if p is not None]
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


@functools.lru_cache(maxsize=4096)
def _npy_layout(path: str, size: int, mtime: int) -> tuple[int, np.dtype, tuple[int, ...]]:
    """(data offset, dtype, shape) of a C-ordered .npy file, from its header (read once per file version)."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        fmt = np.lib.format
        shape, fortran, dtype = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(f)
        if fortran:
            raise CurateError(f"{path}: a Fortran-ordered array; curate embed writes C order")
        return f.tell(), dtype, shape


def _read_rows(path: str, local: np.ndarray) -> np.ndarray:
    """Rows of a .npy file (sorted local indices), read with one positioned read per run of consecutive rows.

    Not through a memory map: at 12M rows the partitions' random rows cost 5-9 us each through a map that is
    opened per batch (page faults, then unmapping) and 1.8 us with preadv; a map kept open would count every
    page it touched in this process's RSS."""
    st = os.stat(path)
    offset, dtype, shape = _npy_layout(path, st.st_size, st.st_mtime_ns)
    out = np.empty((len(local), *shape[1:]), dtype)
    if not len(local):
        return out
    if local[0] < 0 or local[-1] >= shape[0]:
        bad = int(local[0] if local[0] < 0 else local[-1])
        raise CurateError(f"{path}: holds {shape[0]} rows, row {bad} was asked for")
    row_bytes = out.itemsize * int(np.prod(shape[1:], dtype=np.int64))
    buf = memoryview(out.reshape(-1).view(np.uint8))
    starts = np.flatnonzero(np.r_[True, np.diff(local) != 1])
    ends = np.r_[starts[1:], len(local)]
    with open(path, "rb", buffering=0) as f:
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            got = os.preadv(f.fileno(), [buf[a * row_bytes : b * row_bytes]], offset + int(local[a]) * row_bytes)
            if got != (b - a) * row_bytes:
                raise CurateError(f"{path}: shorter than its header says (truncated while being read?)")
    return out


def open_embeddings(root: str) -> EmbeddingSet:
    """Open an embed output folder; checks that every npy file is row-aligned with its metadata."""
    manifest_path = fs.join(root, "manifest.json")
    if not fs.exists(manifest_path):
        raise CurateError(f"{root}: no manifest.json; is this a `curate embed` output?")
    manifest = fs.read_json(manifest_path)
    kind = manifest.get("kind", "float")
    meta_paths = fs.list_shards(fs.join(root, "metadata"))
    shards, emb_paths, text_paths, counts = [], [], [], []
    columns = set(META_COLUMNS)
    for mp in meta_paths:
        name = mp.rsplit("/", 1)[-1]
        idx = name[len("metadata_") : -len(".parquet")]
        ep = fs.join(root, "img_emb", f"img_emb_{idx}.npy")
        tp = fs.join(root, "text_emb", f"text_emb_{idx}.npy")
        if not fs.exists(ep):
            raise CurateError(f"{ep}: missing (metadata_{idx}.parquet has no embeddings)")
        arr = np.load(ep, mmap_mode="r")
        columns &= set(pq.read_schema(mp).names)
        if "key" not in columns:
            raise CurateError(f"{mp}: no key column; is this a `curate embed` output?")
        rows = pq.ParquetFile(mp).metadata.num_rows
        if len(arr) != rows:
            raise CurateError(f"{ep}: {len(arr)} rows but {mp} has {rows}")
        shards.append(int(idx))
        emb_paths.append(ep)
        text_paths.append(tp if fs.exists(tp) else None)
        counts.append(len(arr))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    dim = int(manifest["dim"])
    return EmbeddingSet(root, shards, emb_paths, text_paths, offsets, dim, kind, meta_paths, frozenset(columns))
