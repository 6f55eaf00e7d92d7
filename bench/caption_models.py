"""Model-backed caption sources (`recaption --caption-model / --paraphrase-model`): images/s and captions/s on
this machine, for the tiny random models the tests use and, with --full-size, for randomly initialised models of
the real architectures' sizes (BLIP base: ViT-B/16 at 384 px + a BERT-base decoder, 224M parameters; T5-small,
60M), since no such weights are offline and speed depends on the architecture, not the weights' values.
Beam search (4 beams, k = 2 returned, up to 40 new tokens), as the stage runs them; the second pass reads the
cache. `python -m bench.caption_models` prints one JSON object."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _photos(n: int) -> list:
    """n real photos (scikit-image's, repeated with crops when n is larger), as PIL images."""
    from PIL import Image
    from skimage import data

    names = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")
    base = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in names]
    out = []
    for i in range(n):
        img = base[i % len(base)]
        w, h = img.size
        c = 1 + (i // len(base))  # each repeat a slightly different crop: another image
        out.append(img.crop((c, c, w - c, h - c)))
    return out


def _captions(n: int) -> list[str]:
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "laion_captions_1k.parquet"
    if path.exists():
        import pyarrow.parquet as pq

        caps = [c for c in pq.read_table(path, columns=["TEXT"]).column("TEXT").to_pylist() if c and c.strip()]
    else:
        from bench.recaption import WORDS

        rng = np.random.default_rng(0)
        caps = [" ".join(rng.choice(WORDS, size=8)) for _ in range(n)]
    return [caps[i % len(caps)] + ("" if i < len(caps) else f" {i}") for i in range(n)]


def _full_size(root: Path) -> dict[str, str]:
    """Randomly initialised BLIP-base and T5-small folders (the real architectures' sizes)."""
    import torch
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
        T5Config,
        T5ForConditionalGeneration,
    )

    from curate.captions.tiny_models import _tokenizer

    tok = _tokenizer()
    torch.manual_seed(0)
    blip = root / "blip-base-random"
    cfg = BlipConfig(text_config={"vocab_size": len(tok), "bos_token_id": tok.cls_token_id, "pad_token_id": tok.pad_token_id,
                                  "sep_token_id": tok.sep_token_id, "eos_token_id": tok.sep_token_id},
                     vision_config={"image_size": 384})
    BlipForConditionalGeneration(cfg).save_pretrained(blip)
    BlipProcessor(BlipImageProcessor(size={"height": 384, "width": 384}), tok).save_pretrained(blip)
    t5 = root / "t5-small-random"
    T5ForConditionalGeneration(T5Config(vocab_size=len(tok), decoder_start_token_id=tok.pad_token_id,
                                        pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id)).save_pretrained(t5)
    tok.save_pretrained(t5)
    return {"caption": str(blip), "paraphrase": str(t5)}


def _rate(fn: Callable[[list], list], items: list, batch_size: int) -> float:
    t = time.perf_counter()
    for i in range(0, len(items), batch_size):
        fn(items[i:i + batch_size])
    return round(len(items) / (time.perf_counter() - t), 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--captions", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--full-size", type=int, default=0, help="also time the full-size random models on this many inputs")
    args = ap.parse_args()
    import torch

    from curate.captions import models, tiny_models

    with tempfile.TemporaryDirectory(prefix="curate-bench-models-") as d:
        root = Path(d)
        os.environ["CURATE_CACHE"] = str(root / "cache")
        photos, caps = _photos(args.images), _captions(args.captions)
        tiny = {"caption": tiny_models.save_captioner(str(root / "blip")),
                "paraphrase": tiny_models.save_paraphraser(str(root / "t5"), "seq2seq")}
        result: dict = {"images": args.images, "captions": args.captions, "batch_size": args.batch_size,
                        "threads": torch.get_num_threads(), "decoding": "beam search, 4 beams, k=2, <= 40 new tokens"}

        def measure(paths: dict[str, str], n_images: int, n_caps: int) -> dict:
            cap = models.Captioner(paths["caption"], 2, "cpu")
            par = models.Paraphraser(paths["paraphrase"], 2, "Paraphrase: {caption}", "cpu")
            out = {"caption_model_images_per_s": _rate(cap, photos[:n_images], args.batch_size),
                   "paraphrase_model_captions_per_s": _rate(par, caps[:n_caps], args.batch_size)}
            cache = models.Cache()
            items = [(models.text_digest(c), c) for c in caps[:n_caps]]
            t = time.perf_counter()
            models.generate_cached(par.key, items, par, args.batch_size, cache)
            first = time.perf_counter() - t
            t = time.perf_counter()
            _, generated = models.generate_cached(par.key, items, par, args.batch_size, cache)
            again = time.perf_counter() - t
            cache.close()
            out["paraphrase_through_cache"] = {"first_s": round(first, 3), "cached_s": round(again, 4),
                                               "generated_on_rerun": generated}
            return out

        result["tiny"] = measure(tiny, args.images, args.captions)
        if args.full_size:
            result["full_size_random"] = {"models": "BLIP base (224M), T5-small (60M), random weights",
                                          "inputs": args.full_size,
                                          **measure(_full_size(root), args.full_size, args.full_size)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
