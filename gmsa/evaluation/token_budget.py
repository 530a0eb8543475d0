"""Plain-text baselines at GMSA's budget: each document shortened to as many tokens as GMSA gives it soft tokens.

At rate r GMSA turns a document of n tokens into ceil(n / r) soft tokens. The same number of plain tokens can be
kept instead, which is what token-deleting compressors do:
- "truncated": the document's first ceil(n / r) tokens;
- "selective": the ceil(n / r) tokens the base model (no adapter) finds least predictable, in their order. High
  self-information is what Selective Context and LLMLingua keep; this is their idea at the token level, with the
  decoder's own base model as the scorer, not a copy of either.
And text only at a budget planner's budget: "rerank-text" (`rerank_text`), the most relevant documents whole.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from gmsa.backbone.adapters import use_adapter
from gmsa.compress.segment import right_pad
from gmsa.model import GMSA
from gmsa.plan import text_only

SHORTENINGS = ("truncated", "selective")


def token_budget(tokens: int, rate: int) -> int:
    """How many soft tokens GMSA gives `tokens` tokens at `rate` (segments are multiples of every rate)."""
    return math.ceil(tokens / rate)


@torch.no_grad()
def surprisal(model: GMSA, token_ids: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """-log p(token | the tokens before it) under the base model without adapters, one (n_i,) tensor per list.

    A document's first token is scored after the tokenizer's BOS token, or kept (infinite surprisal) without one.
    """
    bos = model.tokenizer.bos_token_id
    scores: list[torch.Tensor] = [torch.zeros(0) for _ in token_ids]
    rows = [i for i, ids in enumerate(token_ids) if ids]
    if not rows:
        return scores
    prefix = [bos] if bos is not None else []
    with model.lock, use_adapter(model.base, None):
        ids, mask = right_pad([prefix + list(token_ids[i]) for i in rows], model.tokenizer.pad_token_id,
                              model.device)  # (B, 1 + T)
        logits = model.base(input_ids=ids, attention_mask=mask).logits.float()  # (B, 1 + T) -> (B, 1 + T, V)
    log_probs = torch.log_softmax(logits[:, :-1], dim=-1)  # (B, T, V): position t predicts token t + 1
    predicted = -log_probs.gather(-1, ids[:, 1:, None])[..., 0]  # (B, T, V) -> (B, T)
    for row, index in enumerate(rows):
        n = len(token_ids[index])
        if bos is None:  # no BOS: token 0 has no prediction, the rest shift by one
            scores[index] = torch.cat([torch.tensor([math.inf]), predicted[row, : n - 1].cpu()])
        else:
            scores[index] = predicted[row, :n].cpu()
    return scores


def keep_most_surprising(scores: torch.Tensor, keep: int) -> list[int]:
    """Positions of the `keep` highest scores, in document order (ties: the earlier position)."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:keep])


def shorten_documents(model: GMSA, texts: Sequence[str], rate: int, how: str) -> list[str]:
    """Each text cut to token_budget(n, rate) of its tokens, `how` in SHORTENINGS, decoded back to text."""
    if how not in SHORTENINGS:
        raise ValueError(f"how={how!r} is invalid: one of {SHORTENINGS}")
    if rate < 1:
        raise ValueError(f"rate={rate} is invalid: it must be >= 1")
    token_ids = model.tokenize_contexts(list(texts))
    if how == "truncated":
        kept = [ids[: token_budget(len(ids), rate)] for ids in token_ids]
    else:
        kept = [[ids[i] for i in keep_most_surprising(scores, token_budget(len(ids), rate))]
                for ids, scores in zip(token_ids, surprisal(model, token_ids))]
    return [model.tokenizer.decode(ids) for ids in kept]


def rerank_text(model: GMSA, texts: Sequence[str], relevance: Sequence[float], fraction: float) -> list[str]:
    """Text only within ceil(fraction * their tokens) positions: the most relevant texts whole until the budget,
    the next one cut to what is left; in reading order, the most relevant last (as the planner sends them)."""
    token_ids = model.tokenize_contexts(list(texts))
    chosen = text_only([len(ids) for ids in token_ids], relevance, fraction)  # most relevant last
    return [texts[i] if kept == len(token_ids[i]) else model.tokenizer.decode(token_ids[i][:kept])
            for i, kept in chosen]
