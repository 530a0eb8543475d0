"""How a training sample's documents reach the decoder: each as text or as soft tokens at a rate, in order.

A layout is a list of (document index, rate or None for text, tokens kept or None for all) in reading order.
The paper's KEFT sends every document at the sample's rate; the uncompressed baseline sends them all as text;
a mixed reader (recipe `budgets`) learns from the layouts the budget planner (`gmsa.plan`) gives at inference,
within a budget drawn per sample; for a share of the samples (`random_layouts`) from random forms, so the
gold document is not always the one sent whole; and for another share (`text_layouts`) as text only within the
budget (what `rerank-text` sends), so the reader keeps reading several whole documents. Every draw is a
function of (seed, step): a resumed run draws the same ones.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from gmsa.compress.compressor import Parts, soft_tokens_at_rates
from gmsa.errors import ConfigError
from gmsa.plan import plan, text_only
from gmsa.training.samples import Sample

Layout = list[tuple[int, int | None, int | None]]


def uniform_layouts(samples: Sequence[Sample], rates: Sequence[int] | None) -> list[Layout]:
    """Every document of sample i at rates[i], in order (None: every document as text)."""
    if rates is None:
        return [[(d, None, None) for d in range(len(s.contexts))] for s in samples]
    return [[(d, rate, None) for d in range(len(s.contexts))] for s, rate in zip(samples, rates)]


def mixed_layouts(samples: Sequence[Sample], model_rates: Sequence[int], budgets: Sequence[float],
                  random_share: float, seed: int, step: int, text_share: float = 0.0) -> list[Layout]:
    """Per sample: with probability `random_share` each document's form drawn at random, with probability
    `text_share` text only within a budget drawn from `budgets` (fractions of its documents' tokens), else the
    planner's layout within such a budget; in all, the documents read by relevance, the most relevant last (as
    the planner sends them at inference)."""
    generator = random.Random(seed * 1_000_033 + step)
    layouts = []
    for sample in samples:
        tokens = [len(ids) for ids in sample.contexts]
        relevance = sample.relevance or [float(len(tokens) - d) for d in range(len(tokens))]
        ranked = sorted(range(len(tokens)), key=lambda d: (-relevance[d], d))  # most relevant first
        draw = generator.random()
        if draw < random_share:
            forms = [None, *model_rates]
            layouts.append([(d, generator.choice(forms), None) for d in reversed(ranked) if tokens[d]])
        elif draw < random_share + text_share:
            chosen = text_only(tokens, relevance, generator.choice(list(budgets)))
            layouts.append([(d, None, None if kept == tokens[d] else kept) for d, kept in chosen])
        else:
            layouts.append(_planned_layout(tokens, relevance, ranked, generator.choice(list(budgets)), model_rates))
    return layouts


def _planned_layout(tokens: Sequence[int], relevance: Sequence[float], ranked: Sequence[int], budget: float,
                    model_rates: Sequence[int]) -> Layout:
    """The budget planner's layout; a budget too small for any document: every one at the highest rate."""
    try:
        chosen = plan(tokens, relevance, budget, model_rates)
    except ConfigError:
        return [(d, max(model_rates), None) for d in reversed(ranked) if tokens[d]]
    return [(p.index, p.rate, p.kept) for p in chosen.sent]


def layout_contexts(model: Parts, samples: Sequence[Sample], layouts: Sequence[Layout]) -> list[list[torch.Tensor]]:
    """Each sample's contexts in its layout's order: token ids (n,) for text, soft tokens (m, H) otherwise,
    every soft one from one encoder pass whatever its rate; gradients flow when enabled."""
    wanted = [(s, d, rate) for s, layout in enumerate(layouts) for d, rate, _ in layout if rate is not None]
    compressed = soft_tokens_at_rates(model, [samples[s].contexts[d] for s, d, _ in wanted],
                                      [[rate] for _, _, rate in wanted])
    soft = {(s, d): out[rate] for (s, d, rate), out in zip(wanted, compressed)}
    return [[soft[(s, d)] if rate is not None else torch.tensor(samples[s].contexts[d][:kept], dtype=torch.long)
             for d, rate, kept in layout] for s, layout in enumerate(layouts)]
