"""`curate audit`: how much does a model replicate its training images? Scored the way the research does.

Generate images for training captions (DDIM; optional inference-time mitigations GNI, RT, CWR, RNA), embed them and
the training images with one backend of `curate embed`, search with FAISS, and report per generation its top-1
cosine similarity to the training set; over the set the mean, 75/90/95th percentiles (the 95th is the "dataset
similarity score") and the share above a threshold (0.5), beside the train-vs-train baseline (each image's match
with itself left out), split by duplicated vs. unique training images. `--generated DIR --corpus EMB` audits any
folder of images against any `curate embed` output instead.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from typing import Any

import numpy as np
import pyarrow as pa

from curate import __version__, optspec
from curate.config import AuditOptions
from curate.errors import CurateError
from curate.io import fs
from curate.log import quiet_libraries
from curate.models import is_copy_detector
from curate.optspec import ensure_valid

Options = AuditOptions  # this stage's options (curate/config.py)



def similarity_stats(sims: np.ndarray, threshold: float) -> dict[str, Any]:
    sims = np.asarray(sims, np.float64)
    if len(sims) == 0:
        return {"n": 0}
    return {"n": int(len(sims)), "mean": round(float(sims.mean()), 4),
            "p75": round(float(np.percentile(sims, 75)), 4), "p90": round(float(np.percentile(sims, 90)), 4),
            "p95": round(float(np.percentile(sims, 95)), 4), "share_above_threshold": round(float((sims > threshold).mean()), 4)}


def _share(mask: np.ndarray) -> float | None:
    return round(float(mask.mean()), 4) if len(mask) else None


def embed_images(model: Any, images: list[Any], batch: int = 32) -> np.ndarray:  # noqa: ANN401
    out = [model.embed([model.preprocess(im) for im in images[i : i + batch]]) for i in range(0, len(images), batch)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, model.dim), np.float32)


def top1(index_vectors: np.ndarray, queries: np.ndarray, exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(similarity, row) of each query's nearest indexed vector; with exclude_self, row q's match with itself is
    left out (train-vs-train baseline)."""
    import faiss

    index = faiss.IndexFlatIP(index_vectors.shape[1])
    index.add(np.ascontiguousarray(index_vectors, np.float32))
    k = 2 if exclude_self else 1
    sims, ids = index.search(np.ascontiguousarray(queries, np.float32), min(k, index.ntotal))
    if not exclude_self:
        return sims[:, 0], ids[:, 0]
    rows = np.arange(len(queries))
    first_is_self = ids[:, 0] == rows
    pick = np.where(first_is_self, 1, 0) if ids.shape[1] > 1 else np.zeros(len(rows), int)
    return sims[rows, pick], ids[rows, pick]


def load_training(train_dir: str) -> list[dict[str, Any]]:
    import json

    import webdataset as wds

    out = []
    for s in wds.WebDataset(fs.list_shards(train_dir, suffix=".tar"), shardshuffle=False):
        info = json.loads(s["json"]) if "json" in s else {}
        out.append({"key": s["__key__"], "jpg": s["jpg"], "caption": s.get("txt", b"").decode("utf-8"),
                    "dup_count": int(info.get("dup_count", 1)), "cluster_id": info.get("cluster_id")})
    if not out:
        raise CurateError(f"{train_dir}: no training samples")
    return out


def choose_prompts(train: list[dict[str, Any]], n: int, seed: int) -> list[int]:
    """Half from duplicated samples (when there are any), the rest uniformly; seeded."""
    rng = np.random.default_rng(seed)
    dup = [i for i, s in enumerate(train) if s["dup_count"] > 1]
    uniq = [i for i, s in enumerate(train) if s["dup_count"] <= 1]
    k_dup = min(len(dup), n // 2)
    pick = list(rng.choice(dup, k_dup, replace=False)) if k_dup else []
    rest = min(len(uniq), n - k_dup)
    pick += list(rng.choice(uniq, rest, replace=False)) if rest else []
    return [int(i) for i in pick]


def generate(model_dir: str, prompts: list[str], opts: AuditOptions) -> list[Any]:
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from curate.captions.vocab import clip_words
    from curate.diffusion.mitigations import gaussian_noise, prompt_mitigation
    from curate.models import resolve_device

    device = resolve_device(opts.device)
    if not os.path.isdir(model_dir):
        raise CurateError(f"{model_dir}: not a diffusers pipeline folder (curate train writes OUTPUT/final)")
    from curate.diffusion import pixel

    if pixel.is_pixel_model(model_dir):
        vocab = clip_words()
        texts = [prompt_mitigation(p, opts.mitigation, f"prompt{i}", opts.seed, vocab, opts.insertions)
                 if opts.mitigation != "gni" else p for i, p in enumerate(prompts)]
        hook = ((lambda e, g: gaussian_noise(e, opts.gni_lambda, 1.0, g)) if opts.mitigation == "gni" else None)
        return pixel.generate(model_dir, texts, opts.steps, opts.guidance_scale, opts.seed, device, hook)
    quiet_libraries()
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, safety_checker=None, requires_safety_checker=False,
                                                   use_safetensors=True).to(device)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    vocab = clip_words()
    images = []
    for i, prompt in enumerate(prompts):
        g = torch.Generator().manual_seed(opts.seed * 1_000_003 + i)
        kw: dict[str, Any] = {"num_inference_steps": opts.steps, "height": opts.resolution,
                              "width": opts.resolution, "generator": g, "guidance_scale": opts.guidance_scale}
        if opts.mitigation == "gni":
            emb, neg = pipe.encode_prompt(prompt, device, 1, opts.guidance_scale > 1)
            kw.update(prompt_embeds=gaussian_noise(emb, opts.gni_lambda, 1.0, g), negative_prompt_embeds=neg)
            images.append(pipe(**kw).images[0])
        else:
            text = prompt_mitigation(prompt, opts.mitigation, f"prompt{i}", opts.seed, vocab, opts.insertions)
            images.append(pipe(text, **kw).images[0])
    return images


