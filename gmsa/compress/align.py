"""Layer semantic alignment (LSA): map merged encoder states into the decoder's input space."""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import PreTrainedModel

from gmsa.backbone.layers import decoder_core, run_layers


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


class Readout(nn.Linear):
    """The shipped LSA ending: a trained linear map H -> H that `fit` sets by ridge regression before AE
    training (a data-dependent start). `core` is accepted for the `OUTPUTS` interface."""

    trained = True

    def __init__(self, size: int, core: nn.Module | None = None) -> None:
        super().__init__(size, size)
        with torch.no_grad():  # the identity until fitted
            self.weight.copy_(torch.eye(size))
            self.bias.zero_()

    @torch.no_grad()
    def fit(self, features: torch.Tensor, targets: torch.Tensor, ridge: float = 1.0) -> None:
        """Least squares from `features` (N, H) to `targets` (N, H), on standardised features, in float64."""
        x, y = features.double().cpu(), targets.double().cpu()
        x_mean, x_std = x.mean(dim=0), x.std(dim=0).clamp(min=1e-6)  # (H,), (H,)
        y_mean = y.mean(dim=0)  # (H,)
        standard = (x - x_mean) / x_std  # (N, H)
        gram = standard.T @ standard + ridge * torch.eye(x.shape[1], dtype=x.dtype)  # (H, H)
        solution = torch.linalg.solve(gram, standard.T @ (y - y_mean))  # (H, H): standardised x -> y
        weight = solution / x_std[:, None]  # (H_in, H_out), on raw features
        self.weight.copy_(weight.T.to(self.weight))
        self.bias.copy_((y_mean - x_mean @ weight).to(self.bias))


class FrozenFinalNorm(nn.Module):
    """The reference code's LSA ending: a frozen copy of the base model's final norm (not trained, not saved)."""

    trained = False

    def __init__(self, size: int, core: nn.Module) -> None:
        super().__init__()
        self.norm = copy.deepcopy(core.norm).float().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)  # (..., H) -> (..., H)


OUTPUTS: dict[str, type[nn.Module]] = {"readout": Readout, "final": FrozenFinalNorm}
"""`GMSAConfig.lsa_output_norm` -> the module that ends the LSA."""


class LayerSemanticAlignment(nn.Module):
    """An input affine, `num_layers` Transformer blocks initialised as copies of the base model's
    lowest layers (gated in, or not), and an output map into the embedding space (`OUTPUTS`).

    Build it before any adapter is injected into the base model, so the copies hold plain weights.
    The affine maps start as the identity; `calibrate` (run by the AE stage before its first step)
    fits them to data. Everything here is fp32 whatever the base's dtype: the blocks run on M = T/r
    positions (cheap), and a fitted readout loses what it reads to bf16 rounding; `forward` casts its
    input up and the compressor casts soft tokens down to the decoder's dtype.
    """

    def __init__(self, base: PreTrainedModel, num_layers: int, output: str, gated: bool = True) -> None:
        super().__init__()
        core = decoder_core(base)
        size = base.config.hidden_size
        self.input_affine = DimensionAffine(size)
        self.blocks = copy.deepcopy(core.layers[:num_layers]).float()
        self.blocks.requires_grad_(True)
        # Gated: blocks(x) enters as x + g * (blocks(x) - x), g per dimension and 0 at first (as ReZero), so
        # training starts from the affine + readout map and learns how much of the blocks to use.
        self.block_gate = nn.Parameter(torch.zeros(size)) if gated else None
        self.output_norm = OUTPUTS[output](size, core)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        params = dict(self.named_parameters())
        if not self.output_norm.trained:
            params = {name: param for name, param in params.items() if not name.startswith("output_norm.")}
        return params

    def forward(self, merged: torch.Tensor, mask: torch.Tensor, core: nn.Module) -> torch.Tensor:
        """(B, M, H) merged states, (B, M) mask, positions 0..M-1 -> (B, M, H) soft tokens, fp32.

        `core` is the base model's decoder stack, lent for its rotary embedding and mask rules.
        Runs outside autocast, in the LSA's own dtype.
        """
        with torch.autocast(merged.device.type, enabled=False):
            soft = self._blocks(merged, mask, core)  # (B, M, H) -> (B, M, H)
            return self.output_norm(soft)  # (B, M, H) -> (B, M, H)

    def _blocks(self, merged: torch.Tensor, mask: torch.Tensor, core: nn.Module) -> torch.Tensor:
        """Input affine, then the blocks (gated or not): (B, M, H) in any dtype -> (B, M, H) in the LSA's."""
        hidden = self.input_affine(merged.to(self.input_affine.scale.dtype))  # (B, M, H) -> (B, M, H)
        out = run_layers(core, self.blocks, hidden, mask)  # (B, M, H) -> (B, M, H)
        if self.block_gate is not None:
            out = hidden + self.block_gate.to(hidden.dtype) * (out - hidden)  # (B, M, H)
        return out

    @torch.no_grad()
    def calibrate(
        self,
        merged: torch.Tensor,
        mask: torch.Tensor,
        core: nn.Module,
        embedding: torch.Tensor,
        tokens: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    ) -> None:
        """Fit the input affine so block inputs match `embedding` (V, H), then a readout output.

        The blocks are copies of the base's lowest layers, which read token embeddings: they get inputs
        with each embedding dimension's mean and spread. merged (B, M, H), mask (B, M) as in forward.
        `tokens` = (states (B, T, H), mask (B, T), input_ids (B, T)), encoder states at rate 1: a readout
        is fitted so each token's soft token approximates the token's own embedding.
        """
        real = mask.bool()
        table = embedding.float()
        target_mean, target_std = table.mean(dim=0), table.std(dim=0)  # (V, H) -> (H,), (H,)
        self.input_affine.calibrate(merged[real], target_mean, target_std)  # (N, H)
        if isinstance(self.output_norm, Readout):
            states, token_mask, input_ids = tokens
            hidden = self._blocks(states.float(), token_mask, core)  # (B, T, H)
            real_tokens = token_mask.bool()
            self.output_norm.fit(hidden[real_tokens], embedding[input_ids[real_tokens]])  # (N, H) -> (N, H)
