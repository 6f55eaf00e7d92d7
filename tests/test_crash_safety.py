"""Crash safety, proved: `curate run` SIGKILLed at seeded random moments and restarted each time ends with the
same outputs as an uninterrupted run, and every input row is accounted for. A full or read-only disk is a
one-line error that leaves the finished shards intact."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port

# files whose content is wall-clock time or a log of it, by design
TIMED = {"run.json", "report.html", "summary.json"}



def pipeline(root: Path, port: int) -> str:
    return f"""
name: crash
root: {root}
stages:
  - sample: {{output: sample, seed: 5, base_url: "http://127.0.0.1:{port}", shards: 4}}
  - serve: {{directory: sample, port: {port}}}
  - download: {{inputs: sample/input, output: images, allow_private_network: true, timeout: 5}}
  - embed: {{images: images, output: emb}}
  - dedup: {{embeddings: emb, output: dedup, images: images}}
  - recaption: {{dedup: dedup, output: recaption}}
  - export: {{images: images, output: train, dedup: dedup, captions: recaption, shard_size: 10}}
  - train: {{train: train, output: model, model: tiny-pixel, resolution: 32, steps: 12, checkpoint_every: 3}}
  - audit: {{model: model/final, train: train, output: audit, prompts: 4, steps: 5, resolution: 32}}
"""


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every output file, except those that hold timings (stage `_stats/` markers and download's
    img2dataset-style `{i}_stats.json` among them)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and p.name not in TIMED and "_stats" not in rel.parts and not p.name.endswith("_stats.json"):
            out[str(rel)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def start(config: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "curate.cli", "run", str(config)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]


@pytest.mark.timeout(1200)  # ~80 s alone on 2 cores; eight runs of the whole chain, so room for a loaded machine
def test_sigkill_at_random_moments_then_rerun_equals_an_uninterrupted_run(tmp_path):
    root = tmp_path / "run"
    config = tmp_path / "p.yaml"
    config.write_text(pipeline(root, free_port()))
    t0 = time.time()
    finish(start(config))
    uninterrupted = time.time() - t0
    reference = snapshot(root)
    assert any(k.startswith("audit/") for k in reference) and any(k.endswith(".tar") for k in reference)
    shutil.rmtree(root)

    rng = random.Random(20261126)
    kills = 0
    while kills < 6:
        proc = start(config)
        time.sleep(rng.uniform(0.5, uninterrupted * 0.8))
        if proc.poll() is not None:  # it finished before this moment: start over to get the kills asked for
            finish(proc)
            shutil.rmtree(root)
            continue
        os.killpg(proc.pid, signal.SIGKILL)  # the process and every child it spawned, as a power cut would
        proc.wait()
        kills += 1
    finish(start(config))
    assert snapshot(root) == reference

    run = json.loads((root / "run.json").read_text())
    by = {s["stage"]: s["summary"] for s in run["stages"]}
    rows = by["sample"]["rows"]
    dl, em, dd, ex = by["download"], by["embed"], by["dedup"], by["export"]
    assert dl["rows_in"] == rows == dl["rows_out"] + dl["rows_rejected"] and dl["rows_rejected"] == 4
    assert em["rows_in"] == dl["rows_out"] == em["rows_out"] + em["rows_rejected"]
    assert dd["samples"] == em["rows_out"]
    assert ex["image_rows"] == dl["rows_out"] == ex["rows_out"] + sum(ex["excluded"].values()) + ex["rows_rejected"]
    assert not list(root.rglob("_tmp")) and not list(root.rglob("*.tmp"))


def mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def curate(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "curate.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    if not mount_tmpfs(disk, "size=600k"):
        pytest.skip("needs root to mount a small tmpfs")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_full_disk_is_a_clear_error_and_finished_shards_stay(sample_run, small_disk):
    images = sample_run["images"]
    result = curate("export", str(images), str(small_disk / "train"), "--shard-size", "4")
    assert result.returncode == 2, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("Error")]
    assert "Traceback" not in result.stderr and len(lines) == 1 and "No space left" in lines[0], result.stderr
    done = sorted((small_disk / "train" / "_stats").glob("*.json"))
    assert done  # the first shards fit, a later one did not
    for marker in done:  # every shard marked done is whole: its tar reads to the end
        import tarfile

        stats = json.loads(marker.read_text())
        with tarfile.open(small_disk / "train" / f"{marker.stem}.tar") as tar:
            assert len(tar.getnames()) == 3 * stats["rows_out"]
    assert not list((small_disk / "train").glob("_tmp/*"))


def test_read_only_output_is_a_clear_error(sample_run, tmp_path):
    ro = tmp_path / "ro"
    if not mount_tmpfs(ro, "ro,size=1m"):
        pytest.skip("needs root to mount a read-only tmpfs")
    try:
        for args in (["export", str(sample_run["images"]), str(ro / "train")],
                     ["embed", str(sample_run["images"]), str(ro / "emb"), "--model", "phash"]):
            result = curate(*args)
            assert result.returncode == 2, result.stderr
            assert "Traceback" not in result.stderr and "Read-only file system" in result.stderr, result.stderr
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=False)
