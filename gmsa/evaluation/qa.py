"""QA quality of GMSA at each rate, beside the uncompressed prompt, closed-book and plain text cut to GMSA's
budget (`gmsa.evaluation.token_budget`), on the same questions."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

from gmsa.answering import planned_contexts
from gmsa.data import QAExample, keep_documents
from gmsa.evaluation.metrics import accuracy, exact_match, token_f1
from gmsa.evaluation.token_budget import SHORTENINGS, rerank_text, shorten_documents
from gmsa.model import GMSA
from gmsa.similarity import embedder_device, most_relevant, relevances

EXTRACTIVE = "+extractive"


BUDGETED = ("budget", "rerank-text")


@dataclass(frozen=True)
class System:
    """How the decoder sees the documents: "gmsa" at `rate`, "uncompressed" text, "closed-book" (none),
    text cut to GMSA's budget at `rate` ("truncated", "selective": `gmsa.evaluation.token_budget`), or
    within a `fraction` of the documents' tokens: "budget" (the planner, `gmsa.plan`: the most relevant
    whole, the rest as soft tokens) or "rerank-text" (text only: the most relevant whole until the budget,
    the last one cut); `extractive`: every answer must quote the documents (`gmsa.decode.extractive`)."""

    kind: str
    rate: int | None = None
    extractive: bool = False
    fraction: float | None = None

    @property
    def name(self) -> str:
        at = self.rate if self.rate is not None else self.fraction
        name = f"{self.kind}@{at:g}" if at is not None else self.kind
        return f"{name}{EXTRACTIVE}" if self.extractive else name

    @classmethod
    def parse(cls, text: str) -> System:
        """"gmsa@8", "uncompressed", "closed-book", "truncated@8", "selective@8", "budget@0.25" or
        "rerank-text@0.25"; each but closed-book optionally with "+extractive" ("gmsa@8+extractive")."""
        body, extractive = (text[: -len(EXTRACTIVE)], True) if text.endswith(EXTRACTIVE) else (text, False)
        kind, _, rate = body.partition("@")
        if kind in ("gmsa", *SHORTENINGS) and rate.isdigit() and int(rate) >= 1:
            return cls(kind, int(rate), extractive)
        if kind in BUDGETED and _fraction(rate) is not None:
            return cls(kind, None, extractive, _fraction(rate))
        if kind == "uncompressed" and not rate or kind == "closed-book" and not rate and not extractive:
            return cls(kind, None, extractive)
        raise ValueError(f"system {text!r} is invalid: gmsa@RATE, uncompressed, closed-book, truncated@RATE, "
                         f"selective@RATE, budget@FRACTION or rerank-text@FRACTION (a fraction in (0, 1]), all but "
                         f"closed-book optionally with {EXTRACTIVE!r} (answers that quote the documents)")


def _fraction(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0 < value <= 1 else None


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
            max_new_tokens: int = 32, rerank: int | None = None,
            order: str = "last") -> tuple[list[str], float, float]:
    """Answers to every question under `system`, the mean seconds per question (reranking and shortening
    included) and the mean decoder positions its documents took per question (soft or plain tokens)."""
    answers: list[str] = []
    positions = 0
    device = embedder_device(model.device)
    start = time.perf_counter()
    for first in tqdm(range(0, len(examples), batch_size), desc=system.name, leave=False):
        chunk = examples[first:first + batch_size]
        docs = [select_documents(e, documents, rerank, device, order) for e in chunk]
        if system.kind == "gmsa":
            contexts = [model.compress(d, system.rate) for d in docs]
            positions += sum(int(soft.shape[0]) for context in contexts for soft in context)
        elif system.kind in BUDGETED:
            scores = relevances([e.question for e in chunk], docs, device)
            if system.kind == "budget":
                plans = [model.plan(e.question, d, system.fraction, s) for e, d, s in zip(chunk, docs, scores)]
                contexts = [planned_contexts(model, d, p) for d, p in zip(docs, plans)]
                positions += sum(p.positions for p in plans)
            else:
                contexts = [rerank_text(model, d, s, system.fraction) for d, s in zip(docs, scores)]
                positions += sum(len(ids) for context in contexts for ids in model.tokenize_contexts(context))
        else:
            if system.kind in SHORTENINGS:
                contexts = [shorten_documents(model, d, system.rate, system.kind) for d in docs]
            else:
                contexts = docs if system.kind == "uncompressed" else [[] for _ in chunk]
            positions += sum(len(ids) for context in contexts for ids in model.tokenize_contexts(context))
        quote_from = docs if system.extractive else None  # quotes of the whole documents, as the others
        answers.extend(model.answer_questions([e.question for e in chunk], contexts, quote_from=quote_from,
                                              max_new_tokens=max_new_tokens))
    count = max(len(examples), 1)
    return answers, (time.perf_counter() - start) / count, positions / count


METRICS = {"em": exact_match, "f1": token_f1, "accuracy": accuracy}


def evaluate_qa(model: GMSA, examples: Sequence[QAExample], systems: Sequence[System], documents: int,
                batch_size: int = 4, max_new_tokens: int = 32, rerank: int | None = None,
                rerank_order: str = "last") -> dict:
    """{"systems": {name: {em, f1, accuracy, seconds_per_question, document_positions_per_question}},
    "examples": first answers,
    "per_question": {"where": [file:line, ...], name: {"answer": [...], "em": [...], "f1": [...], "accuracy": [...]}}}.

    The per-question scores let `gmsa-eval compare` pair two runs question by question.
    """
    check_rerank(rerank, documents)
    results: dict = {"questions": len(examples), "documents": documents, "rerank": rerank,
                     "rerank_order": rerank_order if rerank else None, "systems": {}, "examples": [],
                     "per_question": {"where": [e.where for e in examples]}}
    for system in systems:
        answers, seconds, positions = predict(model, system, examples, documents, batch_size, max_new_tokens,
                                              rerank, rerank_order)
        scores = {name: [metric(a, e.answers) for a, e in zip(answers, examples)] for name, metric in METRICS.items()}
        results["systems"][system.name] = {name: sum(values) / len(examples) for name, values in scores.items()}
        results["systems"][system.name]["seconds_per_question"] = seconds
        results["systems"][system.name]["document_positions_per_question"] = positions
        results["per_question"][system.name] = {"answer": answers, **scores}
        results["examples"].extend(
            {"system": system.name, "question": e.question, "answer": a, "references": e.answers}
            for a, e in list(zip(answers, examples))[:3]
        )
    return results
