"""The compressor: token ids -> encoder -> group merge -> LSA -> soft tokens, for texts of any length.

Functions of a model's parts (`Parts`: its base model, LSA and config; a `GMSA` has them); `GMSA.compress`
and training call them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from gmsa.backbone.layers import decoder_core
from gmsa.compress.encode import encode
from gmsa.compress.merge import group_merge
from gmsa.compress.segment import length_batches, right_pad, split_segments
from gmsa.config import GMSAConfig
from gmsa.errors import ConfigError, GMSAError


class Parts(Protocol):
    """What compression reads of a model (`gmsa.model.GMSA` has it all)."""

    config: GMSAConfig
    base: PreTrainedModel
    lsa: nn.Module
    base_fingerprint: str
    lock: Any
    """Serialises model use (a threading.RLock)."""

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def hidden_size(self) -> int: ...

    def trained_parameters(self) -> dict[str, nn.Parameter]: ...


def tokenize_contexts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text as the encoder reads them (no special tokens); a blank text has none."""
    if isinstance(texts, str):
        raise ConfigError("texts must be a list of strings, not one string (wrap it in a list)")
    if not isinstance(texts, Sequence):
        raise ConfigError(f"texts must be a list of strings, not {type(texts).__name__}")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ConfigError(f"texts[{index}] is {type(text).__name__}, not str")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:  # a lone surrogate, e.g. from text decoded with errors="surrogateescape"
            raise ConfigError(f"texts[{index}] is not valid Unicode ({error.reason} at {error.start})") from None
    if not texts:
        return []
    encoded = tokenizer(list(texts), add_special_tokens=False).input_ids
    return [ids if text.strip() else [] for text, ids in zip(texts, encoded)]


def soft_tokens(
    model: Parts, input_ids: torch.Tensor, mask: torch.Tensor, rate: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The differentiable core: right-padded tokens -> soft tokens.

    Input:  input_ids (B, T), mask (B, T).
    Output: soft (B, ceil(T/r), H) in the decoder's dtype, soft_mask (B, ceil(T/r)) True on real soft
            tokens (a prefix of each row). The LSA runs in fp32 whatever the base's dtype (`align`).
    """
    config = model.config
    hidden = encode(model.base, input_ids, mask, config.encoder_layers, config.encoder_final_norm)  # (B, T, H)
    return align(model, hidden, mask, rate)


def align(model: Parts, hidden: torch.Tensor, mask: torch.Tensor, rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoder states -> soft tokens at `rate`: (B, T, H), (B, T) -> (B, ceil(T/r), H), (B, ceil(T/r))."""
    merged, merged_mask = group_merge(hidden, mask, rate)  # (B, T, H) -> (B, M, H), (B, M)
    soft = model.lsa(merged, merged_mask.long(), decoder_core(model.base))  # (B, M, H) -> (B, M, H), fp32
    return soft.to(model.base.dtype), merged_mask


def soft_tokens_at_rates(
    model: Parts, token_ids: Sequence[Sequence[int]], rates: Sequence[Sequence[int]], *, batch_size: int = 16,
    batch_tokens: int = 512,
) -> list[dict[int, torch.Tensor]]:
    """Token id lists -> {rate: (ceil(n_i / rate), H) soft tokens} for each text i at each of rates[i].

    One encoder pass serves every rate: encoder states do not depend on the rate, so each segment is
    encoded once and merged at each rate its text asks for (the LSA runs per rate, on T/r positions).
    Each list is split into `config.segment_tokens` segments, each compressed on its own, and their soft
    tokens concatenated in order: nothing is truncated. Segments are encoded in length-sorted batches of
    at most `batch_size` rows and `batch_tokens` padded tokens, because padding is wasted work: 8
    five-document NQ samples (40 segments, longest 451 tokens) encoded with gradients in one padded batch
    took 31 s on a 2-core CPU, in batches of 512 padded tokens 8 s. Differentiable (training uses it).
    """
    if len(rates) != len(token_ids):
        raise ValueError(f"{len(token_ids)} texts but {len(rates)} lists of rates")
    config = model.config
    segments = [(index, segment) for index, ids in enumerate(token_ids)
                for segment in split_segments(list(ids), config.segment_tokens)]
    outputs: list[dict[int, torch.Tensor]] = [{} for _ in segments]
    for chunk in length_batches([len(ids) for _, ids in segments], batch_size, batch_tokens):
        ids, mask = right_pad([segments[i][1] for i in chunk], model.tokenizer.pad_token_id, model.device)
        hidden = encode(model.base, ids, mask, config.encoder_layers, config.encoder_final_norm)  # (B, T, H)
        for rate in sorted({r for i in chunk for r in rates[segments[i][0]]}):
            rows = [row for row, i in enumerate(chunk) if rate in rates[segments[i][0]]]
            picked = hidden if len(rows) == len(chunk) else hidden[rows]  # (B', T, H)
            soft, soft_mask = align(model, picked, mask if len(rows) == len(chunk) else mask[rows], rate)
            for out_row, row in enumerate(rows):
                outputs[chunk[row]][rate] = soft[out_row, : int(soft_mask[out_row].sum())]  # (m_i, H)
    broken = [segments[i][0] for i, out in enumerate(outputs)
              if not all(bool(soft.isfinite().all()) for soft in out.values())]
    if broken:
        raise GMSAError(f"the compressor produced NaN or Inf soft tokens for text {broken[0]} (of {len(token_ids)}): "
                        "its weights are damaged, or float16 overflowed (load the base in bfloat16 or float32)")
    empty = torch.zeros(0, model.hidden_size, device=model.device, dtype=model.base.dtype)  # (0, H)
    parts: list[list[dict[int, torch.Tensor]]] = [[] for _ in token_ids]
    for (owner, _), out in zip(segments, outputs):
        parts[owner].append(out)  # in segment order
    return [{r: torch.cat([p[r] for p in own], dim=0) if own else empty for r in wanted}
            for own, wanted in zip(parts, rates)]


def soft_tokens_of(
    model: Parts, token_ids: Sequence[Sequence[int]], rate: int, *, batch_size: int = 16, batch_tokens: int = 512
) -> list[torch.Tensor]:
    """Token id lists -> one (ceil(n_i / rate), H) soft-token tensor each (`soft_tokens_at_rates` at one rate)."""
    per_text = soft_tokens_at_rates(model, token_ids, [[rate]] * len(token_ids), batch_size=batch_size,
                                    batch_tokens=batch_tokens)
    return [soft[rate] for soft in per_text]


@torch.no_grad()
def compressor_fingerprint(model: Parts) -> str:
    """A hash of everything that decides soft tokens: base weights, encoder adapter, LSA, layout, dtype.

    Soft-token caches key on it, so soft tokens from another (or a retrained) compressor are never
    reused. KEFT weights do not enter: they change the decoder, not the soft tokens.
    """
    config = model.config
    digest = hashlib.sha256(model.base_fingerprint.encode())
    layout = (config.encoder_layers, config.encoder_final_norm, config.lsa_layers, config.lsa_output_norm,
              config.lsa_gate, config.segment_tokens, str(model.base.dtype))
    digest.update(repr(layout).encode())
    for name, param in sorted(model.trained_parameters().items()):
        if name.startswith(("encoder.", "lsa.")):
            digest.update(name.encode())
            digest.update(param.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:32]
