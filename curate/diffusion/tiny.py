"""`--model tiny`: a small text-to-image latent diffusion model built from configs in code, random weights,
with a CLIP tokenizer rebuilt offline from the BPE vocabulary that ships inside open_clip."""

from __future__ import annotations

import functools
import json
import os
import tempfile
from typing import Any


@functools.cache
def clip_tokenizer(max_length: int = 77) -> Any:  # noqa: ANN401 (transformers' tokenizer)
    """CLIPTokenizer with the 49,408-token CLIP vocabulary and merges, as open_clip's SimpleTokenizer builds them."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    simple = SimpleTokenizer()
    vocab = dict(simple.encoder)
    # open_clip names the specials <start_of_text>/<end_of_text>; CLIP's tokenizer <|startoftext|>/<|endoftext|>
    for ours, theirs in (("<start_of_text>", "<|startoftext|>"), ("<end_of_text>", "<|endoftext|>")):
        if ours in vocab:
            vocab[theirs] = vocab.pop(ours)
    merges = [" ".join(pair) for pair, _ in sorted(simple.bpe_ranks.items(), key=lambda kv: kv[1])]
    with tempfile.TemporaryDirectory() as d:
        vocab_file, merges_file = os.path.join(d, "vocab.json"), os.path.join(d, "merges.txt")
        with open(vocab_file, "w", encoding="utf-8") as f:
            json.dump(vocab, f)
        with open(merges_file, "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
        return CLIPTokenizer(vocab_file, merges_file, model_max_length=max_length)


def reset_call_state(tokenizer: Any) -> None:  # noqa: ANN401
    """Forget the padding/truncation a fast tokenizer's backend keeps from its last call: it is saved into
    tokenizer.json, so a model saved after tokenizing would differ from the same model saved after a resume."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        backend.no_truncation()
        backend.no_padding()


def build(resolution: int = 64, seed: int = 0) -> dict[str, Any]:
    """unet, vae, text_encoder, tokenizer, noise_scheduler: about 1M parameters, trains on a CPU."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, projection_dim=32))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
                        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), sample_size=resolution)
    unet = UNet2DConditionModel(sample_size=resolution // 2, in_channels=4, out_channels=4,
                                block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=8)
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer,
            "noise_scheduler": DDPMScheduler(num_train_timesteps=1000, clip_sample=False)}


def build_pixel(resolution: int = 32, seed: int = 0) -> dict[str, Any]:
    """`--model tiny-pixel`: the same tiny UNet and text encoder denoising pixels directly (no VAE), which a small
    closed-loop experiment can train to the point of replicating its training images on a CPU."""
    import torch
    from diffusers import DDPMScheduler, UNet2DConditionModel

    parts = build(resolution, seed)
    torch.manual_seed(seed + 1)
    # attention only at half resolution: at 32x32 pixels the full-resolution self-attention cost 16x more
    parts["unet"] = UNet2DConditionModel(sample_size=resolution, in_channels=3, out_channels=3,
                                         block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
                                         down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                         up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=8)
    parts["vae"] = None
    parts["noise_scheduler"] = DDPMScheduler(num_train_timesteps=1000, clip_sample=True)
    return parts
