"""LAION-style input shards: schema checks across all shards before any work starts."""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa

from curate.errors import SchemaError
from curate.io.parquet import open_parquet
from curate.schemas import normalize_input

CANONICAL = ("url", "caption", "key", "width", "height")


def _normalized_schema(schema: pa.Schema, renames: Mapping[str, str]) -> pa.Schema:
    return pa.schema([f.with_name(renames.get(f.name, f.name)) for f in schema])


def check_input_shards(inputs: list[str], column_map: Mapping[str, str] | None = None) -> dict[str, dict[str, str]]:
    """Validate every input shard's footer schema; return the column renames for each.

    Reads footers only. Fails with one line naming the file and column when a shard is not parquet, lacks
    the url or caption column, or has columns (names or types) that differ from the first shard's.
    """
    renames_by_input: dict[str, dict[str, str]] = {}
    first: tuple[str, pa.Schema] | None = None
    for path in inputs:
        pf = open_parquet(path)
        try:
            schema = pf.schema_arrow
        finally:
            pf.close()
        renames = normalize_input(schema, column_map, source=path)
        renames_by_input[path] = renames
        norm = _normalized_schema(schema, renames)
        if first is None:
            first = (path, norm)
            continue
        ref_path, ref = first
        ref_names, names = set(ref.names), set(norm.names)
        if ref_names != names:
            only_here = sorted(names - ref_names)
            only_there = sorted(ref_names - names)
            parts = []
            if only_here:
                parts.append(f"has {', '.join(only_here)}")
            if only_there:
                parts.append(f"lacks {', '.join(only_there)}")
            raise SchemaError(f"{path}: schema differs from {ref_path}: {'; '.join(parts)}")
        for name in ref.names:
            a, b = ref.field(name).type, norm.field(name).type
            if a != b and not (pa.types.is_null(a) or pa.types.is_null(b)):
                raise SchemaError(f"{path}: column '{name}' has type {b}, but {ref_path} has {a}")
    return renames_by_input
