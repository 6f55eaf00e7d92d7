"""`curate run`: a pipeline YAML drives the stages in order, and a rerun resumes."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from curate.cli import cli
from tests.conftest import free_port


def test_pipeline_runs_stages_in_order_and_resumes(tmp_path):
    port = free_port()
    config = tmp_path / "p.yaml"
    config.write_text(f"""
root: {tmp_path / 'run'}
stages:
  - sample: {{output: sample, seed: 1, base_url: "http://127.0.0.1:{port}", bad_rows: true}}
  - serve: {{directory: sample, port: {port}}}
  - download: {{inputs: sample/input, output: images, allow_private_network: true, timeout: 5}}
  - embed: {{images: images, output: emb, model: phash}}
  - dedup: {{embeddings: emb, output: dedup}}
""")
    result = CliRunner().invoke(cli, ["run", str(config)])
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["order"] == ["sample", "download", "embed", "dedup"] and run["status"] == "done"
    by = {s["stage"]: s for s in run["stages"]}
    dl = by["download"]["summary"]
    assert dl["rows_in"] == by["sample"]["summary"]["rows"] == dl["rows_out"] + dl["rows_rejected"]
    assert dl["rows_rejected"] == 4  # the hostile rows
    flow = by["download"]["flow"]
    assert flow["left_total"] == 4 and flow["left"] == dl["reasons"]
    assert by["embed"]["flow"]["rows_in"] == flow["rows_out"]
    page = (tmp_path / "run" / "report.html").read_text()
    assert 'href="dedup/report.html"' in page and "unsupported_scheme" in page
    stats = sorted((tmp_path / "run" / "images" / "_stats").glob("*.json"))
    before = [p.stat().st_mtime_ns for p in stats]
    assert CliRunner().invoke(cli, ["run", str(config)]).exit_code == 0
    assert [p.stat().st_mtime_ns for p in stats] == before  # finished shards were not redone


@pytest.mark.parametrize(("text", "needle"), [("stages: 3", "root: is required"), ("root: x\nstages:\n  - bogus: {}", "unknown stage"),
                                              ("root: [", "not valid YAML")])
def test_bad_pipeline_files_are_one_line_errors(tmp_path, text, needle):
    config = tmp_path / "p.yaml"
    config.write_text(text)
    result = CliRunner().invoke(cli, ["run", str(config)])
    assert result.exit_code == 2 and needle in result.output and "Traceback" not in result.output


def test_run_progress_lines_go_through_logging_and_q_silences_them(tmp_path):
    import subprocess
    import sys

    config = tmp_path / "p.yaml"
    config.write_text(f"root: {tmp_path / 'run'}\nstages:\n  - sample: {{output: sample, seed: 2}}\n")
    cmd = [sys.executable, "-m", "curate"]
    default = subprocess.run([*cmd, "run", str(config)], capture_output=True, text=True, timeout=300)
    assert default.returncode == 0 and "run: sample done" in default.stderr, default.stderr
    quiet = subprocess.run([*cmd, "-q", "run", str(config)], capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
