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
from gmsa.errors import GMSAError

Context = torch.Tensor | str
"""A context for the decoder: soft tokens (m, H) of a compressed text, token ids (n,) of text, or plain text."""


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
    if not messages:
        raise GMSAError("a conversation needs at least one message")
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or "content" not in message:
            raise GMSAError(f"a chat message is a dict with 'role' and 'content', got {message!r:.80}")
        pieces = [message["content"]] if isinstance(message["content"], (str, torch.Tensor)) else message["content"]
        content = ""
        for piece in pieces:
            _check_piece(piece)
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


def _check_piece(piece: object) -> None:
    """A content piece: text, soft tokens (m, H) or token ids (n,)."""
    if isinstance(piece, str):
        return
    if isinstance(piece, torch.Tensor) and (piece.dim() == 2 and piece.is_floating_point()
                                            or piece.dim() == 1 and piece.dtype == torch.long):
        return
    described = f"a {tuple(piece.shape)} {piece.dtype} tensor" if isinstance(piece, torch.Tensor) else repr(piece)[:80]
    raise GMSAError(f"a context is text, soft tokens (m, H) float or token ids (n,) long, not {described}")


def question_message(fmt: PromptFormat, contexts: Sequence[Context], instruction: str) -> ChatMessage:
    """The user turn GMSA is trained on: the contexts in order, separated, then the instruction."""
    content: list[Context] = []
    for index, context in enumerate(contexts):
        content.extend([fmt.document_separator, context] if index else [context])
    content.extend(["\n", instruction] if contexts else [instruction])
    return {"role": "user", "content": content}


def render_parts(
    tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat, contexts: Sequence[Context], instruction: str
) -> list[torch.Tensor]:
    """The prompt of one question over contexts (soft tokens or plain text), as parts."""
    return render_chat(tokenizer, fmt, [question_message(fmt, contexts, instruction)])


def question_conversations(
    fmt: PromptFormat, prompts: Sequence[str], contexts: Sequence[Sequence[Context]] | None
) -> list[list[ChatMessage]]:
    """One single-turn conversation per prompt, contexts[i] (soft tokens or plain texts) before prompts[i]."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings; use stream() or answer() for one prompt")
    contexts = contexts if contexts is not None else [[] for _ in prompts]
    if len(prompts) != len(contexts):
        raise GMSAError(f"got {len(prompts)} prompts and {len(contexts)} context lists")
    return [[question_message(fmt, ctx, text)] for text, ctx in zip(prompts, contexts)]


def embed_parts(embedding: nn.Embedding, parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Parts -> one (T, H) sequence on the embedding's device and dtype."""
    weight = embedding.weight
    for part in parts:
        if part.is_floating_point() and part.shape[-1] != weight.shape[-1]:
            raise GMSAError(f"soft tokens of width {part.shape[-1]} for a decoder of hidden size {weight.shape[-1]}: "
                            "were they compressed by another model?")
        if part.dtype == torch.long and part.numel() and not 0 <= int(part.min()) <= int(part.max()) < weight.shape[0]:
            raise GMSAError(f"token ids outside the vocabulary [0, {weight.shape[0]})")
        if part.is_floating_point() and not bool(part.isfinite().all()):
            raise GMSAError("soft tokens hold NaN or Inf")
    pieces = [
        embedding(part.to(weight.device)) if part.dtype == torch.long else part.to(weight.device, weight.dtype)
        for part in parts
    ]  # each (n_i, H)
    return torch.cat(pieces, dim=0)  # (T, H)


def decoder_inputs(
    tokenizer: PreTrainedTokenizerBase, fmt: PromptFormat, embedding: nn.Embedding,
    conversations: Sequence[Sequence[ChatMessage]],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Conversations -> left-padded decoder inputs: embeds (B, T, H), mask (B, T), position_ids (B, T)."""
    sequences = [embed_parts(embedding, render_chat(tokenizer, fmt, conversation))
                 for conversation in conversations]  # B x (T_i, H)
    return left_pad(sequences)


def check_positions(base_config: object, mask: torch.Tensor, new_tokens: int) -> None:
    """A prompt (B, T) mask plus the answer must fit the decoder's positions (`max_position_embeddings`): past
    them a model reads positions it was never trained on. GMSA's policy is an error, never a silent cut."""
    max_positions = getattr(base_config, "max_position_embeddings", None)
    longest = int(mask.sum(dim=-1).max())
    if max_positions and longest + new_tokens > max_positions:
        raise GMSAError(f"the prompt takes {longest} decoder positions and the answer up to {new_tokens} more, past "
                        f"the {max_positions} this decoder reads: send fewer or shorter documents, a higher rate, or a "
                        "budget (answer(..., budget=...), which caps the positions the documents take)")


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
