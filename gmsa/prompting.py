"""Laying out the decoder's input: soft tokens and text spliced into the base model's chat template.

A prompt is rendered with random one-time markers where contexts go, split at the markers,
and each piece embedded: text through the base model's embedding table, soft tokens as they
are. Because markers are random per call, text in a prompt can never pull in soft tokens.
Batches are left-padded as a whole, so every sequence ends where generation starts.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from gmsa.config import PromptFormat

Context = torch.Tensor | str
"""A context for the decoder: soft tokens (m, H) of a compressed text, or plain text left uncompressed."""


def render_parts(
    tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat, contexts: Sequence[Context], instruction: str
) -> list[torch.Tensor]:
    """The prompt as a list of parts: token ids (n,) or soft tokens (m, H), in order."""
    markers = [f"<gmsa-context-{uuid.uuid4().hex}>" for _ in contexts]
    content = fmt.document_separator.join(markers) + ("\n" if markers else "") + instruction
    if fmt.use_chat_template and tokenizer.chat_template:
        messages = [{"role": "system", "content": fmt.system_prompt}] if fmt.system_prompt else []
        messages.append({"role": "user", "content": content})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = content
    pieces = re.split("(" + "|".join(map(re.escape, markers)) + ")", text) if markers else [text]
    by_marker = dict(zip(markers, contexts))
    parts: list[torch.Tensor] = []
    for piece in pieces:
        context = by_marker.get(piece)
        if isinstance(context, torch.Tensor):
            parts.append(context)
        else:
            text_piece = piece if context is None else context
            if text_piece:
                parts.append(torch.tensor(tokenizer(text_piece, add_special_tokens=False).input_ids, dtype=torch.long))
    return parts


def embed_parts(embedding: nn.Embedding, parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Parts -> one (T, H) sequence on the embedding's device and dtype."""
    weight = embedding.weight
    pieces = [
        embedding(part.to(weight.device)) if part.dtype == torch.long else part.to(weight.device, weight.dtype)
        for part in parts
    ]  # each (n_i, H)
    return torch.cat(pieces, dim=0)  # (T, H)


def left_pad(sequences: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad whole sequences into a batch.

    Input:  B tensors (T_i, H).
    Output: embeds (B, T, H), mask (B, T), position_ids (B, T) counting from 0 at each first real token.
    """
    length = max(seq.shape[0] for seq in sequences)
    first = sequences[0]
    embeds = first.new_zeros(len(sequences), length, first.shape[-1])  # (B, T, H)
    mask = torch.zeros(len(sequences), length, dtype=torch.long, device=first.device)  # (B, T)
    for row, seq in enumerate(sequences):
        embeds[row, length - seq.shape[0]:] = seq
        mask[row, length - seq.shape[0]:] = 1
    position_ids = (mask.cumsum(dim=-1) - 1).clamp(min=0)  # (B, T)
    return embeds, mask, position_ids
