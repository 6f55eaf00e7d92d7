"""The one small interface every embedding backend implements."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
from PIL import Image


def cpu_threads() -> int:
    """Threads a model runtime should use in this process: OMP_NUM_THREADS where it is set (Dask's nanny sets 1
    in every worker, and a job scheduler sets the cores it gave), else the CPUs this process may use: its
    affinity and its cgroup's CPU quota (joblib's count), not the host's CPU count, which a container with a
    2-CPU quota on a 64-core host would report. ONNX Runtime reads neither itself, and its spinning pool with
    one thread per host CPU in each of several workers starves them all."""
    hint = os.environ.get("OMP_NUM_THREADS", "").strip()
    if hint.isdigit() and int(hint) > 0:
        return int(hint)
    import joblib

    return max(1, joblib.cpu_count())


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class ImageEmbedder(ABC):
    """`preprocess` runs in decode threads (PIL -> array); `embed` runs the model on a batch of them.

    Float backends return L2-normalised float32 rows (stored as float16); binary backends (`kind == "bits"`)
    return packed bits as uint8 rows.
    """

    spec: str
    dim: int
    kind: str = "float"  # or "bits"
    draft_size: tuple[int, int] | None = None  # JPEG draft target for the decoder

    @abstractmethod
    def preprocess(self, img: Image.Image) -> Any:  # noqa: ANN401 (an array or a small image)
        ...

    @abstractmethod
    def embed_batch(self, batch: list[Any]) -> np.ndarray:
        """Embed preprocessed items that share a shape."""

    def embed(self, items: list[Any]) -> np.ndarray:
        """Embed preprocessed items; items of different shapes (e.g. short-edge resizing) run in groups."""
        if not items:
            return np.zeros((0, self.dim if self.kind == "float" else self.dim // 8),
                            dtype=np.float32 if self.kind == "float" else np.uint8)
        shapes = [getattr(x, "shape", None) for x in items]
        if len(set(shapes)) == 1:
            return self.embed_batch(items)
        out: np.ndarray | None = None
        for shape in dict.fromkeys(shapes):
            idx = [i for i, s in enumerate(shapes) if s == shape]
            part = self.embed_batch([items[i] for i in idx])
            if out is None:
                out = np.zeros((len(items), part.shape[1]), dtype=part.dtype)
            out[idx] = part
        assert out is not None
        return out

    def warmup(self, batch_size: int) -> None:
        """Run one batch of the expected size so the first shard does not pay for allocator/arena growth."""
        return None

    def describe(self) -> dict[str, Any]:
        """What the manifest records about this model and its preprocessing."""
        return {"model": self.spec, "dim": self.dim, "kind": self.kind}


class TextEmbedder(ABC):
    spec: str
    dim: int

    @abstractmethod
    def embed_text(self, texts: list[str]) -> np.ndarray:
        """L2-normalised float32 rows."""

    def describe(self) -> dict[str, Any]:
        return {"text_model": self.spec, "text_dim": self.dim}
