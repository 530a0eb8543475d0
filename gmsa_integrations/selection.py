"""What a compressor (LangChain) or node postprocessor (LlamaIndex) hands on for a query: the retrieved texts
ranked and filtered, then either planned within a budget (the most relevant whole, the rest as soft tokens at
rates that follow relevance, `gmsa.plan`) or all compressed at one fixed rate; soft ones marked for GMSA."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from gmsa.answering import DEFAULT_BUDGET
from gmsa.errors import ConfigError
from gmsa.plan import Budget, plan
from gmsa_integrations.markup import MarkedDocument, mark_document, split_marked
from gmsa_integrations.runtime import GMSARuntime

RELEVANCE = ("minilm", "retriever", "order")
"""Where relevance comes from: the bundled all-MiniLM-L6-v2, the retriever's scores, or the given order."""

METADATA_KEYS = ("gmsa_form", "gmsa_rate", "gmsa_tokens", "gmsa_soft_tokens", "gmsa_positions", "gmsa_relevance")
"""Metadata the compressors add (strings and numbers only, so documents stay serialisable): how the text is
sent ("text", "prefix": its first tokens, or "soft"), its rate (0 as text), its tokens as text, its soft
tokens, the decoder positions it takes, and its relevance when ranked."""


@dataclass
class CompressedText:
    """One selected input: where it came from, its (marked) text, its metadata."""

    index: int
    text: str
    metadata: dict[str, int | float | str]


def _plain(text: str) -> str:
    """A text that is already a marked document (compressed twice) is compressed from its content."""
    pieces = split_marked(text)
    return pieces[0].text if len(pieces) == 1 and isinstance(pieces[0], MarkedDocument) else text


def _scores(runtime: GMSARuntime, query: str, texts: list[str], relevance: str,
            given: Sequence[float | None] | None) -> list[float]:
    if relevance == "minilm":
        return runtime.rank(query, texts)
    if relevance == "order":
        return [float(len(texts) - i) for i in range(len(texts))]
    if given is None or not all(isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s)
                                for s in given):
        raise ConfigError(f"relevance='retriever' needs a finite number as the score of every retrieved document or "
                          f"node (LangChain: metadata['relevance_score']; LlamaIndex: NodeWithScore.score), got "
                          f"{list(given or [])!r:.80}")
    return [float(score) for score in given]


def select_for_query(
    runtime: GMSARuntime,
    texts: Sequence[str],
    query: str,
    rate: int | None = None,
    budget: Budget | None = None,
    top_n: int | None = None,
    score_threshold: float | None = None,
    reorder: bool | str = False,
    relevance: str = "minilm",
    scores: Sequence[float | None] | None = None,
) -> list[CompressedText]:
    """With `rate`: every text compressed at that rate, in the given order (or ranked: `reorder` True/"first"
    puts the most relevant first, "last" last, next to the question). Otherwise within `budget` (default
    "auto"): the plan's texts in reading order, the most relevant last; dropped texts are left out, as a
    filter leaves them. `top_n` / `score_threshold` filter by relevance first."""
    if rate is not None and budget is not None:
        raise ConfigError(f"pass a rate ({rate}) or a budget ({budget!r}), not both")
    if reorder not in (False, True, "first", "last"):
        raise ConfigError(f"reorder={reorder!r} is invalid: False, True / 'first' (most relevant first) or 'last'")
    if relevance not in RELEVANCE:
        raise ConfigError(f"relevance={relevance!r} is invalid: one of {RELEVANCE}")
    plain = [_plain(text) for text in texts]
    order = list(range(len(plain)))
    ranked = rate is None or top_n is not None or score_threshold is not None or reorder
    relevances = _scores(runtime, query, plain, relevance, scores) if plain and ranked else [None] * len(plain)
    if ranked and plain:
        order.sort(key=lambda i: -relevances[i])
        order = [i for i in order if score_threshold is None or relevances[i] >= score_threshold][:top_n]
        if rate is not None and not reorder:
            order.sort()
        elif rate is not None and reorder == "last":
            order.reverse()
    counts = dict(zip(order, runtime.count_tokens([plain[i] for i in order])))
    if rate is None:
        kept = [i for i in order if counts[i]]
        chosen = plan([counts[i] for i in kept], [relevances[i] for i in kept],
                      DEFAULT_BUDGET if budget is None else budget, runtime.model.config.rates)
        forms = [(kept[p.index], p.rate if p.form == "soft" else None) for p in chosen.sent]
        prefixes = {kept[p.index]: p.kept for p in chosen.sent if p.form == "prefix"}
    else:
        rate = runtime.check_rate(rate)
        forms, prefixes = [(i, rate if counts[i] else None) for i in order], {}
    soft = dict(zip([i for i, r in forms if r], runtime.compress_many([(plain[i], r) for i, r in forms if r])))
    results = []
    for i, form_rate in forms:
        form = "soft" if form_rate else "prefix" if i in prefixes else "text"
        metadata: dict[str, int | float | str] = {
            "gmsa_form": form, "gmsa_rate": form_rate or 0, "gmsa_tokens": counts[i],
            "gmsa_soft_tokens": int(soft[i].shape[0]) if form_rate else 0}
        metadata["gmsa_positions"] = metadata["gmsa_soft_tokens"] if form_rate else prefixes.get(i, counts[i])
        if relevances[i] is not None:
            metadata["gmsa_relevance"] = float(relevances[i])
        text = mark_document(plain[i], form_rate) if form_rate else plain[i]
        if form == "prefix":  # the first tokens of a document longer than the whole budget, as text
            text = runtime.model.tokenizer.decode(runtime.model.tokenize_contexts([plain[i]])[0][: prefixes[i]])
        results.append(CompressedText(i, text, metadata))
    return results
