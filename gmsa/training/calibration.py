"""The AE stage's data-dependent start: fit the LSA's maps to real encoder states before the first step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from gmsa.backbone.layers import decoder_core
from gmsa.compress.encode import encode
from gmsa.compress.merge import group_merge
from gmsa.compress.segment import pad_rows, right_pad

if TYPE_CHECKING:
    from gmsa.model import GMSA


@torch.no_grad()
def calibrate_alignment(model: GMSA, token_ids: Sequence[Sequence[int]], batch_size: int = 32) -> None:
    """Fit the LSA's data-dependent maps on real texts: the affine maps at every configured rate, and a
    "readout" on rate-1 states (each token's soft token towards its own embedding).

    The AE stage runs this once before its first step (a data-dependent initialisation);
    each text is read up to `config.segment_tokens` tokens.
    """
    config = model.config
    texts = [list(ids[: config.segment_tokens]) for ids in token_ids if ids]
    if not texts:
        raise ValueError("calibrate_alignment needs at least one non-empty text")
    batches = [right_pad(texts[i:i + batch_size], model.tokenizer.pad_token_id, model.device)
               for i in range(0, len(texts), batch_size)]
    states = [encode(model.base, ids, mask, config.encoder_layers, config.encoder_final_norm).float()
              for ids, mask in batches]  # each (B, T, H)
    merged_rows, mask_rows = [], []
    for rate in config.rates:
        for hidden, (_, mask) in zip(states, batches):
            merged, merged_mask = group_merge(hidden, mask, rate)  # (B, T, H) -> (B, M, H), (B, M)
            merged_rows.extend(merged)
            mask_rows.extend(merged_mask)
    merged = pad_rows(merged_rows)  # N x (M_i, H) -> (N, M, H)
    mask = pad_rows(mask_rows)  # N x (M_i,) -> (N, M)
    tokens = (pad_rows([row for hidden in states for row in hidden]),  # (N, T, H)
              pad_rows([row for _, m in batches for row in m]),  # (N, T)
              pad_rows([row for ids, _ in batches for row in ids]))  # (N, T)
    weight = model.base.get_input_embeddings().weight  # (V, H)
    model.lsa.calibrate(merged, mask.long(), decoder_core(model.base), weight, tokens)
