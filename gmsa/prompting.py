"""Laying out the decoder's input: soft tokens and text spliced into the base model's chat template.

A prompt is rendered with random one-time markers where soft tokens go, split at the markers,
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


ChatMessage = dict
"""{"role": "system" | "user" | "assistant", "content": str or a list of text pieces and soft tokens (m, H)}."""


def render_chat(
    tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat, messages: Sequence[ChatMessage]
) -> list[torch.Tensor]:
    """A conversation as a list of parts, token ids (n,) or soft tokens (m, H), ready for generation.

    Soft tokens sit where they appear in a message's content; the chat template of the base
    model (when `fmt.use_chat_template`) frames the messages and opens the assistant's turn.
    """
    soft: dict[str, torch.Tensor] = {}
    rendered = []
    for message in messages:
        pieces = [message["content"]] if isinstance(message["content"], (str, torch.Tensor)) else message["content"]
        content = ""
        for piece in pieces:
            if isinstance(piece, torch.Tensor):
                marker = f"<gmsa-context-{uuid.uuid4().hex}>"
                soft[marker] = piece
                content += marker
            else:
                content += piece
        rendered.append({"role": message["role"], "content": content})
    if fmt.use_chat_template and tokenizer.chat_template:
        if fmt.system_prompt and not any(m["role"] == "system" for m in rendered):
            rendered.insert(0, {"role": "system", "content": fmt.system_prompt})
        text = tokenizer.apply_chat_template(rendered, tokenize=False, add_generation_prompt=True)
    else:
        text = "\n".join(m["content"] for m in rendered)
    pieces = re.split("(" + "|".join(map(re.escape, soft)) + ")", text) if soft else [text]
    parts: list[torch.Tensor] = []
    for piece in pieces:
        if piece in soft:
            parts.append(soft[piece])
        elif piece:
            parts.append(torch.tensor(tokenizer(piece, add_special_tokens=False).input_ids, dtype=torch.long))
    return parts


def question_message(
    fmt: PromptFormat, contexts: Sequence[Context], instruction: str, preamble: str = ""
) -> ChatMessage:
    """The user turn GMSA is trained on: the preamble (if any), contexts in order, separated, then the instruction."""
    content: list[Context] = [preamble] if preamble else []
    for index, context in enumerate(contexts):
        content.extend([fmt.document_separator, context] if index else [context])
    content.extend(["\n", instruction] if contexts else [instruction])
    return {"role": "user", "content": content}


def render_parts(
    tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat, contexts: Sequence[Context], instruction: str,
    preamble: str = "",
) -> list[torch.Tensor]:
    """The prompt of one question over contexts (soft tokens or plain text), as parts."""
    return render_chat(tokenizer, fmt, [question_message(fmt, contexts, instruction, preamble)])


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
