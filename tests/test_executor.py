"""The shard executor: atomic commits, completion markers, resume, stable numbering, workers, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate.errors import CurateError
from curate.executor import ShardOutput, run_stage


def copy_upper(shard, out: ShardOutput, options: dict) -> dict:
    """A toy stage: upper-cases the input text file; fails on purpose for inputs named in options['fail']."""
    text = Path(shard.input).read_text()
    with open(out.path(f"data/{shard.name}.txt"), "w") as f:
        f.write(text.upper())
    log = options.get("log")
    if log:
        with open(log, "a") as f:
            f.write(shard.input + "\n")
    if Path(shard.input).name in options.get("fail", []):
        raise RuntimeError("boom")
    return {"rows_in": len(text.splitlines()), "rows_out": len(text.splitlines())}


def make_inputs(root: Path, n: int) -> list[str]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = root / f"in{i}.txt"
        p.write_text(f"line a {i}\nline b {i}\n")
        paths.append(str(p))
    return paths


def test_commit_resume_and_failure_leave_no_partial_output(tmp_path):
    inputs = make_inputs(tmp_path / "in", 3)
    out = tmp_path / "out"
    log = tmp_path / "calls.log"
    with pytest.raises(RuntimeError, match="boom"):
        run_stage("toy", copy_upper, inputs, str(out), {"log": str(log), "fail": ["in1.txt"]}, progress=False)
    # shard 0 finished and is committed; shard 1 failed after writing: nothing of it is visible
    assert (out / "data" / "00000.txt").read_text() == "LINE A 0\nLINE B 0\n"
    assert not (out / "data" / "00001.txt").exists()
    assert sorted(p.name for p in (out / "_stats").iterdir()) == ["00000.json"]
    assert not (out / "_tmp").exists()

    # the options are part of the output: a rerun with other options is refused without --overwrite
    with pytest.raises(CurateError, match="other options"):
        run_stage("toy", copy_upper, inputs, str(out), {"log": str(log)}, progress=False)
    log.write_text("")
    stats = run_stage("toy", copy_upper, inputs, str(out), {"log": str(log), "fail": []}, overwrite=True,
                      progress=False)
    assert [s["index"] for s in stats] == [0, 1, 2]
    assert log.read_text().splitlines() == inputs  # --overwrite redoes everything
    log.write_text("")
    again = run_stage("toy", copy_upper, inputs, str(out), {"log": str(log), "fail": []}, progress=False)
    assert log.read_text() == ""  # all done: nothing rerun
    assert again == stats
    marker = json.loads((out / "_stats" / "00002.json").read_text())
    assert marker["files"] == ["data/00002.txt"] and marker["rows_in"] == 2 and marker["stage"] == "toy"


def test_numbering_is_stable_and_gap_free_when_inputs_grow(tmp_path):
    inputs = make_inputs(tmp_path / "in", 2)
    out = str(tmp_path / "out")
    run_stage("toy", copy_upper, inputs, out, {}, progress=False)
    extra = tmp_path / "in" / "a_first_by_name.txt"
    extra.write_text("new\n")
    stats = run_stage("toy", copy_upper, sorted([*inputs, str(extra)]), out, {}, progress=False)
    assert [(s["index"], Path(s["input"]).name) for s in stats] == [
        (0, "in0.txt"), (1, "in1.txt"), (2, "a_first_by_name.txt")]


def test_workers_give_the_same_output(tmp_path):
    inputs = make_inputs(tmp_path / "in", 4)
    one = run_stage("toy", copy_upper, inputs, str(tmp_path / "one"), {}, progress=False)
    two = run_stage("toy", copy_upper, inputs, str(tmp_path / "two"), {}, workers=2, progress=False)
    strip = [{k: v for k, v in s.items() if k != "seconds"} for s in one]
    assert strip == [{k: v for k, v in s.items() if k != "seconds"} for s in two]
    for i in range(4):
        assert (tmp_path / "one" / "data" / f"{i:05d}.txt").read_bytes() == (
            tmp_path / "two" / "data" / f"{i:05d}.txt").read_bytes()


def test_output_paths_cannot_escape(tmp_path):
    out = ShardOutput(str(tmp_path))
    for bad in ("../x", "/etc/passwd", "a/../../b", "_stats/00000.json"):
        with pytest.raises(ValueError):
            out.path(bad)


def test_unwritable_output_is_a_clear_error(tmp_path):
    inputs = make_inputs(tmp_path / "in", 1)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(CurateError, match="cannot write"):
        run_stage("toy", copy_upper, inputs, str(blocker / "out"), {}, progress=False)
    with pytest.raises(CurateError, match="cannot write"):
        run_stage("toy", copy_upper, inputs, str(blocker), {}, progress=False)


def test_a_marker_temp_left_by_a_killed_writer_is_dropped(tmp_path):
    """A worker killed between writing a shard's completion marker and renaming it leaves `_stats/.tmp-*.json`
    (seen once in tests/test_engine_dask.py's killed-worker run: 7 markers for 6 shards). The next run, and
    the end of every run, drop it; real markers stay."""
    inputs = make_inputs(tmp_path / "in", 2)
    out = tmp_path / "out"
    run_stage("toy", copy_upper, inputs, str(out), {}, progress=False)
    stale = out / "_stats" / ".tmp-killed.json"
    stale.write_text("{")
    run_stage("toy", copy_upper, inputs, str(out), {}, progress=False)
    assert sorted(p.name for p in (out / "_stats").glob("*.json")) == ["00000.json", "00001.json"]
