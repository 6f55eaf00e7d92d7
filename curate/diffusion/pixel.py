"""Saving and sampling the pixel-space tiny model (no VAE, so no StableDiffusionPipeline): DDIM with
classifier-free guidance, written out with diffusers' and transformers' own save_pretrained."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

MARKER = "curate_pixel_model.json"


def is_pixel_model(path: str) -> bool:
    return os.path.exists(os.path.join(path, MARKER))


def save(components: dict[str, Any], path: str, resolution: int) -> None:
    from curate.diffusion.tiny import reset_call_state
    from curate.io.fs import atomic_dir

    reset_call_state(components["tokenizer"])
    with atomic_dir(path) as tmp:
        components["unet"].save_pretrained(os.path.join(tmp, "unet"), safe_serialization=True)
        components["text_encoder"].save_pretrained(os.path.join(tmp, "text_encoder"), safe_serialization=True)
        components["tokenizer"].save_pretrained(os.path.join(tmp, "tokenizer"))
        components["noise_scheduler"].save_pretrained(os.path.join(tmp, "scheduler"))
        with open(os.path.join(tmp, MARKER), "w") as f:
            json.dump({"kind": "pixel", "resolution": resolution}, f)


def generate(path: str, prompts: list[str], steps: int, guidance: float, seed: int, device: str,
             embed_hook: Callable[[Any, Any], Any] | None = None) -> list[Any]:  # noqa: ANN401
    import numpy as np
    import torch
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from PIL import Image
    from transformers import CLIPTextModel, CLIPTokenizer

    with open(os.path.join(path, MARKER)) as f:
        resolution = json.load(f)["resolution"]
    unet = UNet2DConditionModel.from_pretrained(os.path.join(path, "unet"), use_safetensors=True).to(device).eval()
    text = CLIPTextModel.from_pretrained(os.path.join(path, "text_encoder"), use_safetensors=True).to(device).eval()
    tok = CLIPTokenizer.from_pretrained(os.path.join(path, "tokenizer"))
    sched = DDIMScheduler.from_pretrained(os.path.join(path, "scheduler"))

    def encode(texts: list[str]) -> Any:  # noqa: ANN401
        ids = tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids.to(device)
        return text(ids)[0]

    images = []
    with torch.inference_mode():
        uncond = encode([""])
        for i, prompt in enumerate(prompts):
            g = torch.Generator().manual_seed(seed * 1_000_003 + i)
            cond = encode([prompt])
            if embed_hook is not None:
                cond = embed_hook(cond, g)
            x = torch.randn((1, 3, resolution, resolution), generator=g).to(device)
            sched.set_timesteps(steps)
            for t in sched.timesteps:
                eps = unet(torch.cat([x, x]), t, torch.cat([uncond, cond])).sample
                e_u, e_c = eps.chunk(2)
                x = sched.step(e_u + guidance * (e_c - e_u), t, x).prev_sample
            arr = ((x[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
            images.append(Image.fromarray(np.ascontiguousarray(arr)))
    return images
