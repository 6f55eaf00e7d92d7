"""The documented schemas in `schemas/*.yaml`: loading, validating tables, and LAION column spellings.

Every table curate reads or writes has a YAML file in `schemas/`; this module is the one place that checks a
table against it, so an error always names the file and the column.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import yaml

from curate.errors import SchemaError

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool
    aliases: tuple[str, ...]
    description: str


@dataclass(frozen=True)
class Schema:
    name: str
    description: str
    columns: tuple[Column, ...]
    extra_columns: str  # "keep" or "forbid"

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)


def _schema_dir() -> Path:
    if SCHEMA_DIR.is_dir():
        return SCHEMA_DIR
    # installed without the source tree: schemas are shipped as package data next to the package
    return Path(__file__).resolve().parent / "schemas"


@functools.cache
def load(name: str) -> Schema:
    """Load `schemas/{name}.yaml`."""
    path = _schema_dir() / f"{name}.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    cols = tuple(
        Column(
            name=c["name"],
            type=str(c.get("type", "any")),
            required=bool(c.get("required", False)),
            aliases=tuple(c.get("aliases", ()) or ()),
            description=str(c.get("description", "")),
        )
        for c in raw["columns"]
    )
    return Schema(raw["name"], str(raw.get("description", "")), cols, str(raw.get("extra_columns", "keep")))


PIPELINE = "pipeline"  # schemas/pipeline.yaml: a JSON Schema for pipeline files, not a table


def available() -> list[str]:
    """The table schemas (schemas/pipeline.yaml, the pipeline files' schema, is not a table)."""
    return sorted(p.stem for p in _schema_dir().glob("*.yaml") if p.stem != PIPELINE)


def describe(name: str) -> str:
    """A schema's first sentence."""
    return load(name).description.split(".")[0].strip()


def pipeline_yaml(json_schema: dict) -> str:
    """schemas/pipeline.yaml's text: the pipeline JSON Schema (curate.pipeline.json_schema) as YAML."""
    head = ("# The JSON Schema of `curate run` pipeline files, generated from curate/config.py by\n"
            "# `curate schema pipeline > schemas/pipeline.yaml` (a test holds this file equal to it). Editors with a\n"
            "# YAML language server can check pipeline files against it; `curate run --check FILE` does the same.\n")
    return head + yaml.safe_dump(json_schema, sort_keys=False, width=110, allow_unicode=True)


def type_matches(kind: str, dtype: pa.DataType) -> bool:
    """Does an arrow type satisfy a schema type name?"""
    t = pa.types
    if kind == "any" or t.is_null(dtype):  # an all-null column carries no type to contradict
        return True
    if t.is_dictionary(dtype):  # dictionary-encoded values (recaption's ops): what their values are
        return type_matches(kind, dtype.value_type)
    if kind == "string":
        return t.is_string(dtype) or t.is_large_string(dtype) or t.is_string_view(dtype)
    if kind == "text":  # captions in the input: strings, or bytes that we decode row by row
        return type_matches("string", dtype) or t.is_binary(dtype) or t.is_large_binary(dtype)
    if kind == "int":  # inputs: any integer type
        return t.is_integer(dtype)
    if kind in ("int32", "int64"):  # what curate writes: one type per column across its tables
        return dtype == getattr(pa, kind)()
    if kind == "float":
        return t.is_floating(dtype) or t.is_integer(dtype) or t.is_decimal(dtype)
    if kind == "bool":
        return t.is_boolean(dtype)
    if kind == "binary":
        return t.is_binary(dtype) or t.is_large_binary(dtype) or t.is_binary_view(dtype)
    if kind.startswith("list<") and kind.endswith(">"):
        inner = kind[5:-1]
        return (t.is_list(dtype) or t.is_large_list(dtype)) and type_matches(inner, dtype.value_type)
    raise ValueError(f"unknown schema type {kind!r}")


def validate(arrow_schema: pa.Schema, schema_name: str, *, source: str) -> None:
    """Raise SchemaError naming `source` and the column when `arrow_schema` breaks `schemas/{schema_name}.yaml`."""
    schema = load(schema_name)
    names = set(arrow_schema.names)
    if len(names) != len(arrow_schema.names):
        dup = sorted({n for n in arrow_schema.names if arrow_schema.names.count(n) > 1})
        raise SchemaError(f"{source}: duplicate column name(s) {', '.join(dup)}")
    for col in schema.columns:
        if col.name not in names:
            if col.required:
                raise SchemaError(
                    f"{source}: missing required column '{col.name}' ({schema.name} schema; "
                    f"columns present: {', '.join(arrow_schema.names) or 'none'})"
                )
            continue
        dtype = arrow_schema.field(col.name).type
        if not type_matches(col.type, dtype):
            raise SchemaError(f"{source}: column '{col.name}' has type {dtype}, expected {col.type} ({schema.name} schema)")
    if schema.extra_columns == "forbid":
        extra = names - {c.name for c in schema.columns}
        if extra:
            raise SchemaError(f"{source}: unexpected column(s) {', '.join(sorted(extra))} ({schema.name} schema)")


def input_renames(names: list[str], column_map: Mapping[str, str] | None = None, *, source: str) -> dict[str, str]:
    """Renames that bring an input shard's columns to the canonical `input_shard` names.

    The user's `column_map` applies first; then each canonical column takes the first alias present. Two
    input columns that would land on one name is an error (e.g. both `URL` and `url`).
    """
    schema = load("input_shard")
    column_map = dict(column_map or {})
    for old in column_map:
        if old not in names:
            raise SchemaError(f"{source}: --column-map names column '{old}', which is not in the file")
    renames: dict[str, str] = dict(column_map)
    taken = {column_map.get(n, n) for n in names}
    for col in schema.columns:
        if col.name in taken:
            clash = [a for a in col.aliases if a in names and a not in renames]
            if col.required and clash:  # which one is the url? refuse to guess
                raise SchemaError(
                    f"{source}: more than one column maps to {col.name} ({col.name}, {', '.join(clash)}); "
                    "use --column-map to choose"
                )
            continue
        for alias in col.aliases:
            if alias in names and alias not in renames:
                renames[alias] = col.name
                taken.add(col.name)
                break
    final = [renames.get(n, n) for n in names]
    dups = sorted({n for n in final if final.count(n) > 1})
    if dups:
        raise SchemaError(f"{source}: more than one column maps to {', '.join(dups)}; use --column-map to choose")
    return renames


def normalize_input(arrow_schema: pa.Schema, column_map: Mapping[str, str] | None = None, *, source: str) -> dict[str, str]:
    """Validate an input shard's schema (after renames) and return the renames to apply."""
    renames = input_renames(list(arrow_schema.names), column_map, source=source)
    renamed = pa.schema([f.with_name(renames.get(f.name, f.name)) for f in arrow_schema])
    schema = load("input_shard")
    # captions may arrive as bytes (non-UTF-8 rows are then rejected one by one, not the whole file)
    fields = []
    for f in renamed:
        if f.name == "caption" and type_matches("text", f.type) and not type_matches("string", f.type):
            fields.append(f.with_type(pa.string()))
        elif f.name == "key" and (pa.types.is_integer(f.type) or type_matches("string", f.type)):
            fields.append(f.with_type(pa.string()))
        else:
            fields.append(f)
    validate(pa.schema(fields), schema.name, source=source)
    return renames
