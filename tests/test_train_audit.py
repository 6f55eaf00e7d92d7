"""`curate train` (a real tiny diffusers model on CPU) and `curate audit` (the research's replication metrics)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from curate.captions.vocab import clip_words
from curate.diffusion.mitigations import TrainMitigations, gaussian_noise, prompt_mitigation, train_caption
from curate.stages import audit, dedup, export, recaption, train


@pytest.fixture(scope="module")
def train_dir(sample_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("train_data")
    dedup.run(dedup.Options(embeddings=str(sample_run["emb"]), output=str(root / "dd"), progress=False))
    recaption.run(recaption.Options(dedup=str(root / "dd"), output=str(root / "rc"), progress=False))
    export.run(export.Options(images=str(sample_run["images"]), output=str(root / "train"), dedup=str(root / "dd"), captions=str(root / "rc"), progress=False))
    return root / "train"


def unet_weights(path) -> dict:
    return load_file(str(path / "unet" / "diffusion_pytorch_model.safetensors"))


def test_tiny_model_trains_and_resumes_exactly(train_dir, tmp_path):
    opts = {"steps": 4, "checkpoint_every": 2, "batch_size": 2, "mitigations": ["rt", "gn"], "p": 0.5}
    a = train.run(train.Options(train=str(train_dir), output=str(tmp_path / "a"), **opts, progress=False))
    assert np.isfinite(a["final_loss"]) and a["steps"] == 4
    log = [json.loads(line) for line in (tmp_path / "a" / "train.log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in log)
    assert (tmp_path / "a" / "final" / "model_index.json").exists()

    # a run killed while renaming its step-4 checkpoint into place (complete in step-000004.tmp, steps 3-4
    # already logged), then resumed from step 2, ends with the same weights, log and counts as the uninterrupted one
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    (tmp_path / "b" / "checkpoints" / "step-000004").rename(tmp_path / "b" / "checkpoints" / "step-000004.tmp")
    shutil.rmtree(tmp_path / "b" / "final")
    b = train.run(train.Options(train=str(train_dir), output=str(tmp_path / "b"), **opts, progress=False))
    assert b["resumed_from"] == 2
    assert (tmp_path / "b" / "train.log.jsonl").read_text() == (tmp_path / "a" / "train.log.jsonl").read_text()
    assert b["mitigations_applied"] == a["mitigations_applied"] and b["final_loss"] == a["final_loss"]
    assert not (tmp_path / "b" / "checkpoints" / "step-000004.tmp").exists()
    wa = unet_weights(tmp_path / "a" / "final")
    wb = unet_weights(tmp_path / "b" / "final")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # and the weights did change from the random start
    start = unet_weights(tmp_path / "a" / "checkpoints" / "step-000002")
    assert any(not torch.equal(start[k], wa[k]) for k in wa)


def test_each_training_mitigation_changes_the_caption_as_specified():
    vocab = clip_words()
    pool = ["a red fox in the snow", "fox standing in snow", "a fox"]
    only = {name: TrainMitigations.parse([name], p=1.0, mc=False) for name in ("rc", "rt", "cwr", "rna")}
    base = pool[0].split()
    rc, _ = train_caption(pool, "k", 3, 0, only["rc"], vocab)
    assert len(rc.split()) == 4 and all(w in vocab for w in rc.split())
    rt, applied = train_caption(pool, "k", 3, 0, only["rt"], vocab)
    assert applied == ["rt"] and len(rt.split()) == len(base) + 2
    cwr, _ = train_caption(pool, "k", 3, 0, only["cwr"], vocab)
    assert len(cwr.split()) == len(base) + 2 and set(cwr.split()) <= set(base)
    rna, _ = train_caption(pool, "k", 3, 0, only["rna"], vocab)
    assert [w for w in rna.split() if w not in base][0].isdigit()
    # MC samples the pool; the same (seed, key, step) gives the same caption
    mc = TrainMitigations.parse([], mc=True)
    seen = {train_caption(pool, "k", step, 0, mc, vocab)[0] for step in range(30)}
    assert seen == set(pool)
    assert train_caption(pool, "k", 7, 0, mc, vocab) == train_caption(pool, "k", 7, 0, mc, vocab)
    # dup_both: always the first caption, untouched
    assert {train_caption(pool, "k", s, 0, only["rt"], vocab, fixed=True)[0] for s in range(10)} == {pool[0]}
    # p = 0: nothing applied
    assert train_caption(pool, "k", 3, 0, TrainMitigations.parse(["rt", "rc"], p=0.0, mc=False), vocab) == (pool[0], [])


def test_gaussian_noise_on_text_embeddings():
    x = torch.zeros(64, 77, 32)
    y = gaussian_noise(x, 0.1, 1.0, torch.Generator().manual_seed(0))
    assert abs(float(y.std()) - 0.1) < 0.01
    assert torch.equal(gaussian_noise(x, 0.1, 0.0, torch.Generator().manual_seed(0)), x)
    half = gaussian_noise(x, 0.1, 0.5, torch.Generator().manual_seed(1))
    noisy = (half.abs().sum(dim=(1, 2)) > 0).float().mean()
    assert 0.3 < float(noisy) < 0.7
    assert prompt_mitigation("a cat on a mat", "rna", "p", 0, clip_words(), 2).count(" ") == 6


def test_duplication_simulation_weights(train_dir):
    keys = [f"k{i}" for i in range(1000)]
    w, dup = train.sampling_weights(keys, train.Options(train="t", output="o", seed=0, dup_share=0.05, dup_weight=5.0))
    assert 30 < dup.sum() < 70
    assert np.isclose(w[dup][0] / w[~dup][0], 5.0) and np.isclose(w.sum(), 1.0)


def test_audit_generates_and_scores(train_dir, tmp_path):
    train.run(train.Options(train=str(train_dir), output=str(tmp_path / "model"), steps=2, batch_size=2, progress=False))
    report = audit.run(audit.Options(model=str(tmp_path / "model" / "final"), train=str(train_dir), output=str(tmp_path / "audit"), prompts=4, steps=3, mitigation="gni"))
    g = report["metrics"]["generations"]
    assert g["n"] == 4 and -1 <= g["mean"] <= 1 and g["p75"] <= g["p90"] <= g["p95"]
    assert len(list((tmp_path / "audit" / "generations").glob("*.png"))) == 4
    assert (tmp_path / "audit" / "report.html").exists()


def test_audit_finds_exact_copies_at_similarity_one_and_the_baseline(sample_run, tmp_path):
    from curate.dedup.vectors import open_embeddings
    from curate.io.image_shards import iter_image_samples

    gen = tmp_path / "generated"
    gen.mkdir()
    path = sorted(sample_run["images"].glob("*.parquet"))[0]
    samples = list(iter_image_samples(str(path)))
    emb = open_embeddings(str(sample_run["emb"]))
    vecs = emb.load_all(np.float32)
    sims = vecs @ vecs.T
    np.fill_diagonal(sims, -1)
    row = {k: i for i, k in enumerate(emb.read_column("key").to_pylist())}
    # training images with no near-identical twin, so that the exact copy must be its own top-1
    distinct = [(m, d) for m, d in samples if sims[row[m["key"]]].max() < 0.98]
    copies = {}
    for meta, data in distinct[:3]:
        (gen / f"{meta['key']}.jpg").write_bytes(data)  # exact training images
        copies[f"{meta['key']}.jpg"] = meta["key"]
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(gen / "noise.png")
    report = audit.run(audit.Options(generated=str(gen), corpus=str(sample_run["emb"]), output=str(tmp_path / "audit")))
    import pyarrow.parquet as pq

    matches = {r["generation"]: r for r in pq.read_table(tmp_path / "audit" / "matches.parquet").to_pylist()}
    for name, key in copies.items():
        assert matches[name]["top1_key"] == key and matches[name]["top1_sim"] > 0.99
    assert matches["noise.png"]["top1_sim"] < 0.9
    # the baseline: each training image's best match with itself left out, recomputed by brute force
    np.fill_diagonal(sims, -np.inf)
    expected = np.percentile(sims.max(axis=1), 95)
    assert report["metrics"]["train_vs_train_baseline"]["p95"] == pytest.approx(expected, abs=2e-3)
    assert report["metrics"]["generations"]["share_above_threshold"] == pytest.approx(3 / 4)


def test_tiny_pixel_model_trains_saves_and_generates(train_dir, tmp_path):
    from curate.diffusion import pixel

    s = train.run(train.Options(train=str(train_dir), output=str(tmp_path / "m"), model="tiny-pixel", resolution=32, steps=2, batch_size=2, progress=False))
    assert np.isfinite(s["final_loss"]) and pixel.is_pixel_model(str(tmp_path / "m" / "final"))
    report = audit.run(audit.Options(model=str(tmp_path / "m" / "final"), train=str(train_dir), output=str(tmp_path / "a"), prompts=2, steps=2, resolution=32, mitigation="rt"))
    assert report["metrics"]["generations"]["n"] == 2
    share = report["top1_is_source_share"]
    n_distinct = len({r["cluster_id"] if r["cluster_id"] is not None else r["key"]
                      for p in sorted(train_dir.glob("*.parquet")) for r in pq.read_table(p).to_pylist()})
    assert share["chance"] == round(1 / n_distinct, 4) and 0.0 <= share["all"] <= 1.0
    with Image.open(tmp_path / "a" / "generations" / "00000.png") as im:
        assert im.size == (32, 32)


def test_train_and_audit_logs_are_quiet_by_default_and_loud_with_v(train_dir, tmp_path):
    """No third-party warning, config dump or loading bar by default (diffusers' scheduler config and steps_offset
    notice, the accelerate advice, transformers' weight-loading bars); -v shows them (-q: tests/test_pipeline.py)."""
    import subprocess
    import sys

    def curate(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "curate", *args], capture_output=True, text=True, timeout=600)

    model = tmp_path / "model"
    trained = curate("train", str(train_dir), str(model), "--steps", "2", "--batch-size", "2", "--no-progress")
    assert trained.returncode == 0, trained.stderr
    audit_args = ("audit", str(tmp_path / "a{}"), "--model", str(model / "final"), "--train", str(train_dir),
                  "--prompts", "2", "--steps", "2")
    quiet = curate(*(a.format(0) for a in audit_args))
    assert quiet.returncode == 0, quiet.stderr
    noise = ("Warning", "steps_offset", "_class_name", "accelerate", "Loading", "Writing model shards")
    for out in (trained.stderr, quiet.stderr):
        assert not [n for n in noise if n in out], out
    loud = curate("-v", *(a.format(1) for a in audit_args))
    assert loud.returncode == 0 and "accelerate" in loud.stderr and "Loading pipeline components" in loud.stderr


def test_audit_refuses_a_hash_backend_in_one_line(tmp_path):
    import subprocess
    import sys

    (tmp_path / "m").mkdir()
    (tmp_path / "t").mkdir()
    proc = subprocess.run([sys.executable, "-m", "curate", "audit", str(tmp_path / "a"), "--model", str(tmp_path / "m"),
                           "--train", str(tmp_path / "t"), "--embed-model", "phash"], capture_output=True, text=True)
    assert proc.returncode == 2 and "embed-model: phash is a hash" in proc.stderr and "Traceback" not in proc.stderr
