"""The encoder: the base model's first k layers with the encoder LoRA."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from gmsa.backbone.adapters import ENCODER_ADAPTER, use_adapter
from gmsa.backbone.layers import decoder_core, run_layers


def encode(
    base: PreTrainedModel, input_ids: torch.Tensor, mask: torch.Tensor, num_layers: int, final_norm: bool = True
) -> torch.Tensor:
    """Hidden states of right-padded tokens after `num_layers` layers (and the final norm if `final_norm`).

    Input:  input_ids (B, T), mask (B, T).
    Output: (B, T, H).
    """
    core = decoder_core(base)
    with use_adapter(base, ENCODER_ADAPTER):
        hidden = core.embed_tokens(input_ids)  # (B, T) -> (B, T, H)
        hidden = run_layers(core, core.layers[:num_layers], hidden, mask)  # (B, T, H) -> (B, T, H)
        return core.norm(hidden) if final_norm else hidden  # (B, T, H)
