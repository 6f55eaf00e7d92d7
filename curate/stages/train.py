"""`curate train`: diffusers text-to-image fine-tuning over `curate export` tars, with the research's mitigations.

UNet noise-prediction loss with a DDPM noise scheduler; the VAE and text encoder are frozen. `--model tiny` builds a
~1M-parameter model in code (`tiny-pixel`: the same without a VAE, denoising pixels) (curate/diffusion/tiny.py) so the whole stage runs on a CPU; `--model PATH` loads a
local diffusers Stable Diffusion folder. Every random draw of step s comes from generators seeded by (seed, s), so a
run resumed from a checkpoint continues exactly as the uninterrupted run would have. Checkpoints are safetensors
(UNet) plus the optimizer state, written to a temp folder and renamed; `train.log.jsonl` has one line per step.

The training set is decoded once and held in memory at the training resolution (fine for fine-tuning sets of
thousands of images at 64-256 px; a streaming loader is future work).
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from typing import Any

import numpy as np

from curate import optspec
from curate.config import TrainOptions
from curate.diffusion.mitigations import TrainMitigations, gaussian_noise, train_caption
from curate.errors import CurateError
from curate.io import fs
from curate.log import quiet_libraries
from curate.optspec import ensure_valid

Options = TrainOptions  # this stage's options (curate/config.py)



def load_training_set(train_dir: str, resolution: int) -> tuple[np.ndarray, list[str], list[list[str]]]:
    """All samples of the export tars: images as float32 [-1, 1] (N, 3, R, R), keys, caption pools."""
    import webdataset as wds
    from PIL import Image

    from curate.io.images import to_rgb
    from curate.models.preprocess import square

    tars = fs.list_shards(train_dir, suffix=".tar")
    images, keys, pools = [], [], []
    for sample in wds.WebDataset(tars, shardshuffle=False):
        try:
            img = to_rgb(Image.open(io.BytesIO(sample["jpg"])))
        except Exception:  # noqa: BLE001 (export wrote decodable images; a corrupt tar member is skipped, counted)
            continue
        img = square(img, resolution, "crop")
        images.append(np.asarray(img, np.float32).transpose(2, 0, 1) / 127.5 - 1.0)
        info = json.loads(sample["json"]) if "json" in sample else {}
        keys.append(sample["__key__"])
        pools.append(info.get("captions") or [sample.get("txt", b"").decode("utf-8")])
    if not images:
        raise CurateError(f"{train_dir}: no training samples in its tars")
    return np.stack(images), keys, pools


def load_components(model: str, resolution: int, seed: int) -> dict[str, Any]:
    if model == "tiny":
        from curate.diffusion.tiny import build

        return build(resolution, seed)
    if model == "tiny-pixel":
        from curate.diffusion.tiny import build_pixel

        return build_pixel(resolution, seed)
    if not os.path.isdir(model):
        raise CurateError(f"--model {model}: not 'tiny' and not a local diffusers folder")
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    quiet_libraries()
    pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None, requires_safety_checker=False,
                                                   use_safetensors=True)
    return {"unet": pipe.unet, "vae": pipe.vae, "text_encoder": pipe.text_encoder, "tokenizer": pipe.tokenizer,
            "noise_scheduler": DDPMScheduler.from_config(pipe.scheduler.config)}


def latest_checkpoint(output: str) -> tuple[int, str] | None:
    folder = os.path.join(output, "checkpoints")
    if not os.path.isdir(folder):
        return None
    # finished checkpoints only: a kill may leave `step-N.tmp`, complete inside but never renamed
    steps = sorted(int(d[5:]) for d in os.listdir(folder) if d.startswith("step-") and d[5:].isdigit() and
                   os.path.exists(os.path.join(folder, d, "trainer_state.json")))
    return (steps[-1], os.path.join(folder, f"step-{steps[-1]:06d}")) if steps else None


def _save_checkpoint(output: str, step: int, unet: Any, optimizer: Any, state: dict[str, Any]) -> None:  # noqa: ANN401
    import torch

    with fs.atomic_dir(os.path.join(output, "checkpoints", f"step-{step:06d}")) as tmp:
        unet.save_pretrained(os.path.join(tmp, "unet"), safe_serialization=True)
        torch.save(optimizer.state_dict(), os.path.join(tmp, "optimizer.pt"))
        with open(os.path.join(tmp, "trainer_state.json"), "w") as f:
            json.dump({**state, "step": step}, f, indent=2)


def save_pipeline(components: dict[str, Any], path: str) -> None:
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from curate.diffusion.tiny import reset_call_state

    quiet_libraries()

    reset_call_state(components["tokenizer"])

    pipe = StableDiffusionPipeline(vae=components["vae"], text_encoder=components["text_encoder"],
                                   tokenizer=components["tokenizer"], unet=components["unet"],
                                   scheduler=DDIMScheduler.from_config(components["noise_scheduler"].config),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    with fs.atomic_dir(path) as tmp:
        pipe.save_pretrained(tmp, safe_serialization=True)
        write_slow_tokenizer_files(os.path.join(tmp, "tokenizer"))
        prefix_text_encoder_names(os.path.join(tmp, "text_encoder"))


def prefix_text_encoder_names(folder: str) -> None:
    """Save the CLIP text encoder's weights under the names every published Stable Diffusion checkpoint uses
    (`text_model.` first): transformers 5 drops that prefix when it saves and reads either form, while
    transformers 4 finds none of the unprefixed names and silently re-initialises the whole encoder."""
    from safetensors.torch import load_file, save_file

    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        if json.load(f).get("model_type") != "clip_text_model":
            return
    index = os.path.join(folder, "model.safetensors.index.json")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            path = os.path.join(folder, name)
            weights = load_file(path)
            if weights and not all(k.startswith("text_model.") for k in weights):
                save_file({k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in weights.items()},
                          path, metadata={"format": "pt"})
    if os.path.exists(index):
        with open(index, encoding="utf-8") as f:
            doc = json.load(f)
        doc["weight_map"] = {k if k.startswith("text_model.") else f"text_model.{k}": v
                             for k, v in doc["weight_map"].items()}
        with open(index, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)


def write_slow_tokenizer_files(folder: str) -> None:
    """vocab.json and merges.txt beside tokenizer.json, from it: transformers 5 saves only tokenizer.json, and
    transformers 4's CLIPTokenizer (what diffusers loads there) reads only these two files."""
    with open(os.path.join(folder, "tokenizer.json"), encoding="utf-8") as f:
        model = json.load(f)["model"]
    if model.get("type") != "BPE":
        return
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    targets = {"vocab.json": json.dumps(model["vocab"], ensure_ascii=False),
               "merges.txt": "#version: 0.2\n" + "\n".join(merges) + "\n"}
    for name, text in targets.items():
        if not os.path.exists(os.path.join(folder, name)):
            with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
                f.write(text)


