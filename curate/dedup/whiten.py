"""Feature post-processing fit on the corpus: centering, or PCA whitening with shrinkage.

Generic features (ImageNet CNNs, CLIP) share a common direction and a few dominant components that make
unrelated images look alike; removing the mean and equalising the variance of the principal components is the
usual remedy in image retrieval. Fit on a sample of the corpus; the same transform is saved with the index so
`--against` applies it to new data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from curate.dedup.index import sample_rows
from curate.dedup.vectors import EmbeddingSet

MODES = ("none", "center", "pca")


@dataclass
class Whitening:
    mean: np.ndarray  # (d,)
    proj: np.ndarray | None  # (d, d') or None for centering only

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = np.asarray(x, np.float32) - self.mean
        if self.proj is not None:
            y = y @ self.proj
        return (y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)).astype(np.float32)

    @property
    def dim_out(self) -> int:
        return int(self.proj.shape[1]) if self.proj is not None else int(self.mean.shape[0])

    def save(self, path: str) -> None:
        np.savez(path, mean=self.mean, proj=self.proj if self.proj is not None else np.zeros((0, 0), np.float32))

    @staticmethod
    def load(path: str) -> Whitening:
        with np.load(path) as f:
            proj = f["proj"]
            return Whitening(f["mean"], proj if proj.size else None)


def fit(emb: EmbeddingSet, mode: str, sample: int = 100_000, shrink: float = 0.1, seed: int = 0) -> Whitening | None:
    """`center`: subtract the corpus mean. `pca`: also rotate to principal axes and scale each by
    1/sqrt(eigenvalue + shrink * mean eigenvalue) (shrinkage keeps tiny corpora from blowing up noise)."""
    if mode == "none" or emb.kind != "float":
        return None
    x = sample_rows(emb, min(emb.n, sample), seed)
    mean = x.mean(axis=0)
    if mode == "center":
        return Whitening(mean.astype(np.float32), None)
    if mode != "pca":
        raise ValueError(f"unknown whitening {mode!r}; one of {MODES}")
    xc = x - mean
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    eig = (s**2) / max(1, len(x) - 1)
    keep = eig > 1e-8 * eig.max()
    scale = 1.0 / np.sqrt(eig[keep] + shrink * eig[keep].mean())
    return Whitening(mean.astype(np.float32), (vt[keep].T * scale).astype(np.float32))