def _thumb(img: Any) -> bytes:  # noqa: ANN401
    buf = io.BytesIO()
    im = img.copy()
    im.thumbnail((160, 160))
    im.convert("RGB").save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def write_report(output: str, report: dict[str, Any], pairs: list[tuple[Any, Any, str]]) -> None:
    from curate.report import html, plots

    rows = [(k, v.get("n"), v.get("mean"), v.get("p75"), v.get("p90"), v.get("p95"), v.get("share_above_threshold"))
            for k, v in report["metrics"].items()]
    hist = plots.histogram(np.array(report["_sims"]), "Top-1 similarity of generations to the training set",
                           "cosine similarity", bins=30, vline=report["threshold"])
    gallery = html.gallery([item for gen, match, label in pairs
                            for item in ((_thumb(gen), f"generated: {label}"), (_thumb(match) if match else None,
                                                                                "nearest training image"))])
    page = html.page("curate audit report", [
        ("Replication metrics", html.table(["set", "n", "mean", "p75", "p90", "p95 (dataset similarity score)",
                                            f"share > {report['threshold']}"], rows)),
        ("Distribution", html.image(hist, "top-1 similarity histogram")),
        ("Generations beside their nearest training image", gallery),
    ])
    fs.write_text_atomic(os.path.join(output, "report.html"), page)


def _decode(data: bytes) -> Any:  # noqa: ANN401
    from PIL import Image

    from curate.io.images import to_rgb

    return to_rgb(Image.open(io.BytesIO(data)))


def _fingerprint(model_dir: str, train_dir: str, opts: AuditOptions) -> str:
    """What an audit's result depends on: the model's weights, the training shards' sidecars, the options."""
    import hashlib

    h = hashlib.sha256(json.dumps(optspec.recorded(opts), sort_keys=True, default=str).encode())
    for folder, ends in ((model_dir, (".safetensors", ".json")), (train_dir, (".parquet",))):
        for base, _, files in sorted(os.walk(folder)):
            for name in sorted(files):
                if name.endswith(ends) and not name.startswith("."):
                    h.update(name.encode())
                    with open(os.path.join(base, name), "rb") as f:
                        h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def audit_model(spec: str) -> str:
    """`auto`: SSCD, the research's replication measure (its 0.5 mark is in SSCD units), where installed; else
    effnet-lite0, whose similarities read lower (there 0.5 is not the research's mark)."""
    if spec != "auto":
        return spec
    from curate.models.onnx_copy import available

    return "sscd" if available("sscd") else "effnet-lite0"


