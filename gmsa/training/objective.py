"""The training loss: compress contexts, lay out the decoder input, and score the target tokens."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch

from gmsa.decoding import activate_decoder
from gmsa.model import GMSA
from gmsa.prompting import embed_parts, left_pad, render_parts
from gmsa.training.samples import Sample

if TYPE_CHECKING:
    from gmsa.training.distill import Distillation

IGNORE = -100


def compress_contexts(model: GMSA, samples: list[Sample], rates: list[int]) -> list[list[torch.Tensor]]:
    """Soft tokens of every context, sample i at rates[i]; gradients flow when enabled.

    The contexts of all samples at one rate are encoded together, batched by length.
    """
    contexts: list[list[torch.Tensor]] = [[] for _ in samples]
    for rate in sorted(set(rates)):
        chosen = [s for s, sample_rate in enumerate(rates) if sample_rate == rate]
        soft = model.soft_tokens_of([ids for s in chosen for ids in samples[s].contexts], rate)
        for s in chosen:
            contexts[s], soft = soft[: len(samples[s].contexts)], soft[len(samples[s].contexts):]
    return contexts


class DecoderBatch(NamedTuple):
    """Left-padded decoder inputs with labels on the target tokens only.

    embeds (B, T, H), mask (B, T), position_ids (B, T), labels (B, T); tails (B,): how many tokens
    each sequence has after its last context (the question, the chat template's tail and the target),
    the part a compressed and an uncompressed prompt of the same sample have in common.
    """

    embeds: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    labels: torch.Tensor
    tails: torch.Tensor


def decoder_batch(model: GMSA, samples: list[Sample], contexts: list[list[torch.Tensor]]) -> DecoderBatch:
    """The decoder's input for `samples` over `contexts` (soft tokens, or token ids for the uncompressed prompt)."""
    embedding = model.base.get_input_embeddings()
    sequences, label_rows, tails = [], [], []
    for sample, ctx in zip(samples, contexts):
        parts = render_parts(model.tokenizer, model.config.prompt, ctx, sample.instruction, sample.preamble)
        target = torch.tensor(sample.target, dtype=torch.long)
        sequence = embed_parts(embedding, [*parts, target])  # (T_i, H)
        prompt_length = sequence.shape[0] - target.shape[0]
        label_rows.append(torch.cat([torch.full((prompt_length,), IGNORE), target]))
        sequences.append(sequence)
        last_context = max((i for i, part in enumerate(parts) if any(part is c for c in ctx)), default=-1)
        tails.append(sum(part.shape[0] for part in parts[last_context + 1:]) + target.shape[0])
    embeds, mask, positions = left_pad(sequences)
    labels = torch.full(mask.shape, IGNORE, dtype=torch.long)
    for row, label in enumerate(label_rows):
        labels[row, labels.shape[1] - label.shape[0]:] = label
    return DecoderBatch(embeds, mask, positions, labels.to(mask.device), torch.tensor(tails))


class DecoderPass(NamedTuple):
    """What the loss reads of one decoder pass.

    logits (B, W, V) at the last W + 1 positions but one, predicting targets (B, W) (IGNORE off target),
    with W the longest target; hidden: each layer's output states over the last `min(tails)` positions,
    (B, S, H) each, when asked for.
    """

    logits: torch.Tensor
    targets: torch.Tensor
    hidden: tuple[torch.Tensor, ...] | None


def decoder_pass(
    model: GMSA, samples: list[Sample], contexts: list[list[torch.Tensor]], hidden_states: bool = False
) -> DecoderPass:
    batch = decoder_batch(model, samples, contexts)
    activate_decoder(model.base)
    labels = batch.labels
    # Left padding puts every target at the right end, so only the last `keep` positions need logits:
    # the vocabulary projection of a long prompt costs memory and time and never reaches the loss.
    keep = labels.shape[1] - int((labels != IGNORE).any(0).nonzero()[0]) + 1
    keep = min(keep, labels.shape[1])
    out = model.base(inputs_embeds=batch.embeds, attention_mask=batch.mask, position_ids=batch.positions,
                     logits_to_keep=keep, output_hidden_states=hidden_states)
    logits = out.logits[:, :-1]  # (B, keep, V) -> (B, keep-1, V)
    targets = labels[:, labels.shape[1] - keep + 1:]  # (B, keep-1)
    hidden = None
    if hidden_states:
        shared = int(batch.tails.min())
        hidden = tuple(states[:, -shared:] for states in out.hidden_states[1:])  # layers x (B, S, H)
    return DecoderPass(logits, targets, hidden)


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
    model: GMSA,
    samples: list[Sample],
    rates: list[int] | None,
    train_encoder: bool,
    distillation: Distillation | None = None,
) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over target tokens (plus the distillation terms, if any), and how many target tokens.

    rates None: the uncompressed baseline, contexts go to the decoder as text tokens.
    """
    if rates is None:
        contexts = text_contexts(samples)
    else:
        with torch.set_grad_enabled(train_encoder and torch.is_grad_enabled()):
            contexts = compress_contexts(model, samples, rates)
    wants_hidden = distillation is not None and distillation.hidden_weight > 0
    student = decoder_pass(model, samples, contexts, hidden_states=wants_hidden)
    logits = student.logits.float().reshape(-1, student.logits.shape[-1])  # (B*W, V)
    targets = student.targets.reshape(-1)  # (B*W,)
    loss = torch.nn.functional.cross_entropy(logits, targets, ignore_index=IGNORE)
    if distillation is not None:
        loss = loss + distillation.loss(samples, student)
    return loss, int((targets != IGNORE).sum())


def mixed_task_loss(
    model: GMSA,
    samples: list[Sample],
    rates: list[int] | None,
    first_task: int,
    train_encoder: bool,
    distillation: Distillation | None = None,
) -> tuple[torch.Tensor, int]:
    """Loss of a batch whose first `first_task` samples are one task (restating) and the rest another
    (answering): each task's mean over its own target tokens, weighted by its share of the samples.

    One token mean over the whole batch would weigh each task by its target tokens instead: with 2 of 8
    samples restating up to 128 tokens, the default KEFT data's restating targets outnumber its answer
    tokens 6.3 to one (first 300 batches). A distillation teacher answers, so it only reaches the answering task.
    """
    if first_task == 0:
        return batch_loss(model, samples, rates, train_encoder, distillation)
    if first_task == len(samples):
        return batch_loss(model, samples, rates, train_encoder)
    loss, tokens = 0.0, 0
    for part in (slice(0, first_task), slice(first_task, None)):
        part_rates = None if rates is None else rates[part]
        teacher = distillation if part.start else None
        part_loss, part_tokens = batch_loss(model, samples[part], part_rates, train_encoder, teacher)
        loss = loss + part_loss * (len(samples[part]) / len(samples))
        tokens += part_tokens
    return loss, tokens
