"""Group merging: mean-pool consecutive groups of `rate` encoder states; every token weighs the same."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def group_merge(hidden: torch.Tensor, mask: torch.Tensor, rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Average every `rate` consecutive positions; padding never enters a mean.

    Input:  hidden (B, T, H); mask (B, T), 1 on real tokens (padding anywhere).
    Output: merged (B, ceil(T/r), H); merged_mask (B, ceil(T/r)), True where a group holds a real token.
    A last partial group is averaged over the tokens it has; sums run in fp32 whatever the input's dtype.
    """
    batch, length, size = hidden.shape
    pad = (-length) % rate
    padded = F.pad(hidden, (0, 0, 0, pad))  # (B, T, H) -> (B, T', H), T' = r * ceil(T/r)
    weights = F.pad(mask, (0, pad)).to(torch.float32)  # (B, T) -> (B, T')
    weights = weights.view(batch, -1, rate, 1)  # (B, T') -> (B, M, r, 1)
    groups = padded.view(batch, -1, rate, size).float()  # (B, T', H) -> (B, M, r, H)
    counts = weights.sum(dim=2)  # (B, M, r, 1) -> (B, M, 1)
    merged = (groups * weights).sum(dim=2) / counts.clamp(min=1.0)  # (B, M, r, H) -> (B, M, H)
    return merged.to(hidden.dtype), counts.squeeze(-1) > 0  # (B, M, H), (B, M)
