"""The training loss: compress contexts, lay out the decoder input, and score the target tokens."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import NamedTuple

import torch

from gmsa.backbone.adapters import decoder_adapter, use_adapter
from gmsa.decode.prompt import embed_parts, left_pad, render_parts
from gmsa.model import GMSA
from gmsa.training.layouts import Layout, layout_contexts, uniform_layouts
from gmsa.training.samples import Sample

IGNORE = -100


def compress_contexts(model: GMSA, samples: list[Sample], rates: list[int]) -> list[list[torch.Tensor]]:
    """Soft tokens of every context, sample i at rates[i], in order; gradients flow when enabled."""
    return layout_contexts(model, samples, uniform_layouts(samples, rates))


class DecoderBatch(NamedTuple):
    """Left-padded decoder inputs with labels on the target tokens only:
    embeds (B, T, H), mask (B, T), position_ids (B, T), labels (B, T)."""

    embeds: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    labels: torch.Tensor


def decoder_batch(model: GMSA, samples: list[Sample], contexts: list[list[torch.Tensor]]) -> DecoderBatch:
    """The decoder's input for `samples` over `contexts` (soft tokens, or token ids for the uncompressed prompt)."""
    embedding = model.base.get_input_embeddings()
    sequences, label_rows = [], []
    for sample, ctx in zip(samples, contexts):
        parts = render_parts(model.tokenizer, model.config.prompt, ctx, sample.instruction)
        target = torch.tensor(sample.target, dtype=torch.long)
        sequence = embed_parts(embedding, [*parts, target])  # (T_i, H)
        prompt_length = sequence.shape[0] - target.shape[0]
        label_rows.append(torch.cat([torch.full((prompt_length,), IGNORE), target]))
        sequences.append(sequence)
    embeds, mask, positions = left_pad(sequences)
    labels = torch.full(mask.shape, IGNORE, dtype=torch.long)
    for row, label in enumerate(label_rows):
        labels[row, labels.shape[1] - label.shape[0]:] = label
    return DecoderBatch(embeds, mask, positions, labels.to(mask.device))


def decoder_logits(
    model: GMSA, samples: list[Sample], contexts: list[list[torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoder pass (with the decoder's adapter): logits (B, W, V) at the last W positions that predict a
    token, and their targets (B, W), IGNORE off target; W + 1 is the span from the first target on."""
    batch = decoder_batch(model, samples, contexts)
    labels = batch.labels
    # Left padding puts every target at the right end, so only the last `keep` positions need logits:
    # the vocabulary projection of a long prompt costs memory and time and never reaches the loss.
    keep = labels.shape[1] - int((labels != IGNORE).any(0).nonzero()[0]) + 1
    keep = min(keep, labels.shape[1])
    with use_adapter(model.base, decoder_adapter(model.base)):
        out = model.base(inputs_embeds=batch.embeds, attention_mask=batch.mask, position_ids=batch.positions,
                         logits_to_keep=keep)
    logits = out.logits[:, :-1]  # (B, keep, V) -> (B, keep-1, V)
    targets = labels[:, labels.shape[1] - keep + 1:]  # (B, keep-1)
    return logits, targets


def sample_rates(
    config_rates: tuple[int, ...], count: int, seed: int, step: int, curriculum: Sequence[Sequence[int]] = ()
) -> list[int]:
    """A compression rate per sample, determined by (seed, step) so a resumed run draws the same ones.

    `curriculum` ([rate, until_step] pairs, in order) fixes the rate of the steps before each until_step.
    """
    for rate, until_step in curriculum:
        if step < until_step:
            return [rate] * count
    generator = random.Random(seed * 1_000_003 + step)
    return [generator.choice(config_rates) for _ in range(count)]


def text_contexts(samples: list[Sample]) -> list[list[torch.Tensor]]:
    """The documents as token ids: what the uncompressed prompt reads."""
    return [[torch.tensor(ids, dtype=torch.long) for ids in s.contexts] for s in samples]


def batch_loss(
    model: GMSA, samples: list[Sample], rates: list[int] | None, train_encoder: bool,
    layouts: list[Layout] | None = None,
) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over target tokens, and how many target tokens.

    The documents of sample i reach the decoder in `layouts[i]` (`gmsa.training.layouts`), by default all at
    rates[i], or all as text with rates None (the uncompressed baseline).
    """
    layouts = layouts if layouts is not None else uniform_layouts(samples, rates)
    with torch.set_grad_enabled(train_encoder and torch.is_grad_enabled()):
        contexts = layout_contexts(model, samples, layouts)
    logits, targets = decoder_logits(model, samples, contexts)
    logits = logits.float().reshape(-1, logits.shape[-1])  # (B, W, V) -> (B*W, V), the loss in fp32
    targets = targets.reshape(-1)  # (B*W,)
    loss = torch.nn.functional.cross_entropy(logits, targets, ignore_index=IGNORE)
    return loss, int((targets != IGNORE).sum())
