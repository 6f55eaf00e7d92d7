"""`torchscript:PATH`: copy-detection models distributed as TorchScript (SSCD), with SSCD's preprocessing.

SSCD recommends resizing the short edge to 288 (aspect kept; same-shaped images are batched together) or a
320x320 square; ImageNet normalisation. Both are options (`resize`: short|crop|resize, `size`).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
from PIL import Image

from curate.errors import CurateError
from curate.models.base import ImageEmbedder, l2_normalize
from curate.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, square, to_chw


class TorchScriptEmbedder(ImageEmbedder):
    def __init__(self, spec: str, device: str = "cpu", resize: str = "short", size: int = 288) -> None:
        import torch

        self.spec = spec
        self.device = device
        self.resize = resize
        self.size = size
        path = os.path.expanduser(spec.split(":", 1)[1])
        if not os.path.isfile(path):
            raise CurateError(f"{spec}: no TorchScript file at {path} (SSCD models ship as *.torchscript.pt)")
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated upstream, but it is how SSCD ships
                warnings.simplefilter("ignore", FutureWarning)
                self.model = torch.jit.load(path, map_location=device).eval()
        except Exception as err:  # noqa: BLE001
            raise CurateError(f"{spec}: not a loadable TorchScript file ({str(err).splitlines()[0][:200]})") from None
        with torch.inference_mode():
            probe = self.model(torch.zeros(1, 3, size, size, device=device))
        self.dim = int(probe.shape[-1])
        self.draft_size = (size, size)

    def preprocess(self, img: Image.Image) -> np.ndarray:
        return to_chw(square(img, self.size, self.resize), IMAGENET_MEAN, IMAGENET_STD)

    def embed_batch(self, batch: list[np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode(), torch.autocast("cuda", enabled=self.device.startswith("cuda")):
            x = torch.from_numpy(np.stack(batch)).to(self.device)
            return l2_normalize(self.model(x).float().cpu().numpy())

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "preprocess": {"resize": self.resize, "size": self.size,
                                                     "mean": IMAGENET_MEAN, "std": IMAGENET_STD}}
