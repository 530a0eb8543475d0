"""QA quality of GMSA at each rate, beside the uncompressed prompt and closed-book, on the same questions."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

from gmsa.data import QAExample, keep_documents
from gmsa.evaluation.metrics import accuracy, exact_match, token_f1
from gmsa.model import GMSA
from gmsa.similarity import embedder_device, most_relevant

EXTRACTIVE = "+extractive"


@dataclass(frozen=True)
class System:
    """How the decoder sees the documents: "gmsa" at `rate`, "uncompressed" text, or "closed-book" (none);
    `extractive`: every answer must quote the documents (`gmsa.extractive`)."""

    kind: str
    rate: int | None = None
    extractive: bool = False

    @property
    def name(self) -> str:
        name = f"gmsa@{self.rate}" if self.kind == "gmsa" else self.kind
        return f"{name}{EXTRACTIVE}" if self.extractive else name

    @classmethod
    def parse(cls, text: str) -> System:
        """"gmsa@8", "uncompressed" or "closed-book"; "gmsa@8+extractive" or "uncompressed+extractive"."""
        body, extractive = (text[: -len(EXTRACTIVE)], True) if text.endswith(EXTRACTIVE) else (text, False)
        kind, _, rate = body.partition("@")
        if kind == "gmsa" and rate.isdigit():
            return cls("gmsa", int(rate), extractive)
        if kind == "uncompressed" and not rate or kind == "closed-book" and not rate and not extractive:
            return cls(kind, None, extractive)
        raise ValueError(f"system {text!r} is invalid: gmsa@RATE, uncompressed or closed-book, the first two "
                         f"optionally with {EXTRACTIVE!r} (answers that quote the documents)")


def check_rerank(rerank: int | None, documents: int) -> None:
    if rerank is not None and not 1 <= rerank <= documents:
        raise ValueError(f"rerank={rerank} is invalid: keep between 1 and documents={documents} documents")


def select_documents(example: QAExample, documents: int, rerank: int | None, device: str | None,
                     order: str = "last") -> list[str]:
    """The example's first `documents` (gold kept); with `rerank`, only the `rerank` of them most similar to the
    question in MiniLM space, the most relevant `order` ("last": next to the question)."""
    kept = keep_documents(example, documents)
    return most_relevant([example.question], [kept], rerank, device, order)[0] if rerank else kept


def predict(model: GMSA, system: System, examples: Sequence[QAExample], documents: int, batch_size: int = 4,
            max_new_tokens: int = 32, rerank: int | None = None, order: str = "last") -> tuple[list[str], float]:
    """Answers to every question under `system`, and the mean seconds per question (reranking included)."""
    answers: list[str] = []
    device = embedder_device(model.device)
    start = time.perf_counter()
    for first in tqdm(range(0, len(examples), batch_size), desc=system.name, leave=False):
        chunk = examples[first:first + batch_size]
        docs = [select_documents(e, documents, rerank, device, order) for e in chunk]
        if system.kind == "gmsa":
            contexts = [model.compress(d, system.rate) for d in docs]
        elif system.kind == "uncompressed":
            contexts = docs
        else:
            contexts = [[] for _ in chunk]
        quote_from = docs if system.extractive else None
        answers.extend(model.answer_questions([e.question for e in chunk], contexts, quote_from=quote_from,
                                              max_new_tokens=max_new_tokens))
    return answers, (time.perf_counter() - start) / max(len(examples), 1)


METRICS = {"em": exact_match, "f1": token_f1, "accuracy": accuracy}


def evaluate_qa(model: GMSA, examples: Sequence[QAExample], systems: Sequence[System], documents: int,
                batch_size: int = 4, max_new_tokens: int = 32, rerank: int | None = None,
                rerank_order: str = "last") -> dict:
    """{"systems": {name: {em, f1, accuracy, seconds_per_question}}, "examples": first answers,
    "per_question": {"where": [file:line, ...], name: {"answer": [...], "em": [...], "f1": [...], "accuracy": [...]}}}.

    The per-question scores let `gmsa-eval compare` pair two runs question by question.
    """
    check_rerank(rerank, documents)
    results: dict = {"questions": len(examples), "documents": documents, "rerank": rerank,
                     "rerank_order": rerank_order if rerank else None, "systems": {}, "examples": [],
                     "per_question": {"where": [e.where for e in examples]}}
    for system in systems:
        answers, seconds = predict(model, system, examples, documents, batch_size, max_new_tokens, rerank,
                                   rerank_order)
        scores = {name: [metric(a, e.answers) for a, e in zip(answers, examples)] for name, metric in METRICS.items()}
        results["systems"][system.name] = {name: sum(values) / len(examples) for name, values in scores.items()}
        results["systems"][system.name]["seconds_per_question"] = seconds
        results["per_question"][system.name] = {"answer": answers, **scores}
        results["examples"].extend(
            {"system": system.name, "question": e.question, "answer": a, "references": e.answers}
            for a, e in list(zip(answers, examples))[:3]
        )
    return results
