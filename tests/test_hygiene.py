"""A run leaves nothing behind but its outputs: every file it writes has the mode the user's umask gives (readable by
a training job running as someone else), and nothing lands in $HOME or $TMPDIR (ONNX Runtime's telemetry, temp
folders), only under the output root and $CURATE_CACHE."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port


def pipeline(root: Path, port: int) -> str:
    return f"""
root: {root}
stages:
  - sample: {{output: sample, seed: 2, base_url: "http://127.0.0.1:{port}"}}
  - serve: {{directory: sample, port: {port}}}
  - download: {{inputs: sample/input, output: images, allow_private_network: true, timeout: 5, workers: 2}}
  - embed: {{images: images, output: emb, model: sscd-distilled, text_model: minilm}}
  - dedup: {{embeddings: emb, output: dedup, images: images}}
  - recaption: {{dedup: dedup, output: recaption}}
  - export: {{images: images, output: train, dedup: dedup, captions: recaption, shard_size: 20}}
  - train: {{train: train, output: model, model: tiny-pixel, resolution: 32, steps: 2, checkpoint_every: 1}}
  - audit: {{model: model/final, train: train, output: audit, prompts: 2, steps: 2, resolution: 32}}
"""


@pytest.mark.slow
def test_a_whole_run_writes_user_readable_files_and_nothing_outside_its_root(tmp_path):
    home, tmp, cache, root = (tmp_path / n for n in ("home", "tmp", "cache", "run"))
    for d in (home, tmp, cache):
        d.mkdir()
    (tmp_path / "p.yaml").write_text(pipeline(root, free_port()))
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "NO_ALBUMENTATIONS_UPDATE")}
    env.update(HOME=str(home), TMPDIR=str(tmp), CURATE_CACHE=str(cache), PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "curate.cli", "run", str(tmp_path / "p.yaml")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=900, umask=0o022)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []
    assert sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*")) == []
    wrong = {}
    for base in (root, cache):
        for p in base.rglob("*"):
            mode = stat.S_IMODE(p.lstat().st_mode)
            want = 0o755 if p.is_dir() else 0o644
            if mode != want:
                wrong[str(p.relative_to(tmp_path))] = oct(mode)
    assert not wrong, wrong
    kinds = {p.suffix for p in root.rglob("*") if p.is_file()}
    assert {".json", ".parquet", ".tar", ".npy", ".png", ".html", ".safetensors"} <= kinds  # every kind was checked


@pytest.mark.parametrize(("umask", "want"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, want):
    from curate.io import fs

    old = os.umask(umask)
    try:
        fs.write_json_atomic(str(tmp_path / "a.json"), {"a": 1})
        fs.write_text_atomic(str(tmp_path / "b.txt"), "b")
        with fs.atomic_dir(str(tmp_path / "d")) as d:
            fd = os.open(os.path.join(d, "c.bin"), os.O_CREAT | os.O_WRONLY, 0o600)  # as safetensors writes
            os.close(fd)
    finally:
        os.umask(old)
    for p in (tmp_path / "a.json", tmp_path / "b.txt", tmp_path / "d" / "c.bin"):
        assert stat.S_IMODE(p.stat().st_mode) == want, p
