"""Running a slice of a base model's decoder layers outside the base model's own forward.

The encoder (the base's first k layers) and the LSA blocks (copies of its lowest layers)
both need this; it calls transformers' own layers, mask builder and rotary embedding
rather than copying any modelling code.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.masking_utils import create_causal_mask


def decoder_core(base: PreTrainedModel) -> nn.Module:
    """The base model's decoder stack (embed_tokens, layers, norm, rotary_emb): `model.model` for Llama-likes."""
    core = getattr(base, "model", None)
    missing = [name for name in ("embed_tokens", "layers", "norm", "rotary_emb") if not hasattr(core, name)]
    if core is None or missing:
        raise TypeError(
            f"{type(base).__name__} does not have the Llama-style layout GMSA wraps "
            f"(model.embed_tokens/layers/norm/rotary_emb; missing {missing}); supported: Llama, Qwen2/3, Mistral"
        )
    return core


def run_layers(core: nn.Module, layers: Iterable[nn.Module], hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Run `layers` causally over right-padded `hidden`, positions starting at 0 in every row.

    Input:  hidden (B, T, H), mask (B, T) with 1 on real positions.
    Output: (B, T, H). Real positions never see padding: it sits after them and attention is causal.
    """
    position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)  # (1, T)
    attention = create_causal_mask(
        config=core.config,
        inputs_embeds=hidden,
        attention_mask=mask,
        past_key_values=None,
        position_ids=position_ids,
    )
    position_embeddings = core.rotary_emb(hidden, position_ids=position_ids)  # cos, sin: (1, T, head_dim)
    for layer in layers:
        hidden = layer(
            hidden,
            attention_mask=attention,
            position_ids=position_ids,
            position_embeddings=position_embeddings,
        )  # (B, T, H) -> (B, T, H)
    return hidden
