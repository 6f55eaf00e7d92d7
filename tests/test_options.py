"""One definition per stage option: the Click commands, the pipeline loader and the stages share names, types
and defaults (curate/config.py), and a pipeline file is checked whole before anything runs."""

from __future__ import annotations

import importlib
import json
import os
import typing
from pathlib import Path

import click
import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curate import config, optspec, schemas
from curate import pipeline as pipelines
from curate.cli import cli
from curate.errors import CurateError

COMMANDS = {"sample": "sample", "serve": "serve", "download": "download", "embed": "embed", "dedup": "dedup",
            "recaption": "recaption", "export": "export", "train": "train", "audit": "audit"}
STAGE_MODULES = ("download", "embed", "dedup", "recaption", "export", "train", "audit")
REPO = Path(__file__).resolve().parent.parent


def required_values(cls: type) -> dict[str, object]:
    """Made-up values for a class's required options (paths only)."""
    return {s.name: (("in.parquet",) if s.kind == "list" else "x") for s in optspec.specs(cls) if s.required}


@pytest.mark.parametrize("stage", list(config.STAGES))
def test_cli_and_options_class_declare_the_same_options(stage):
    cls = config.STAGES[stage]
    command = cli.commands[COMMANDS[stage]]
    params = {p.name: p for p in command.params if p.name != "help"}
    cli_specs = {s.name: s for s in optspec.specs(cls) if s.cli}
    assert set(params) == set(cli_specs)
    for name, spec in cli_specs.items():
        p = params[name]
        assert isinstance(p, click.Argument) == spec.argument, name
        if spec.argument:
            continue
        assert p.opts[0] == spec.cli_name or spec.flag, name
        if spec.required:
            assert p.required, name
        elif spec.kind in ("list", "numbers", "map"):
            assert optspec.coerce(spec, list(p.default) if spec.kind == "map" else p.default) == spec.default, name
        else:
            assert p.default == spec.default, name
        if spec.choices and spec.kind == "str":
            assert tuple(p.type.choices) == spec.choices, name
        assert p.help, f"{stage} --{name} has no help"


@pytest.mark.parametrize("stage", list(config.STAGES))
def test_cli_yaml_and_class_give_one_default_per_option(stage):
    """The same options object from the command line (only required arguments given), from a pipeline mapping
    with only the required keys, and from the class itself."""
    cls = config.STAGES[stage]
    values = required_values(cls)
    if stage == "audit":
        values = {"output": "x", "model": "m", "train": "t"}
    argv = []
    for spec in optspec.specs(cls):
        if spec.name in values:
            v = values[spec.name]
            argv += list(v) if spec.argument and spec.kind == "list" else [v] if spec.argument else [spec.cli_name, v]
    command = cli.commands[COMMANDS[stage]]
    ctx = command.make_context(stage, argv)
    from_cli = optspec.from_cli(cls, ctx.params)
    from_yaml, problems = optspec.from_mapping(cls, values)
    assert problems == []
    assert from_cli == from_yaml == cls(**values)


@pytest.mark.parametrize("name", STAGE_MODULES)
def test_every_stage_takes_its_typed_options_not_a_dict(name):
    module = importlib.import_module(f"curate.stages.{name}")
    hints = typing.get_type_hints(module.run)
    assert list(hints) == ["opts", "return"] and hints["opts"] is config.STAGES[name] is module.Options


def test_lists_accept_yaml_lists_and_comma_strings():
    cls = config.RecaptionOptions
    a, _ = optspec.from_mapping(cls, {"dedup": "d", "output": "o", "ops": ["rt", "cwr"]})
    b, _ = optspec.from_mapping(cls, {"dedup": "d", "output": "o", "ops": "rt, cwr"})
    assert a == b and a.ops == ("rt", "cwr")
    c, _ = optspec.from_mapping(config.DedupOptions, {"embeddings": "e", "output": "o", "report_thresholds": "0.5,0.9"})
    assert c.report_thresholds == (0.5, 0.9)
    d, _ = optspec.from_mapping(config.DownloadOptions, {"inputs": "in", "output": "o", "column_map": {"URL": "url"}})
    e, _ = optspec.from_mapping(config.DownloadOptions, {"inputs": ["in"], "output": "o", "column_map": ["URL=url"]})
    assert d == e and d.column_map == (("URL", "url"),)


