"""Reconstruction quality: how much of a text survives compress -> reconstruct, per rate."""

from __future__ import annotations

from collections.abc import Sequence

from tqdm.auto import tqdm

from gmsa.evaluation.metrics import bleu4, prefix_exact_match, rouge_l
from gmsa.model import GMSA


def restate(model: GMSA, texts: Sequence[str], rate: int, batch_size: int = 8) -> list[str]:
    """reconstruct(compress(text)) for each text, in batches."""
    outputs: list[str] = []
    for start in tqdm(range(0, len(texts), batch_size), desc=f"reconstruct r{rate}", leave=False):
        chunk = list(texts[start:start + batch_size])
        lengths = [len(ids) for ids in model.tokenize_contexts(chunk)]
        soft = model.compress(chunk, rate)
        # Room for the longest text plus a little; an untrained model would otherwise ramble on.
        outputs.extend(model.reconstruct(soft, max_new_tokens=max(lengths) + 16))
    return outputs


def score_reconstruction(predictions: Sequence[str], references: Sequence[str], semantic: bool = True) -> dict:
    """Mean BLEU-4, ROUGE-L, prefix exact match and (optionally) MiniLM cosine similarity."""
    count = len(references)
    scores = {
        "bleu4": sum(map(bleu4, predictions, references)) / count,
        "rouge_l": sum(map(rouge_l, predictions, references)) / count,
        "prefix_em": sum(map(prefix_exact_match, predictions, references)) / count,
    }
    if semantic:
        from gmsa.similarity import cosine_similarities

        scores["similarity"] = sum(cosine_similarities(list(predictions), list(references))) / count
    return scores


def evaluate_reconstruction(
    model: GMSA, texts: Sequence[str], rates: Sequence[int], semantic: bool = True, batch_size: int = 8
) -> dict:
    """{"rates": {rate: scores}, "examples": [...]} over `texts` (keep them out of the training data)."""
    results: dict = {"texts": len(texts), "rates": {}, "examples": []}
    for rate in rates:
        predictions = restate(model, texts, rate, batch_size)
        results["rates"][str(rate)] = score_reconstruction(predictions, texts, semantic)
        results["examples"].append({"rate": rate, "text": texts[0], "restated": predictions[0]})
    return results
