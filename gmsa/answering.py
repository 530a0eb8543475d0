"""Answering a question over documents: relevance, a budget plan (or one fixed rate), compression in one
encoder pass, and the QA prompt the decoder was trained on. `GMSA.plan` and `GMSA.answer` call these."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import torch

from gmsa.answer import Answer
from gmsa.compress.compressor import Parts, soft_tokens_at_rates
from gmsa.config import GenerationSettings
from gmsa.decode.prompt import Context
from gmsa.errors import ConfigError
from gmsa.plan import Budget, Plan, plan

Relevance = Sequence[float] | Callable[[str, list[str]], Sequence[float]] | str | None
"""How relevant each document is to the question (higher: more): None, the bundled all-MiniLM-L6-v2; "order",
the given order (first: most relevant, as retrievers return them); scores, one per document (a retriever's);
or a callable (question, documents) -> scores."""

DEFAULT_BUDGET: Budget = "auto"
"""The budget `answer` uses when given neither a budget nor a rate."""


class Answering(Parts, Protocol):
    """What answering reads of a model (`gmsa.model.GMSA` has it all)."""

    lock: object

    def answer_questions(self, questions: Sequence[str], contexts: Sequence[Sequence[Context]],
                         settings: GenerationSettings | None = None,
                         quote_from: Sequence[Sequence[str]] | None = None, **overrides) -> list[str]: ...

    def tokenize_contexts(self, texts: Sequence[str]) -> list[list[int]]: ...

    def compress(self, texts: Sequence[str], rate: int | None = None) -> list[torch.Tensor]: ...


def _check_question(question: object) -> None:
    if not isinstance(question, str) or not question.strip():
        raise ConfigError(f"question={question!r:.80} is invalid: a non-empty string")
    if question.encode("utf-8", errors="replace").decode("utf-8") != question:
        raise ConfigError(f"question={question!r:.80} is invalid: not valid Unicode (a lone surrogate)")


def _documents(documents: object) -> list[str]:
    """The documents as a list (of texts: `tokenize_contexts` checks each); one string or a mapping is refused."""
    if isinstance(documents, (str, bytes, dict)) or not isinstance(documents, Iterable):
        raise ConfigError(f"documents must be a list of texts, not {type(documents).__name__} (wrap one text in a "
                          "list)")
    return list(documents)


def relevance_scores(model: Answering, question: str, documents: list[str], relevance: Relevance) -> list[float]:
    """One finite score per document (see `Relevance`)."""
    if relevance is None:
        from gmsa.similarity import embedder_device
        from gmsa.similarity import relevance as minilm

        return minilm(question, documents, embedder_device(model.device)) if documents else []
    if relevance == "order":
        return [float(len(documents) - i) for i in range(len(documents))]
    if isinstance(relevance, str):
        raise ConfigError(f"relevance={relevance!r} is invalid: None (MiniLM), 'order', scores or a callable")
    given = relevance(question, documents) if callable(relevance) else relevance
    scores = list(given) if isinstance(given, Iterable) and not isinstance(given, (str, bytes)) else None
    if scores is None or len(scores) != len(documents) or not all(map(_finite, scores)):
        raise ConfigError(f"relevance gave {given!r:.120} for {len(documents)} documents: one finite number each")
    return [float(s) for s in scores]


def _finite(score: object) -> bool:
    try:
        return isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score)
    except OverflowError:  # an int too large for a float
        return False


def plan_for(model: Answering, question: str, documents: Sequence[str], budget: Budget = DEFAULT_BUDGET,
             relevance: Relevance = None) -> Plan:
    """Each document whole, as soft tokens at one of the model's rates, or dropped, within `budget` (`gmsa.plan`)."""
    _check_question(question)
    documents = _documents(documents)
    tokens = [len(ids) for ids in model.tokenize_contexts(documents)]
    return plan(tokens, relevance_scores(model, question, documents, relevance), budget, model.config.rates)


@torch.no_grad()
def planned_contexts(model: Answering, documents: Sequence[str], chosen: Plan) -> list[Context]:
    """The plan's documents in reading order: whole text as it is, a prefix as its first token ids (n,), the
    others soft tokens (m, H), compressed in one encoder pass."""
    soft = [p for p in chosen.sent if p.form == "soft"]
    contexts: dict[int, Context] = {}
    with model.lock:
        compressed = soft_tokens_at_rates(model, model.tokenize_contexts([documents[p.index] for p in soft]),
                                          [[p.rate] for p in soft])
    contexts.update({p.index: out[p.rate] for p, out in zip(soft, compressed)})
    for p in chosen.sent:
        if p.form == "text":
            contexts[p.index] = documents[p.index]
        elif p.form == "prefix":
            ids = model.tokenize_contexts([documents[p.index]])[0][: p.kept]
            contexts[p.index] = torch.tensor(ids, dtype=torch.long, device=model.device)  # (kept,) token ids
    return [contexts[p.index] for p in chosen.sent]


def answer(model: Answering, question: str, documents: Sequence[str], rate: int | None = None,
           budget: Budget | None = None, relevance: Relevance = None, settings: GenerationSettings | None = None,
           extractive: bool = False, **overrides) -> Answer:
    """Answer `question` over `documents`: at one fixed `rate` (every document compressed, in the given order),
    or within a `budget` (`gmsa.plan`; the default when neither is given). `extractive`: the answer quotes
    the documents (`gmsa.decode.extractive`)."""
    _check_question(question)
    documents = _documents(documents)
    if rate is not None and budget is not None:
        raise ConfigError(f"pass a rate ({rate}) or a budget ({budget!r}), not both")
    start = time.perf_counter()
    chosen = None
    if rate is not None:
        contexts = model.compress(documents, rate) if documents else []
    else:
        chosen = plan_for(model, question, documents, DEFAULT_BUDGET if budget is None else budget, relevance)
        contexts = planned_contexts(model, documents, chosen)
    compressed = time.perf_counter()
    quotes = [documents] if extractive else None
    text = model.answer_questions([question], [contexts], settings, quotes, **overrides)[0]
    done = time.perf_counter()
    tokens = sum(map(len, model.tokenize_contexts(documents)))
    soft_count = sum(int(c.shape[0]) for c in contexts if isinstance(c, torch.Tensor) and c.is_floating_point())
    return Answer(text=text, rate=rate, context_tokens=tokens, soft_tokens=soft_count,
                  compress_seconds=compressed - start, generate_seconds=done - compressed,
                  text_tokens=chosen.text_tokens if chosen else 0, plan=chosen)