def _truncate_log(path: str, last_step: int) -> None:
    """Keep the log lines of steps <= last_step (a killed run may have logged steps past its checkpoint)."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        lines = [ln for ln in f if ln.strip()]
    keep = []
    for ln in lines:
        try:
            if json.loads(ln)["step"] <= last_step:
                keep.append(ln)
        except (ValueError, KeyError):
            break  # a torn last line
    if len(keep) != len(lines):
        fs.write_text_atomic(path, "".join(keep))


def sampling_weights(keys: list[str], opts: TrainOptions) -> tuple[np.ndarray, np.ndarray]:
    """(weights, duplicated mask): the duplication simulation of the reference experiments, seeded by key."""
    from curate.captions.ops import rng_for

    dup = np.array([rng_for(opts.seed, k, "dup").random() < opts.dup_share for k in keys], bool)
    weights = np.where(dup, opts.dup_weight, 1.0)
    return weights / weights.sum(), dup


def run(opts: TrainOptions) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from curate.captions.vocab import clip_words
    from curate.models import resolve_device

    ensure_valid(opts)
    train_dir, output, progress = opts.train, opts.output, opts.progress
    recorded = optspec.recorded(opts)
    try:
        mit = TrainMitigations.parse(opts.mitigations, opts.p, opts.gn_lambda, opts.mc)
    except ValueError as err:
        raise CurateError(f"--mitigations: {err}") from None
    device = resolve_device(opts.device)
    os.makedirs(output, exist_ok=True)
    images, keys, pools = load_training_set(train_dir, opts.resolution)
    weights, dup = sampling_weights(keys, opts)
    vocab = clip_words()

    comp = load_components(opts.model, opts.resolution, opts.seed)
    unet, vae, text_encoder, tokenizer, scheduler = (comp[k] for k in
                                                     ("unet", "vae", "text_encoder", "tokenizer", "noise_scheduler"))
    text_encoder.requires_grad_(False)
    text_encoder.to(device).eval()
    if vae is not None:
        vae.requires_grad_(False)
        vae.to(device).eval()
    start = 0
    resumed = latest_checkpoint(output)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=opts.lr)
    if resumed is not None:
        prev = fs.read_json(os.path.join(resumed[1], "trainer_state.json"))
        if prev.get("options") != recorded:
            raise CurateError(f"{output}: has checkpoints of a run with other options; choose another output folder")
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(os.path.join(resumed[1], "unet"), use_safetensors=True)
        if "_name_or_path" in unet.config:  # diffusers records where it loaded from: not part of the model
            unet._internal_dict = type(unet.config)({k: v for k, v in unet.config.items() if k != "_name_or_path"})
        optimizer = torch.optim.AdamW(unet.parameters(), lr=opts.lr)
        optimizer.load_state_dict(torch.load(os.path.join(resumed[1], "optimizer.pt"), weights_only=True,
                                             map_location="cpu"))
        start = resumed[0]
    unet.to(device).train()
    log_path = os.path.join(output, "train.log.jsonl")
    applied_total: dict[str, int] = dict(prev.get("mitigations_applied", {})) if resumed is not None else {}
    loss_value = float(prev.get("loss", "nan")) if resumed is not None else float("nan")
    _truncate_log(log_path, start)  # steps after the checkpoint are redone, and logged once
    comp["unet"] = unet

    pixels = torch.from_numpy(images)
    if vae is not None:
        with torch.no_grad():  # the VAE is frozen: encode every image once
            moments = torch.cat([vae.encode(pixels[i : i + 32].to(device)).latent_dist.parameters.cpu()
                                 for i in range(0, len(pixels), 32)])
        scaling = getattr(vae.config, "scaling_factor", 0.18215)
    bar = tqdm(total=opts.steps, initial=start, desc="train", unit="step", disable=None if progress else True, file=sys.stderr)
    t0 = time.time()
    for step in range(start + 1, opts.steps + 1):
        g = torch.Generator().manual_seed(opts.seed * 1_000_003 + step)
        idx = torch.multinomial(torch.from_numpy(weights), opts.batch_size, replacement=True, generator=g)
        captions = []
        for i in idx.tolist():
            fixed = bool(dup[i]) and opts.dup_mode == "both"
            caption, applied = train_caption(pools[i], keys[i], step, opts.seed, mit, vocab, fixed=fixed)
            if opts.caption_dropout > 0 and float(torch.rand(1, generator=g)) < opts.caption_dropout:
                caption = ""
            captions.append(caption)
            for a in applied:
                applied_total[a] = applied_total.get(a, 0) + 1
        if vae is not None:
            mean, logvar = moments[idx].chunk(2, dim=1)
            latents = (mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * torch.randn(mean.shape, generator=g)) * scaling
        else:  # tiny-pixel: the model denoises pixels in [-1, 1]
            latents = pixels[idx]
        noise = torch.randn(latents.shape, generator=g)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),), generator=g)
        noisy = scheduler.add_noise(latents, noise, t)
        ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        with torch.no_grad():
            encoded = text_encoder(ids.to(device))[0]
        if mit.gn > 0:
            encoded = gaussian_noise(encoded, mit.gn, mit.p, g)
        with torch.autocast("cuda", enabled=device.startswith("cuda")):
            pred = unet(noisy.to(device), t.to(device), encoded).sample
        loss = F.mse_loss(pred.float(), noise.to(device).float())
        if not torch.isfinite(loss):
            raise CurateError(f"train: loss is {loss.item()} at step {step}; lower --lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_value = float(loss.item())
        with open(log_path, "a") as f:
            f.write(json.dumps({"step": step, "loss": round(loss_value, 6), "captions": captions}) + "\n")
        bar.set_postfix(loss=f"{loss_value:.4f}")
        bar.update(1)
        if step % opts.checkpoint_every == 0 or step == opts.steps:
            _save_checkpoint(output, step, unet, optimizer, {"options": recorded, "loss": loss_value,
                                                                 "mitigations_applied": dict(applied_total)})
    bar.close()
    if vae is None:
        from curate.diffusion import pixel

        pixel.save(comp, os.path.join(output, "final"), opts.resolution)
    else:
        save_pipeline(comp, os.path.join(output, "final"))
    summary = {"steps": opts.steps, "resumed_from": start, "final_loss": loss_value, "samples": len(keys),
               "duplicated_samples": int(dup.sum()), "mitigations_applied": applied_total,
               "seconds": round(time.time() - t0, 2), "device": device}
    fs.write_json_atomic(os.path.join(output, "summary.json"), summary)
    return summary
