import math

import torch

from gmsa.compress.merge import group_merge
from gmsa.compress.segment import split_segments


def test_groups_are_means_of_consecutive_states():
    hidden = torch.arange(8, dtype=torch.float32).view(1, 8, 1)  # values 0..7
    merged, mask = group_merge(hidden, torch.ones(1, 8), rate=4)
    assert merged.shape == (1, 2, 1)
    assert merged.flatten().tolist() == [1.5, 5.5]
    assert mask.tolist() == [[True, True]]


def test_last_partial_group_averages_only_its_tokens():
    hidden = torch.arange(6, dtype=torch.float32).view(1, 6, 1)  # 0..5, rate 4 -> [0..3], [4, 5]
    merged, mask = group_merge(hidden, torch.ones(1, 6), rate=4)
    assert merged.flatten().tolist() == [1.5, 4.5]
    assert mask.tolist() == [[True, True]]


def test_padding_never_enters_a_mean():
    hidden = torch.tensor([[1.0, 3.0, 100.0, 100.0, 100.0]]).unsqueeze(-1)
    mask = torch.tensor([[1, 1, 0, 0, 0]])
    merged, merged_mask = group_merge(hidden, mask, rate=2)
    assert merged.shape == (1, 3, 1)
    assert merged[0, 0, 0].item() == 2.0
    assert merged_mask.tolist() == [[True, False, False]]


def test_rows_of_a_batch_are_independent():
    torch.manual_seed(0)
    hidden = torch.randn(2, 10, 3)
    mask = torch.tensor([[1] * 10, [1] * 7 + [0] * 3])
    merged, merged_mask = group_merge(hidden, mask, rate=4)
    alone, _ = group_merge(hidden[1:, :7], torch.ones(1, 7), rate=4)
    assert merged_mask[1].sum() == math.ceil(7 / 4)
    torch.testing.assert_close(merged[1, :2], alone[0])


def test_output_length_is_ceil_t_over_r():
    for length in range(1, 20):
        for rate in (1, 2, 3, 8):
            merged, _ = group_merge(torch.zeros(1, length, 2), torch.ones(1, length), rate)
            assert merged.shape[1] == math.ceil(length / rate)


def test_segments_cover_every_token_in_order():
    tokens = list(range(23))
    segments = split_segments(tokens, 8)
    assert [len(s) for s in segments] == [8, 8, 7]
    assert sum(segments, []) == tokens
    assert split_segments([], 8) == []
