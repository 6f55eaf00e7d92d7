"""Bad input gets one clear line naming the file and the column, never a traceback, and nothing is written."""

from __future__ import annotations

import pyarrow as pa
import pytest
from click.testing import CliRunner

from curate import config, optspec, schemas
from curate.cli import cli
from curate.errors import SchemaError
from curate.io.laion import check_input_shards
from curate.optspec import OptionError
from tests.conftest import write_shard


def run(*args: str):
    return CliRunner().invoke(cli, ["download", *args, "--no-progress"])


def assert_one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    ("rows", "schema", "needles"),
    [
        ([{"caption": "a"}], None, ("missing required column 'url'",)),
        ([{"url": "http://x/a.jpg"}], None, ("missing required column 'caption'",)),
        ([{"url": 3, "caption": "a"}], None, ("column 'url' has type int64",)),
        ([{"URL": "http://x/a", "url": "http://x/b", "caption": "a"}], None, ("more than one column maps to url",)),
    ],
)
def test_schema_errors_name_file_and_column(tmp_path, rows, schema, needles):
    path = write_shard(tmp_path / "in" / "bad.parquet", rows, schema)
    result = run(str(tmp_path / "in"), str(tmp_path / "out"))
    assert_one_line_error(result, str(path), *needles)
    assert not (tmp_path / "out").exists()


def test_missing_empty_and_non_parquet_inputs(tmp_path):
    assert_one_line_error(run(str(tmp_path / "nope"), str(tmp_path / "out")), "no such file or folder")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run(str(tmp_path / "empty"), str(tmp_path / "out")), "no .parquet files")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.parquet").write_text("url,caption\nhttp://x,y\n")
    assert_one_line_error(run(str(tmp_path / "junk"), str(tmp_path / "out")), "a.parquet", "not a readable parquet")
    (tmp_path / "zero").mkdir()
    (tmp_path / "zero" / "a.parquet").write_bytes(b"")
    assert_one_line_error(run(str(tmp_path / "zero"), str(tmp_path / "out")), "a.parquet", "not a readable parquet")
    assert not (tmp_path / "out").exists()


def test_shards_with_different_schemas(tmp_path):
    write_shard(tmp_path / "in" / "a.parquet", [{"url": "http://x/a", "caption": "a"}])
    write_shard(tmp_path / "in" / "b.parquet", [{"url": "http://x/a", "caption": "a", "extra": 1}])
    assert_one_line_error(run(str(tmp_path / "in"), str(tmp_path / "out")), "b.parquet", "differs from", "has extra")
    write_shard(tmp_path / "in2" / "a.parquet", [{"url": "http://x/a", "caption": "a", "n": 1}])
    write_shard(tmp_path / "in2" / "b.parquet", [{"url": "http://x/a", "caption": "a", "n": "one"}])
    assert_one_line_error(run(str(tmp_path / "in2"), str(tmp_path / "out")), "b.parquet", "column 'n'")
    # LAION spellings in one shard and canonical names in another are the same schema
    write_shard(tmp_path / "in3" / "a.parquet", [{"URL": "http://x/a", "TEXT": "a"}])
    write_shard(tmp_path / "in3" / "b.parquet", [{"url": "http://x/a", "caption": "a"}])
    renames = check_input_shards(sorted(str(p) for p in (tmp_path / "in3").glob("*.parquet")))
    assert list(renames.values()) == [{"URL": "url", "TEXT": "caption"}, {}]


def test_column_map_errors():
    with pytest.raises(OptionError, match="OLD=NEW"):
        optspec.coerce(optspec.specs(config.DownloadOptions)[-1], ["nonsense"])
    with pytest.raises(SchemaError, match="'link2', which is not in the file"):
        schemas.input_renames(["url", "caption"], {"link2": "url"}, source="f.parquet")


def test_every_schema_file_loads_and_types_are_known():
    names = schemas.available()
    assert {"input_shard", "image_shard", "rejects", "shard_stats", "stage_manifest"} <= set(names)
    for name in names:
        schema = schemas.load(name)
        assert schema.columns, name
        for col in schema.columns:
            assert col.description, f"{name}.{col.name} is undocumented"
            schemas.type_matches(col.type, pa.string())  # raises on an unknown type name


def test_validate_output_tables_against_schema(tmp_path):
    table = pa.table({"key": ["a"], "input_row": [0], "stage": ["download"], "reason": ["x"], "bogus": [1]})
    with pytest.raises(SchemaError, match="unexpected column"):
        schemas.validate(table.schema, "rejects", source="r.parquet")
