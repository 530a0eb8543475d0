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

    def __init__(self, base: PreTrainedModel, num_layers: int, output_norm: str) -> None:
        super().__init__()
        core = decoder_core(base)
        self.blocks = copy.deepcopy(core.layers[:num_layers])
        self.blocks.requires_grad_(True)
        self.output_norm_kind = output_norm
        self.output_norm = None if output_norm == "none" else copy.deepcopy(core.norm)
        if output_norm == "final":
            self.output_norm.requires_grad_(False)  # the reference code's frozen final norm
        elif output_norm == "embedding":
            # A block's output is a residual stream two orders of magnitude larger than a token
            # embedding (SmolLM2: RMS 16 vs 0.11); start the soft tokens at each embedding dimension's scale.
            with torch.no_grad():
                table = base.get_input_embeddings().weight  # (V, H)
                self.output_norm.weight.copy_(table.float().pow(2).mean(dim=0).sqrt())  # (H,)
            self.output_norm.requires_grad_(True)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        frozen = "output_norm." if self.output_norm_kind == "final" else None
        return {name: param for name, param in self.named_parameters() if not (frozen and name.startswith(frozen))}

    def forward(self, merged: torch.Tensor, mask: torch.Tensor, core: nn.Module) -> torch.Tensor:
        """(B, M, H) merged states, (B, M) mask, positions 0..M-1 -> (B, M, H) soft tokens.

        `core` is the base model's decoder stack, lent for its rotary embedding and mask rules.
        """
        soft = run_layers(core, self.blocks, merged, mask)  # (B, M, H) -> (B, M, H)
        if self.output_norm is not None:
            soft = self.output_norm(soft)
        return soft
