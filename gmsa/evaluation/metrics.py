"""QA metrics (SQuAD-style) and reconstruction metrics, max over reference answers where there are several."""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation and articles, squeeze whitespace (the SQuAD normalisation)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, references: Sequence[str]) -> float:
    return max((float(normalize_answer(prediction) == normalize_answer(ref)) for ref in references), default=0.0)


def token_f1(prediction: str, references: Sequence[str]) -> float:
    def f1(pred: str, ref: str) -> float:
        pred_tokens, ref_tokens = normalize_answer(pred).split(), normalize_answer(ref).split()
        common = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
        if common == 0:
            return 0.0
        precision, recall = common / len(pred_tokens), common / len(ref_tokens)
        return 2 * precision * recall / (precision + recall)

    return max((f1(prediction, ref) for ref in references), default=0.0)


def accuracy(prediction: str, references: Sequence[str]) -> float:
    """1 when a normalised reference answer appears in the normalised prediction."""
    normalized = f" {normalize_answer(prediction)} "
    return max((float(f" {normalize_answer(ref)} " in normalized) for ref in references if ref.strip()), default=0.0)


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu4(prediction: str, reference: str) -> float:
    """Sentence BLEU-4 with uniform weights, brevity penalty and +1 smoothing of higher orders (Lin & Och)."""
    pred, ref = prediction.split(), reference.split()
    if not pred or not ref:
        return 0.0
    log_precision = 0.0
    for n in range(1, 5):
        overlap = sum((_ngrams(pred, n) & _ngrams(ref, n)).values())
        total = max(len(pred) - n + 1, 0)
        if n == 1:
            if overlap == 0:
                return 0.0
            log_precision += math.log(overlap / total)
        else:
            log_precision += math.log((overlap + 1) / (total + 1))
    brevity = 1.0 if len(pred) > len(ref) else math.exp(1 - len(ref) / len(pred))
    return brevity * math.exp(log_precision / 4)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure over whitespace tokens."""
    pred, ref = prediction.split(), reference.split()
    if not pred or not ref:
        return 0.0
    previous = [0] * (len(ref) + 1)
    for token in pred:
        current = [0]
        for j, ref_token in enumerate(ref, start=1):
            current.append(previous[j - 1] + 1 if token == ref_token else max(previous[j], current[j - 1]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def prefix_exact_match(prediction: str, reference: str) -> float:
    """Share of the reference's tokens reproduced exactly from the start before the first difference."""
    pred, ref = prediction.split(), reference.split()
    matched = 0
    for p, r in zip(pred, ref):
        if p != r:
            break
        matched += 1
    return matched / len(ref) if ref else 0.0
