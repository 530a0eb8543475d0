"""Splitting a token sequence into encoder segments, so nothing is ever truncated."""

from __future__ import annotations


def split_segments(token_ids: list[int], segment_tokens: int) -> list[list[int]]:
    """Consecutive chunks of at most `segment_tokens` tokens covering every token, in order.

    `segment_tokens` is a multiple of every compression rate (GMSAConfig checks it), so only
    the last segment can end in a partial group and ceil(n / r) soft tokens come out overall.
    """
    if segment_tokens < 1:
        raise ValueError(f"segment_tokens={segment_tokens} must be >= 1")
    return [token_ids[start:start + segment_tokens] for start in range(0, len(token_ids), segment_tokens)]
