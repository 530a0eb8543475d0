"""GMSA: text -> tokens -> encoder -> group merge -> LSA -> soft tokens -> decoder.

One base causal LM in memory serves as encoder (first k layers + LoRA) and decoder (all
layers, + KEFT weights when trained); the LSA blocks are the only extra weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from gmsa.adapters import add_decoder_adapter, add_encoder_adapter
from gmsa.alignment import LayerSemanticAlignment
from gmsa.answer import Answer
from gmsa.base import load_base, resolve_device, resolve_dtype
from gmsa.batching import length_batches, right_pad
from gmsa.checkpoint import load_trained, read_checkpoint, trained_parameters, write_checkpoint
from gmsa.config import EMBEDDED_BASE, GenerationSettings, GMSAConfig
from gmsa.decoding import decode_texts, generate_ids, stream_text
from gmsa.encoder import encode
from gmsa.errors import CheckpointError, GMSAError
from gmsa.extractive import quote_processors
from gmsa.layers import decoder_core
from gmsa.merging import SlotMaps, merge_groups
from gmsa.prompting import ChatMessage, Context, embed_parts, left_pad, question_message, render_chat
from gmsa.segmenting import split_segments

logger = logging.getLogger(__name__)

BUNDLED_DEFAULT = Path(__file__).parent / "checkpoints" / "default"
"""The checkpoint `GMSA.from_pretrained()` loads: trained over the embedded base model."""


class GMSA(nn.Module):
    """A GMSA context compressor and its decoder over one base causal LM.

    Build one with `GMSA.from_base` (untrained) or `GMSA.from_pretrained` (a checkpoint, or the
    bundled default). All public methods are thread-safe: one lock serialises model use.
    """

    def __init__(
        self, base: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: GMSAConfig, fingerprint: str
    ) -> None:
        super().__init__()
        config.check_against_base(base.config.num_hidden_layers)
        self.config = config
        self.base = base
        self.base_fingerprint = fingerprint
        self._tokenizer = tokenizer
        # LSA copies the base's plain lowest layers, so it is built before adapters are injected.
        self.lsa = LayerSemanticAlignment(base, config.lsa_layers, config.lsa_output_norm, config.lsa_gate)
        self.slot_maps = None
        if config.group_merge == "slot":
            self.add_slot_maps()
        add_encoder_adapter(base, config)
        if config.keft_mode != "none":
            add_decoder_adapter(base, config)
        self.requires_grad_(False)  # training unfreezes what its stage trains
        self.eval()  # adapters arrive in train mode (dropout on); training calls train() itself
        self.lock = threading.RLock()

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_base(
        cls,
        model_name_or_path: str = EMBEDDED_BASE,
        config: GMSAConfig | None = None,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        trust_remote_code: bool = False,
    ) -> GMSA:
        """A new, untrained GMSA over a causal LM (hub id, local folder, or the embedded default)."""
        config = config or GMSAConfig(base_model=model_name_or_path)
        if config.base_model != model_name_or_path:
            config = dataclasses.replace(config, base_model=model_name_or_path)
        device = resolve_device(device)
        base, tokenizer, fingerprint = load_base(
            model_name_or_path, device=device, dtype=resolve_dtype(device, dtype), trust_remote_code=trust_remote_code
        )
        return cls(base, tokenizer, config, fingerprint)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path | None = None,
        *,
        base_model: str | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        trust_remote_code: bool = False,
    ) -> GMSA:
        """Load a checkpoint folder; with no path, the bundled default over the embedded base model.

        `base_model` points at the base model when it lives elsewhere than the checkpoint says;
        its weights must match the fingerprint the checkpoint was trained on.
        """
        if path is None:
            if not (BUNDLED_DEFAULT / "gmsa_config.json").is_file():
                logger.warning("no trained default checkpoint is bundled; returning an untrained GMSA")
                return cls.from_base(EMBEDDED_BASE, device=device, dtype=dtype)
            path = BUNDLED_DEFAULT
        config, identity, tensors = read_checkpoint(path)
        device = resolve_device(device)
        base_name = base_model or config.base_model
        base, tokenizer, fingerprint = load_base(
            base_name, device=device, dtype=resolve_dtype(device, dtype), trust_remote_code=trust_remote_code
        )
        if fingerprint != identity.get("fingerprint"):
            raise CheckpointError(
                f"{path} was trained on base model {identity.get('name')!r} (weights fingerprint "
                f"{identity.get('fingerprint')}), but {base_name!r} has fingerprint {fingerprint}: "
                "load it with the base model it was trained on"
            )
        model = cls(base, tokenizer, dataclasses.replace(config, base_model=base_name), fingerprint)
        load_trained(model.trained_parameters(), tensors, source=str(path))
        return model

    def save_pretrained(self, path: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write the trained weights (safetensors) and the config; the base model is not copied."""
        identity = {"name": self.config.base_model, "fingerprint": self.base_fingerprint}
        tensors = {name: param for name, param in self.trained_parameters().items()}
        return write_checkpoint(path, self.config, identity, tensors, dtype=dtype)

    def trained_parameters(self) -> dict[str, nn.Parameter]:
        """Checkpoint name -> parameter, for every weight GMSA trains."""
        return trained_parameters(self.base, self.lsa, self.slot_maps)

    def add_slot_maps(self) -> None:
        """Switch to slot-aware merging (`group_merge="slot"`); it merges as the mean until trained."""
        slot_maps = SlotMaps(self.hidden_size, self.config.rates, self.config.slot_rank)
        self.slot_maps = slot_maps.to(self.device).requires_grad_(False)
        self.config = dataclasses.replace(self.config, group_merge="slot")

    @torch.no_grad()
    def compressor_fingerprint(self) -> str:
        """A hash of everything that decides soft tokens: base weights, encoder adapter, slot maps, LSA, layout, dtype.

        Soft-token caches key on it, so soft tokens from another (or a retrained) compressor are never
        reused. KEFT weights do not enter: they change the decoder, not the soft tokens.
        """
        digest = hashlib.sha256(self.base_fingerprint.encode())
        layout = (self.config.encoder_layers, self.config.encoder_final_norm, self.config.lsa_layers,
                  self.config.lsa_output_norm, self.config.lsa_gate, self.config.segment_tokens, str(self.base.dtype))
        if self.slot_maps is not None:  # kept out of the mean's layout, so existing fingerprints stay valid
            layout += ("slot", self.config.slot_rank)
        digest.update(repr(layout).encode())
        for name, param in sorted(self.trained_parameters().items()):
            if name.startswith(("encoder.", "lsa.", "merge.")):
                digest.update(name.encode())
                digest.update(param.detach().float().cpu().numpy().tobytes())
        return digest.hexdigest()[:32]

    # -- properties ------------------------------------------------------------------------
    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self._tokenizer

    @property
    def device(self) -> torch.device:
        return self.base.get_input_embeddings().weight.device

    @property
    def hidden_size(self) -> int:
        return self.base.get_input_embeddings().weight.shape[-1]

    # -- compression -----------------------------------------------------------------------
    def soft_tokens(self, input_ids: torch.Tensor, mask: torch.Tensor, rate: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The differentiable core: right-padded tokens -> soft tokens.

        Input:  input_ids (B, T), mask (B, T).
        Output: soft (B, ceil(T/r), H) in the decoder's dtype, soft_mask (B, ceil(T/r)) True on real soft
                tokens (a prefix of each row). The LSA runs in fp32 whatever the base's dtype (`alignment`).
        """
        hidden = self._encode(input_ids, mask)  # (B, T) -> (B, T, H)
        merged, merged_mask = merge_groups(hidden, mask, rate, self.slot_maps)  # (B, T, H) -> (B, M, H), (B, M)
        soft = self.lsa(merged, merged_mask.long(), decoder_core(self.base))  # (B, M, H) -> (B, M, H), fp32
        return soft.to(self.base.dtype), merged_mask

    def _encode(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids, (B, T) mask -> (B, T, H) encoder states."""
        return encode(self.base, input_ids, mask, self.config.encoder_layers, self.config.encoder_final_norm)

    def tokenize_contexts(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text as the encoder reads them (no special tokens)."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string")
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{index}] is {type(text).__name__}, not str")
        if not texts:
            return []
        encoded = self.tokenizer(list(texts), add_special_tokens=False).input_ids
        return [ids if text.strip() else [] for text, ids in zip(texts, encoded)]

    @torch.no_grad()
    def compress(
        self, texts: Sequence[str], rate: int | None = None, *, batch_size: int = 16, batch_tokens: int = 512
    ) -> list[torch.Tensor]:
        """Soft tokens of each text: a (ceil(n_i / rate), H) tensor per text, on the model's device.

        Texts longer than `config.segment_tokens` tokens are split into segments, each compressed
        on its own, and their soft tokens concatenated in order: nothing is truncated. An empty or
        whitespace-only text gives an empty (0, H) tensor (a context that contributes nothing).
        Segments are batched by length, at most `batch_size` rows and `batch_tokens` padded tokens.
        """
        rate = self.config.check_rate(rate if rate is not None else self.config.rates[0])
        with self.lock:
            return self.soft_tokens_of(self.tokenize_contexts(texts), rate, batch_size=batch_size,
                                       batch_tokens=batch_tokens)

    def soft_tokens_of(
        self, token_ids: Sequence[Sequence[int]], rate: int, *, batch_size: int = 16, batch_tokens: int = 512
    ) -> list[torch.Tensor]:
        """Token id lists -> one (ceil(n_i / rate), H) soft-token tensor each; differentiable (training uses it).

        Each list is split into `config.segment_tokens` segments; segments are encoded in length-sorted
        batches of at most `batch_size` rows and `batch_tokens` padded tokens, because padding is wasted
        work: 8 five-document NQ samples (40 segments, longest 451 tokens) encoded with gradients in one
        padded batch took 31 s on a 2-core CPU, in batches of 512 padded tokens 8 s.
        """
        segments = [(index, segment) for index, ids in enumerate(token_ids)
                    for segment in split_segments(list(ids), self.config.segment_tokens)]
        outputs: list[torch.Tensor | None] = [None] * len(segments)
        for chunk in length_batches([len(ids) for _, ids in segments], batch_size, batch_tokens):
            ids, mask = right_pad([segments[i][1] for i in chunk], self.tokenizer.pad_token_id, self.device)
            soft, soft_mask = self.soft_tokens(ids, mask, rate)  # (B, M, H), (B, M)
            for row, index in enumerate(chunk):
                outputs[index] = soft[row, : int(soft_mask[row].sum())]  # (m_i, H)
        per_text: list[list[torch.Tensor]] = [[] for _ in token_ids]
        for (index, _), soft in zip(segments, outputs):
            per_text[index].append(soft)
        empty = torch.zeros(0, self.hidden_size, device=self.device, dtype=self.base.dtype)
        return [torch.cat(parts, dim=0) if parts else empty for parts in per_text]

    # -- decoding --------------------------------------------------------------------------
    def decoder_inputs(
        self, conversations: Sequence[Sequence[ChatMessage]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Left-padded decoder inputs: embeds (B, T, H), mask (B, T), position_ids (B, T)."""
        embedding = self.base.get_input_embeddings()
        sequences = [
            embed_parts(embedding, render_chat(self.tokenizer, self.config.prompt, conversation))
            for conversation in conversations
        ]  # B x (T_i, H)
        return left_pad(sequences)

    def question_conversations(
        self,
        prompts: Sequence[str],
        contexts: Sequence[Sequence[Context]] | None,
        preambles: Sequence[str] | None = None,
    ) -> list[list[ChatMessage]]:
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings; use stream() or answer() for one prompt")
        contexts = contexts if contexts is not None else [[] for _ in prompts]
        preambles = preambles if preambles is not None else ["" for _ in prompts]
        if not len(prompts) == len(contexts) == len(preambles):
            raise GMSAError(f"got {len(prompts)} prompts, {len(contexts)} context lists and {len(preambles)} preambles")
        fmt = self.config.prompt
        return [[question_message(fmt, ctx, text, pre)] for text, ctx, pre in zip(prompts, contexts, preambles)]

    def _settings(self, settings: GenerationSettings | None, overrides: dict) -> GenerationSettings:
        return (settings or self.config.generation).replace(**overrides)

    @torch.no_grad()
    def generate_chat(
        self,
        conversations: Sequence[Sequence[ChatMessage]],
        settings: GenerationSettings | None = None,
        quote_from: Sequence[Sequence[str]] | None = None,
        **overrides,
    ) -> list[str]:
        """Generate the next assistant turn of each conversation.

        A message's content is a string or a list of text pieces and soft tokens (m, H), e.g.
        `{"role": "user", "content": [soft_a, "\\n", soft_b, "\\nWhat is ...?"]}`. `overrides` are
        GenerationSettings fields (max_new_tokens, do_sample, temperature, top_p, repetition_penalty,
        stop). `quote_from[i]`, when given, holds texts that answer i must quote (`gmsa.extractive`).
        A batch gives the same outputs as one-by-one calls.
        """
        resolved, processors = self._settings(settings, overrides), quote_processors(self.tokenizer, quote_from)
        if quote_from is not None and len(quote_from) != len(conversations):
            raise ValueError(f"quote_from has {len(quote_from)} entries for {len(conversations)} conversations")
        with self.lock:
            embeds, mask, _ = self.decoder_inputs(conversations)
            ids = generate_ids(self.base, self.tokenizer, embeds, mask, resolved, logits_processor=processors)
        return decode_texts(self.tokenizer, ids, resolved, quote_from)

    def stream_chat(
        self,
        conversation: Sequence[ChatMessage],
        settings: GenerationSettings | None = None,
        quote_from: Sequence[str] | None = None,
        **overrides,
    ) -> Iterator[str]:
        """Like `generate_chat` for one conversation (quoting the texts `quote_from` when given), yielding
        text chunks token by token."""
        resolved = self._settings(settings, overrides)
        processors = quote_processors(self.tokenizer, None if quote_from is None else [quote_from])
        with self.lock, torch.no_grad():
            embeds, mask, _ = self.decoder_inputs([conversation])
        yield from stream_text(self.base, self.tokenizer, embeds, mask, resolved, self.lock, processors, quote_from)

    def generate(
        self,
        prompts: Sequence[str],
        contexts: Sequence[Sequence[Context]] | None = None,
        settings: GenerationSettings | None = None,
        preambles: Sequence[str] | None = None,
        quote_from: Sequence[Sequence[str]] | None = None,
        **overrides,
    ) -> list[str]:
        """Answer each prompt; contexts[i] (soft tokens or plain texts) come before prompts[i], in order,
        after preambles[i] when given (`format_preamble`); quoting `quote_from[i]` when given."""
        conversations = self.question_conversations(prompts, contexts, preambles)
        return self.generate_chat(conversations, settings, quote_from, **overrides)

    def stream(
        self,
        prompt: str,
        contexts: Sequence[Context] = (),
        settings: GenerationSettings | None = None,
        **overrides,
    ) -> Iterator[str]:
        """Like `generate` for one prompt, yielding text chunks token by token."""
        return self.stream_chat(self.question_conversations([prompt], [list(contexts)])[0], settings, **overrides)

    def reconstruct(
        self, soft_tokens: Sequence[torch.Tensor], settings: GenerationSettings | None = None, **overrides
    ) -> list[str]:
        """The autoencoder task: restate the text each set of soft tokens was compressed from.

        Defaults differ from QA: no repetition penalty (a restatement repeats words) and room for
        the longest text the soft tokens can stand for.
        """
        longest = max((int(s.shape[0]) for s in soft_tokens), default=1) * max(self.config.rates) + 16
        base = dataclasses.replace(settings or self.config.generation, repetition_penalty=1.0, max_new_tokens=longest)
        instruction = self.config.prompt.restate_instruction
        return self.generate([instruction] * len(soft_tokens), [[s] for s in soft_tokens], base, **overrides)

    def format_question(self, question: str) -> str:
        """The instruction after the documents."""
        return self.config.prompt.question_template.format(question=question)

    def format_preamble(self, question: str) -> str:
        """The text before the documents ("" unless the checkpoint was trained with a `question_preamble`)."""
        return self.config.prompt.question_preamble.format(question=question)

    def answer_questions(
        self,
        questions: Sequence[str],
        contexts: Sequence[Sequence[Context]],
        settings: GenerationSettings | None = None,
        quote_from: Sequence[Sequence[str]] | None = None,
        **overrides,
    ) -> list[str]:
        """Answer each question over its contexts (soft tokens or plain texts), laid out as KEFT lays out
        a QA sample: the question preamble (if any), the contexts in order, then the question template.
        With `quote_from` (the documents' texts, per question) every answer is a quote of them."""
        prompts = [self.format_question(q) for q in questions]
        preambles = [self.format_preamble(q) for q in questions]
        return self.generate(prompts, contexts, settings, preambles=preambles, quote_from=quote_from, **overrides)

    def answer(
        self,
        question: str,
        documents: Sequence[str],
        rate: int | None = None,
        settings: GenerationSettings | None = None,
        extractive: bool = False,
        **overrides,
    ) -> Answer:
        """Compress each document on its own (so each can be cached), then answer the question;
        `extractive`: the answer quotes the documents (`gmsa.extractive`, for factoid questions)."""
        start = time.perf_counter()
        soft = self.compress(list(documents), rate) if documents else []
        compressed = time.perf_counter()
        quotes = [list(documents)] if extractive else None
        text = self.answer_questions([question], [soft], settings, quotes, **overrides)[0]
        done = time.perf_counter()
        rate = rate if rate is not None else self.config.rates[0]
        context_tokens = sum(len(ids) for ids in self.tokenize_contexts(list(documents)))
        return Answer(
            text=text,
            rate=rate,
            context_tokens=context_tokens,
            soft_tokens=sum(int(s.shape[0]) for s in soft),
            compress_seconds=compressed - start,
            generate_seconds=done - compressed,
        )
