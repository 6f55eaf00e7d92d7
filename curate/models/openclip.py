"""`open_clip:ARCH/PRETRAINED`: image and text towers of an open_clip model.

PRETRAINED is an open_clip tag (fetched from the hub by users with the internet), a local checkpoint path
(`open_clip:ViT-B-32//data/ckpt.pt`), or `random` (random weights, for tests and timing only).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image

from curate.errors import CurateError
from curate.models.base import ImageEmbedder, TextEmbedder, l2_normalize


def parse(spec: str) -> tuple[str, str | None]:
    body = spec.split(":", 1)[1]
    arch, _, pretrained = body.partition("/")
    if not arch:
        raise CurateError(f"{spec}: expected open_clip:ARCH/PRETRAINED (e.g. open_clip:ViT-B-32/laion2b_s34b_b79k)")
    if pretrained in ("", "random", "none", "None"):
        return arch, None
    return arch, pretrained


def load_model(spec: str, device: str) -> tuple[Any, Any, Any]:  # noqa: ANN401
    import open_clip

    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
    arch, pretrained = parse(spec)
    if arch not in open_clip.list_models():
        raise CurateError(f"{spec}: open_clip has no architecture {arch!r}")
    if pretrained and (pretrained.startswith((".", "/", "~")) or os.sep in pretrained):
        pretrained = os.path.expanduser(pretrained)
        if not os.path.isfile(pretrained):
            raise CurateError(f"{spec}: no checkpoint file at {pretrained}")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained, device=device)
    except Exception as err:  # noqa: BLE001 (hub errors come in many types; all mean "no weights here")
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CurateError(
            f"{spec}: cannot load the weights ({first[:200]}). Pass a local checkpoint, "
            f"open_clip:{arch}//path/to/open_clip_model.bin, or put them in the hub cache (HF_HOME) "
            "on a machine with the internet first"
        ) from None
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(arch)


class OpenClipImage(ImageEmbedder):
    def __init__(self, spec: str, device: str = "cpu") -> None:
        self.spec = spec
        self.device = device
        self.model, self._preprocess, self.tokenizer = load_model(spec, device)
        self.dim = int(self.model.visual.output_dim)
        size = self.model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        self.draft_size = (int(size), int(size))

    def preprocess(self, img: Image.Image) -> np.ndarray:
        return self._preprocess(img).numpy()

    def embed_batch(self, batch: list[np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode(), torch.autocast("cuda", enabled=self.device.startswith("cuda")):
            x = torch.from_numpy(np.stack(batch)).to(self.device)
            return l2_normalize(self.model.encode_image(x).float().cpu().numpy())

    def text_tower(self) -> OpenClipText:
        return OpenClipText(self.spec, self.device, (self.model, self.tokenizer))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "preprocess": {"open_clip": repr(self._preprocess)},
                "weights": parse(self.spec)[1] or "random"}


class OpenClipText(TextEmbedder):
    def __init__(self, spec: str, device: str = "cpu", loaded: tuple[Any, Any] | None = None) -> None:
        self.spec = spec
        self.device = device
        if loaded is None:
            model, _, tokenizer = load_model(spec, device)
        else:
            model, tokenizer = loaded
        self.model, self.tokenizer = model, tokenizer
        self.dim = int(model.text_projection.shape[1]) if getattr(model, "text_projection", None) is not None \
            else int(model.visual.output_dim)

    def embed_text(self, texts: list[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            tokens = self.tokenizer(texts).to(self.device)
            return l2_normalize(self.model.encode_text(tokens).float().cpu().numpy())
