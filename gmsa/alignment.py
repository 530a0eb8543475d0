"""Layer semantic alignment (LSA): map merged encoder states into the decoder's input space."""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import PreTrainedModel

from gmsa.layers import decoder_core, run_layers


class DimensionAffine(nn.Module):
    """x * scale + shift per hidden dimension; `calibrate` sets it from data (as Glow's ActNorm).

    Mid-layer states of small LMs carry a few huge, token-independent dimensions (SmolLM2-135M,
    layer 8: dimension 247 averages 22 against a median of 0.7), so every merged state points the
    same way (mean pairwise cosine 0.98). Standardising each dimension over real data and
    rescaling it to the embedding table's spread exposes what differs between groups.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(size))
        self.shift = nn.Parameter(torch.zeros(size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x.dtype) + self.shift.to(x.dtype)  # (..., H) -> (..., H)

    @torch.no_grad()
    def calibrate(self, states: torch.Tensor, target_mean: torch.Tensor, target_std: torch.Tensor) -> None:
        """Map `states` (N, H), per dimension, onto `target_mean` / `target_std` (H,)."""
        states = states.float()
        scale = target_std / states.std(dim=0).clamp(min=1e-6)  # (H,)
        self.scale.copy_(scale)
        self.shift.copy_(target_mean - states.mean(dim=0) * scale)


class LayerSemanticAlignment(nn.Module):
    """An input affine, `num_layers` Transformer blocks initialised as copies of the base model's
    lowest layers, and an output map into the embedding space.

    Build it before any adapter is injected into the base model, so the copies hold plain weights.
    The affine maps start as the identity; `calibrate` (run by the AE stage before its first step)
    fits them to data.
    """

    def __init__(self, base: PreTrainedModel, num_layers: int, output_norm: str) -> None:
        super().__init__()
        core = decoder_core(base)
        size = base.config.hidden_size
        self.input_affine = DimensionAffine(size)
        self.blocks = copy.deepcopy(core.layers[:num_layers])
        self.blocks.requires_grad_(True)
        self.output_norm_kind = output_norm
        self.output_norm: nn.Module | None = None
        if output_norm == "calibrated":
            self.output_norm = DimensionAffine(size)
        elif output_norm in ("embedding", "final"):
            self.output_norm = copy.deepcopy(core.norm)
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
        hidden = self.input_affine(merged)  # (B, M, H) -> (B, M, H)
        soft = run_layers(core, self.blocks, hidden, mask)  # (B, M, H) -> (B, M, H)
        if self.output_norm is not None:
            soft = self.output_norm(soft)  # (B, M, H) -> (B, M, H)
        return soft

    @torch.no_grad()
    def calibrate(self, merged: torch.Tensor, mask: torch.Tensor, core: nn.Module, embedding: torch.Tensor) -> None:
        """Fit the affine maps so block inputs (and, for "calibrated", soft tokens) match `embedding` (V, H).

        The blocks are copies of the base's lowest layers, which read token embeddings: they get inputs
        with each embedding dimension's mean and spread. merged (B, M, H), mask (B, M) as in forward.
        """
        real = mask.bool()
        table = embedding.float()
        target_mean, target_std = table.mean(dim=0), table.std(dim=0)  # (V, H) -> (H,), (H,)
        self.input_affine.calibrate(merged[real], target_mean, target_std)  # (N, H)
        if self.output_norm_kind == "calibrated":
            hidden = run_layers(core, self.blocks, self.input_affine(merged), mask)  # (B, M, H)
            self.output_norm.calibrate(hidden[real], target_mean, target_std)
