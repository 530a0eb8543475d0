"""Group merging: mean-pool consecutive groups of `rate` hidden states.

`SlotMaps` is an option on top (`GMSAConfig.group_merge = "slot"`): each position in a group first passes
through its own low-rank map, so the mean could keep which token sat where. On SmolLM2-135M it restated no
better than the mean (BENCHMARKS.md, "Slot-aware group merging"), likely because causal states already
carry the tokens before them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def group_merge(hidden: torch.Tensor, mask: torch.Tensor, rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Average every `rate` consecutive positions; padding never enters a mean.

    Input:  hidden (B, T, H); mask (B, T), 1 on real tokens (padding anywhere).
    Output: merged (B, ceil(T/r), H); merged_mask (B, ceil(T/r)), True where a group holds a real token.
    A last partial group is averaged over the tokens it has; every token weighs the same.
    """
    batch, length, size = hidden.shape
    pad = (-length) % rate
    hidden = F.pad(hidden, (0, 0, 0, pad))  # (B, T, H) -> (B, T', H), T' = r * ceil(T/r)
    weights = F.pad(mask, (0, pad)).to(torch.float32)  # (B, T) -> (B, T')
    weights = weights.view(batch, -1, rate, 1)  # (B, T') -> (B, M, r, 1)
    groups = hidden.view(batch, -1, rate, size).float()  # (B, T', H) -> (B, M, r, H), fp32 sums
    counts = weights.sum(dim=2)  # (B, M, r, 1) -> (B, M, 1)
    merged = (groups * weights).sum(dim=2) / counts.clamp(min=1.0)  # (B, M, r, H) -> (B, M, H)
    return merged.to(hidden.dtype), counts.squeeze(-1) > 0  # (B, M, H), (B, M)


class SlotMaps(nn.Module):
    """Per-slot maps applied before the mean: position j of each group becomes x + (x A_j) B_j.

    One (A, B) pair of rank `rank` per slot and per rate. B starts at zero (as LoRA's), so a model
    given slot maps merges exactly as the mean did until training moves them. A is drawn from its own
    generator, so adding slot maps leaves the global random state (and a recipe's batches) unchanged.
    """

    def __init__(self, size: int, rates: tuple[int, ...], rank: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.down = nn.ParameterDict({
            str(rate): nn.Parameter(torch.randn(rate, size, rank, generator=generator) / size**0.5) for rate in rates
        })
        self.up = nn.ParameterDict({str(rate): nn.Parameter(torch.zeros(rate, rank, size)) for rate in rates})

    @property
    def rates(self) -> set[int]:
        return {int(rate) for rate in self.down}

    def forward(self, hidden: torch.Tensor, rate: int) -> torch.Tensor:
        """(B, T, H) encoder states -> (B, T, H), position t mapped by slot t mod r (groups start at 0)."""
        batch, length, size = hidden.shape
        pad = (-length) % rate
        groups = F.pad(hidden, (0, 0, 0, pad)).view(batch, -1, rate, size)  # (B, T, H) -> (B, M, r, H)
        down, up = self.down[str(rate)], self.up[str(rate)]  # (r, H, R), (r, R, H)
        low = torch.einsum("bmjh,jhk->bmjk", groups, down.to(groups.dtype))  # (B, M, r, H) -> (B, M, r, R)
        delta = torch.einsum("bmjk,jkh->bmjh", low, up.to(groups.dtype))  # (B, M, r, R) -> (B, M, r, H)
        return (groups + delta).view(batch, -1, size)[:, :length]  # (B, M, r, H) -> (B, T, H)


def merge_groups(
    hidden: torch.Tensor, mask: torch.Tensor, rate: int, slot_maps: SlotMaps | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's merge: `group_merge`, after the slot maps when it has them (`group_merge="slot"`).

    Input:  hidden (B, T, H); mask (B, T). Output: merged (B, ceil(T/r), H); merged_mask (B, ceil(T/r)).
    """
    if slot_maps is not None:
        hidden = slot_maps(hidden, rate)  # (B, T, H) -> (B, T, H)
    return group_merge(hidden, mask, rate)