def test_paths_are_relative_to_the_root_and_urls_are_left_alone():
    o, _ = optspec.from_mapping(config.ExportOptions, {"images": "img", "output": "/abs/out", "dedup": "s3://b/d"},
                                root="run")
    assert (o.images, o.output, o.dedup) == (os.path.join("run", "img"), "/abs/out", "s3://b/d")


# --- pipeline files checked before any work -------------------------------------------------------------------

BAD = {
    "typo": ("root: r\nstages:\n  - dedup: {embeddings: e, output: d, treshold: 0.9}\n",
             ["stage 1 (dedup): treshold: unknown option (did you mean 'threshold'?)",
              "stage 1 (dedup): embeddings: "]),
    "late_typo": ("root: r\nstages:\n  - sample: {output: s}\n  - embed: {images: s, output: emb, modle: effnet-lite0}\n",
                  ["stage 2 (embed): modle: unknown option (did you mean 'model'?)"]),
    "type": ("root: r\nstages:\n  - sample: {output: s}\n  - dedup: {embeddings: s, output: d, threshold: high}\n",
             ["stage 2 (dedup): threshold: must be a number, not 'high'"]),
    "missing": ("root: r\nstages:\n  - embed: {output: emb}\n", ["stage 1 (embed): images: is required"]),
    "roots": ("roots: r\nstages:\n  - sample: {output: s}\n",
              ["roots: unknown key (did you mean 'root'?)", "root: is required"]),
    "timeout": ("root: r\nstages:\n  - sample: {output: s}\n  - download: {inputs: s/input, output: i, timeout: ten}\n",
                ["stage 2 (download): timeout: must be an integer, not 'ten'"]),
    "ops": ("root: r\nstages:\n  - sample: {output: s}\n  - recaption: {dedup: s, output: rc, ops: 'paraphrase,xyz'}\n",
            ["stage 2 (recaption): ops: 'xyz' is not one of paraphrase, rt, cwr, rna, rc"]),
    "choice": ("root: r\nstages:\n  - sample: {output: s}\n  - dedup: {embeddings: s, output: d, linkage: mutal}\n",
               ["stage 2 (dedup): linkage: 'mutal' is not one of components, mutual, leader (did you mean 'mutual'?)"]),
    "path": ("root: r\nstages:\n  - sample: {output: s}\n  - embed: {images: imgs, output: emb}\n",
             ["stage 2 (embed): images: r/imgs does not exist and no earlier stage makes it"]),
    "later_output": ("root: r\nstages:\n  - embed: {images: i, output: emb}\n  - sample: {output: i}\n",
                     ["stage 1 (embed): images: r/i does not exist"]),
    "stage": ("root: r\nstages:\n  - embedd: {images: i, output: emb}\n", ["stage 1: unknown stage 'embedd' (did you mean 'embed'?)"]),
    "shape": ("root: r\nstages:\n  - sample: [output, s]\n", ["stage 1 (sample): options must be a mapping"]),
    "between": ("root: r\nstages:\n  - sample: {output: s}\n  - audit: {output: a, model: s}\n",
                ["stage 2 (audit): train: give model and train (or generated and corpus)"]),
    "empty": ("root: r\nstages: []\n", ["stages: must be a non-empty list"]),
    "bool": ("root: r\nstages:\n  - sample: {output: s, bad_rows: 'yes'}\n", ["stage 1 (sample): bad_rows: must be true or false"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_pipelines_are_one_line_per_problem_and_nothing_runs(tmp_path, monkeypatch, case):
    text, expected = BAD[case]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text(text)
    for argv in (["run", "p.yaml"], ["run", "--check", "p.yaml"]):
        result = CliRunner().invoke(cli, argv)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
        lines = result.output.strip().splitlines()
        lines[0] = lines[0].removeprefix("Error: ")
        assert all(line.startswith("p.yaml: ") for line in lines), lines
        for want in expected:
            assert any(want in line for line in lines), (want, lines)
        assert sorted(os.listdir(tmp_path)) == ["p.yaml"]  # nothing written: no root, no stage output


def test_check_accepts_the_shipped_pipelines_and_writes_nothing(tmp_path, monkeypatch):
    for name in ("demo", "laion"):
        result = CliRunner().invoke(cli, ["run", "--check", str(REPO / "pipelines" / f"{name}.yaml")])
        if name == "laion":  # its input folder is the user's to fill in: the one problem is that path
            assert result.exit_code == 2 and result.output.count("\n") == 1 and "/data/laion/parquet does not exist" in result.output
        else:
            assert result.exit_code == 0 and "ok, 9 stage(s)" in result.output, result.output
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text((REPO / "pipelines" / "demo.yaml").read_text())
    assert CliRunner().invoke(cli, ["run", "--check", "p.yaml"]).exit_code == 0
    assert sorted(os.listdir(tmp_path)) == ["p.yaml"]


def test_a_failing_stage_names_the_file_and_stage_and_writes_the_run_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    (tmp_path / "p.yaml").write_text("root: r\nstages:\n  - embed: {images: ../empty, output: emb}\n")
    result = CliRunner().invoke(cli, ["run", "p.yaml"])
    assert result.exit_code == 2 and result.output.startswith("Error: p.yaml: stage 1 (embed): ")
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run["status"] == "failed" and run["error"].startswith("stage 1 (embed): ")


KEYS = sorted({s.name for cls in config.STAGES.values() for s in optspec.specs(cls)} | {"treshold", "modle", ""})
VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=True),
                                st.text(max_size=8), st.sampled_from(["x", "in", "emb", "rt,cwr", "mutual"])),
                      lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                      max_leaves=6)
