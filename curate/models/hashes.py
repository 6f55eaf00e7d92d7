"""`phash` / `dhash`: 64-bit perceptual hashes (imagehash), stored as 8 packed bytes for a binary index."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from curate.errors import CurateError
from curate.models.base import ImageEmbedder


class HashEmbedder(ImageEmbedder):
    kind = "bits"

    def __init__(self, spec: str) -> None:
        import imagehash

        funcs = {"phash": imagehash.phash, "dhash": imagehash.dhash}
        if spec not in funcs:
            raise CurateError(f"unknown hash {spec!r}; one of phash, dhash")
        self.spec = spec
        self.dim = 64
        self.draft_size = (128, 128)
        self._fn = funcs[spec]

    def preprocess(self, img: Image.Image) -> np.ndarray:
        bits = self._fn(img, hash_size=8).hash.reshape(-1)
        return np.packbits(bits.astype(np.uint8))

    def embed_batch(self, batch: list[np.ndarray]) -> np.ndarray:
        return np.stack(batch).astype(np.uint8)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "preprocess": {"hash": self.spec, "hash_size": 8, "packing": "np.packbits"}}


def hamming(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.unpackbits(np.bitwise_xor(a, b)).sum())