def run(opts: AuditOptions) -> dict[str, Any]:
    """Generate for training captions with the model `opts.model` and score replication against `opts.train`;
    or, with `generated` and `corpus`, audit a folder of images against an embed output."""
    ensure_valid(opts)
    if opts.generated:
        return run_folder(opts)
    from curate.models import load_image_model

    opts = dataclasses.replace(opts, embed_model=audit_model(opts.embed_model))
    model_dir, train_dir, output = opts.model, opts.train, opts.output
    os.makedirs(output, exist_ok=True)
    fingerprint = _fingerprint(model_dir, train_dir, opts)
    done = os.path.join(output, "report.json")
    if os.path.exists(done):
        prev = fs.read_json(done)
        if prev.get("fingerprint") == fingerprint:
            return prev  # the same model, training set and options were audited already
    train = load_training(train_dir)
    model = load_image_model(opts.embed_model)
    train_imgs = [_decode(s["jpg"]) for s in train]
    if opts.match_resolution:
        # what the model saw (and so what it could copy) is the training image at its resolution: a 32 px
        # generation is compared with the 32 px training image, not with the 512 px original
        from curate.models.preprocess import square

        train_imgs = [square(im, opts.resolution, "crop") for im in train_imgs]
    train_emb = embed_images(model, train_imgs)
    picks = choose_prompts(train, opts.prompts, opts.seed)
    prompts = [train[i]["caption"] for i in picks]
    generations = generate(model_dir, prompts, opts)
    with fs.atomic_dir(os.path.join(output, "generations")) as gen_dir:
        for i, img in enumerate(generations):
            img.save(os.path.join(gen_dir, f"{i:05d}.png"))
    gen_emb = embed_images(model, generations)
    sims, rows = top1(train_emb, gen_emb)
    base_sims, _ = top1(train_emb, train_emb, exclude_self=True)
    is_dup = np.array([train[i]["dup_count"] > 1 for i in picks], bool)
    # the generation's nearest training image is its prompt's own image (or a duplicate of it: same cluster)
    is_source = [r == i or (train[i]["cluster_id"] is not None and train[r]["cluster_id"] == train[i]["cluster_id"])
                 for r, i in zip(rows, picks, strict=True)]
    src = np.array(is_source, bool)
    matches = pa.table({
        "generation": [f"generations/{i:05d}.png" for i in range(len(picks))], "prompt": prompts,
        "source_key": [train[i]["key"] for i in picks], "source_dup_count": [train[i]["dup_count"] for i in picks],
        "top1_key": [train[r]["key"] for r in rows], "top1_sim": sims.astype(np.float32),
        "top1_is_source": is_source,
    })
    fs.write_parquet_atomic(matches, os.path.join(output, "matches.parquet"))
    t = opts.threshold
    report = {
        "model": model_dir, "train": train_dir, "embed_model": opts.embed_model, "threshold": t,
        "units": "sscd" if is_copy_detector(opts.embed_model) else f"{opts.embed_model} (not SSCD units)",
        "mitigation": opts.mitigation, "seed": opts.seed, "steps": opts.steps,
        "metrics": {"generations": similarity_stats(sims, t),
                    "generations_of_duplicated": similarity_stats(sims[is_dup], t),
                    "generations_of_unique": similarity_stats(sims[~is_dup], t),
                    "train_vs_train_baseline": similarity_stats(base_sims, t)},
        "top1_is_source_share": {"all": _share(src), "duplicated": _share(src[is_dup]), "unique": _share(src[~is_dup]),
                                 "chance": round(1 / max(1, len({s["cluster_id"] if s["cluster_id"] is not None
                                                                 else s["key"] for s in train})), 4)},
        "curate_version": __version__, "_sims": sims.tolist(), "fingerprint": fingerprint,
    }
    write_report(output, report, [(g, train_imgs[r], p) for g, r, p in zip(generations, rows, prompts, strict=True)])
    report.pop("_sims")
    fs.write_json_atomic(os.path.join(output, "report.json"), report)
    return report


def run_folder(opts: AuditOptions) -> dict[str, Any]:
    """Audit any folder of images against any `curate embed` output (its manifest names the model)."""
    from curate.dedup.vectors import open_embeddings
    from curate.io.images import decode_image
    from curate.models import load_image_model

    generated, corpus, output = opts.generated, opts.corpus, opts.output
    emb = open_embeddings(corpus)
    if emb.kind != "float":
        raise CurateError(f"{corpus}: audit needs float embeddings, not {emb.kind}")
    spec = fs.read_json(fs.join(corpus, "manifest.json"))["model"]
    model = load_image_model(spec)
    files = sorted(p for p in os.listdir(generated) if p.lower().endswith((".png", ".jpg", ".jpeg", ".webp")))
    if not files:
        raise CurateError(f"{generated}: no images (.png, .jpg, .jpeg, .webp)")
    images, names = [], []
    for name in files:
        with open(os.path.join(generated, name), "rb") as f:
            img, reason, detail = decode_image(f.read())
        if img is None:
            raise CurateError(f"{os.path.join(generated, name)}: {reason} ({detail})")
        images.append(img)
        names.append(name)
    corpus_emb = emb.load_all(np.float32)
    gen_emb = embed_images(model, images)
    sims, rows = top1(corpus_emb, gen_emb)
    base_sims, _ = top1(corpus_emb, corpus_emb, exclude_self=True)
    keys = emb.read_column("key").cast(pa.string()).to_pylist()
    os.makedirs(output, exist_ok=True)
    fs.write_parquet_atomic(pa.table({"generation": names, "top1_key": [keys[r] for r in rows],
                                      "top1_sim": sims.astype(np.float32)}), os.path.join(output, "matches.parquet"))
    t = opts.threshold
    report = {"generated": generated, "corpus": corpus, "embed_model": spec, "threshold": t,
              "metrics": {"generations": similarity_stats(sims, t),
                          "train_vs_train_baseline": similarity_stats(base_sims, t)},
              "curate_version": __version__, "_sims": sims.tolist()}
    write_report(output, report, [(img, None, n) for img, n in zip(images, names, strict=True)])
    report.pop("_sims")
    fs.write_json_atomic(os.path.join(output, "report.json"), report)
    return report