STEP = st.one_of(st.dictionaries(st.sampled_from([*config.STAGES, "bogus", "embedd"]),
                                 st.one_of(st.none(), st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6), VALUES),
                                 min_size=1, max_size=2), VALUES)
DOCS = st.one_of(
    VALUES,
    st.fixed_dictionaries({"stages": st.one_of(st.lists(STEP, max_size=4), VALUES)},
                          optional={"root": st.one_of(st.sampled_from(["r", "out/run", ""]), VALUES),
                                    "name": VALUES, "roots": VALUES, "stage": VALUES}),
)


def test_fuzzed_pipeline_files_fail_cleanly_and_write_nothing(tmp_path):
    seen = []

    @settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(doc=DOCS)
    def check(doc: object) -> None:
        work = tmp_path / f"case{len(seen)}"
        work.mkdir()
        path = work / "p.yaml"
        path.write_text(yaml.safe_dump(doc))
        try:
            pipelines.check(str(path))
        except CurateError:
            pass
        else:  # a valid file (rare here): not this test's business
            seen.append("valid")
            return
        cwd = os.getcwd()
        os.chdir(work)
        try:
            for argv in (["run", "p.yaml"], ["run", "--check", "p.yaml"]):
                result = CliRunner().invoke(cli, argv)
                assert result.exit_code == 2, (doc, result.output)
                assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output, (doc, result.output)
                assert result.output.startswith("Error: p.yaml: "), result.output
        finally:
            os.chdir(cwd)
        assert sorted(os.listdir(work)) == ["p.yaml"], doc
        seen.append("invalid")

    check()
    assert seen.count("invalid") >= 100


# --- the pipeline file's JSON Schema -------------------------------------------------------------------------

def test_schemas_pipeline_yaml_is_generated_from_the_definitions():
    generated = schemas.pipeline_yaml(pipelines.json_schema())
    assert (REPO / "schemas" / "pipeline.yaml").read_text() == generated, \
        "run `curate schema pipeline > schemas/pipeline.yaml`"
    result = CliRunner().invoke(cli, ["schema", "pipeline", "--json"])
    assert result.exit_code == 0 and json.loads(result.output) == pipelines.json_schema()


def test_json_schema_accepts_the_shipped_pipelines_and_rejects_mistakes():
    schema = pipelines.json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for name in ("demo", "laion"):
        doc = yaml.safe_load((REPO / "pipelines" / f"{name}.yaml").read_text())
        assert not list(validator.iter_errors(doc)), name
    for case in ("typo", "late_typo", "type", "missing", "roots", "timeout", "ops", "choice", "stage", "shape", "empty", "bool"):
        assert list(validator.iter_errors(yaml.safe_load(BAD[case][0]))), case
