"""Parquet shards: open with a clear error, stream record batches with bounded memory, write tables."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import CurateError


def open_parquet(path: str) -> pq.ParquetFile:
    """Open a parquet file (local or fsspec URL); a missing, empty or non-parquet file is one clear error."""
    try:
        f = fsspec.open(path, "rb").open()
    except FileNotFoundError:
        raise CurateError(f"{path}: no such file") from None
    try:
        return pq.ParquetFile(f)
    except (pa.ArrowInvalid, OSError) as err:
        f.close()
        raise CurateError(f"{path}: not a readable parquet file ({str(err).splitlines()[0]})") from None


def num_rows(path: str) -> int:
    """Row count from the footer alone (no data pages read)."""
    pf = open_parquet(path)
    try:
        return pf.metadata.num_rows
    finally:
        pf.close()


def iter_batches(
    path: str,
    *,
    batch_size: int = 10_000,
    renames: Mapping[str, str] | None = None,
    columns: list[str] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream a parquet file as record batches of at most `batch_size` rows, with columns renamed."""
    pf = open_parquet(path)
    try:
        for batch in pf.iter_batches(batch_size=batch_size, columns=columns, use_threads=False):
            if renames:
                batch = batch.rename_columns([renames.get(n, n) for n in batch.schema.names])
            yield batch
    except (pa.ArrowInvalid, OSError) as err:
        raise CurateError(f"{path}: corrupt parquet data ({str(err).splitlines()[0]})") from None
    finally:
        pf.close()


def read_table(path: str, columns: list[str] | None = None) -> pa.Table:
    pf = open_parquet(path)
    try:
        return pf.read(columns=columns, use_threads=False)
    finally:
        pf.close()


def write_table(table: pa.Table, local_path: str, plain: Sequence[str] = ()) -> None:
    """Write a table to a local path (inside a shard's temp folder; the executor commits it). `plain`: columns
    of (nearly) unique values, such as captions, written without dictionary encoding or min/max statistics,
    which cost time there and gain nothing; the other columns get both (a list column's strings included)."""
    if not plain:
        pq.write_table(table, local_path, compression="zstd")
        return
    rest = [leaf for f in table.schema if f.name not in plain for leaf in _leaves(f.name, f.type)]
    pq.write_table(table, local_path, compression="zstd", use_dictionary=rest, write_statistics=rest)


def _leaves(path: str, typ: pa.DataType) -> list[str]:
    """The parquet column paths under an Arrow field (what per-column writer options are matched against):
    a list's values are `name.list.element`, a struct's fields `name.field`."""
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        return _leaves(f"{path}.list.element", typ.value_type)
    if pa.types.is_struct(typ):
        return [leaf for i in range(typ.num_fields) for leaf in _leaves(f"{path}.{typ.field(i).name}", typ.field(i).type)]
    return [path]
