"""Layer semantic alignment (LSA): map merged encoder states into the decoder's input space."""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import PreTrainedModel

from gmsa.layers import decoder_core, run_layers


class LayerSemanticAlignment(nn.Module):
    """`num_layers` Transformer blocks initialised as copies of the base model's lowest layers.

    Build it before any adapter is injected into the base model, so the copies hold plain weights.
    """

    def __init__(self, base: PreTrainedModel, num_layers: int, output_norm: bool) -> None:
        super().__init__()
        core = decoder_core(base)
        self.blocks = copy.deepcopy(core.layers[:num_layers])
        self.blocks.requires_grad_(True)
        # The reference code ends with the base's frozen final norm; optional here (see GMSAConfig).
        self.output_norm = copy.deepcopy(core.norm).requires_grad_(False) if output_norm else None

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {name: param for name, param in self.named_parameters() if not name.startswith("output_norm.")}

    def forward(self, merged: torch.Tensor, mask: torch.Tensor, core: nn.Module) -> torch.Tensor:
        """(B, M, H) merged states, (B, M) mask, positions 0..M-1 -> (B, M, H) soft tokens.

        `core` is the base model's decoder stack, lent for its rotary embedding and mask rules.
        """
        soft = run_layers(core, self.blocks, merged, mask)  # (B, M, H) -> (B, M, H)
        if self.output_norm is not None:
            soft = self.output_norm(soft)
        return soft
