"""GMSA: text -> tokens -> encoder -> group merge -> LSA -> soft tokens -> decoder.

One base causal LM in memory serves as encoder (first k layers + LoRA) and decoder (all
layers, + KEFT weights when trained); the LSA blocks are the only extra weights. This class
composes `gmsa.compress` (text -> soft tokens) and `gmsa.decode` (soft tokens + text -> answers).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from gmsa import answering, checkpoint
from gmsa.answer import Answer
from gmsa.answering import DEFAULT_BUDGET, Relevance
from gmsa.backbone.adapters import add_decoder_adapter, add_encoder_adapter
from gmsa.backbone.loading import load_base, resolve_device, resolve_dtype
from gmsa.compress import compressor
from gmsa.compress.align import LayerSemanticAlignment
from gmsa.config import EMBEDDED_BASE, GenerationSettings, GMSAConfig
from gmsa.decode.generate import decode_texts, generate_ids, stream_text
from gmsa.decode.prompt import ChatMessage, Context, check_positions, decoder_inputs, question_conversations
from gmsa.decode.structured import answer_processors
from gmsa.errors import ConfigError
from gmsa.plan import Budget, Plan

logger = logging.getLogger(__name__)

BUNDLED_DEFAULT = Path(__file__).parent / "checkpoints" / "default"
"""The checkpoint `GMSA.from_pretrained()` loads: trained over the embedded base model."""


class GMSA(nn.Module):
    """A GMSA context compressor and its decoder over one base causal LM.

    Build one with `GMSA.from_base` (untrained) or `GMSA.from_pretrained` (a checkpoint, or the
    bundled default). All public methods are thread-safe: one lock serialises model use.

        >>> model = GMSA.from_pretrained()                     # the bundled default (CUDA + bf16 when present)
        >>> model.answer("Where is the Eiffel Tower?", ["The Eiffel Tower is in Paris."]).text
        'Paris'
        >>> soft = model.compress(["a long document ..."], rate=8)   # [(ceil(n/8), H)], cacheable
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
        add_encoder_adapter(base, config)
        if config.keft_mode != "none":
            add_decoder_adapter(base, config)  # each leaves the plain base active outside `use_adapter` blocks
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
        if config is not None and not isinstance(config, GMSAConfig):
            raise ConfigError(f"config must be a GMSAConfig, not {type(config).__name__} (GMSAConfig.from_dict)")
        config = dataclasses.replace(config or GMSAConfig(), base_model=model_name_or_path)
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
        overrides: dict[str, Any] | None = None,
    ) -> GMSA:
        """Load a checkpoint folder; with no path, the bundled default over the embedded base model.

        `base_model` points at the base model when it lives elsewhere than the checkpoint says; its
        weights must match the fingerprint the checkpoint was trained on. `overrides` changes config
        fields before the model is built (training continues a checkpoint with other rates, a prompt, or
        a decoder adapter the checkpoint lacks, which then starts untrained); every trained tensor the
        checkpoint has must still fit.
        """
        if path is None:
            if not (BUNDLED_DEFAULT / "gmsa_config.json").is_file():
                logger.warning("no trained default checkpoint is bundled; returning an untrained GMSA")
                return cls.from_base(EMBEDDED_BASE, device=device, dtype=dtype)
            path = BUNDLED_DEFAULT
        overrides, (config, identity, tensors) = checkpoint.check_overrides(overrides), checkpoint.read_checkpoint(path)
        device = resolve_device(device)
        base_name = base_model or config.base_model
        base, tokenizer, fingerprint = load_base(
            base_name, device=device, dtype=resolve_dtype(device, dtype), trust_remote_code=trust_remote_code
        )
        checkpoint.check_base(path, identity, base_name, fingerprint)
        new_decoder = overrides.get("keft_mode", config.keft_mode) != "none" and config.keft_mode == "none"
        model = cls(base, tokenizer, dataclasses.replace(config, base_model=base_name, **overrides),
                    fingerprint)
        checkpoint.load_trained(model.trained_parameters(), tensors, source=str(path),
                     untrained=("decoder.",) if new_decoder else ())
        return model

    def save_pretrained(self, path: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write the trained weights (safetensors) and the config; the base model is not copied."""
        identity = {"name": self.config.base_model, "fingerprint": self.base_fingerprint}
        return checkpoint.write_checkpoint(path, self.config, identity, dict(self.trained_parameters()), dtype=dtype)

    def trained_parameters(self) -> dict[str, nn.Parameter]:
        """Checkpoint name -> parameter, for every weight GMSA trains."""
        return checkpoint.trained_parameters(self.base, self.lsa)

    def compressor_fingerprint(self) -> str:
        """A hash of everything that decides soft tokens (`gmsa.compress.compressor.compressor_fingerprint`)."""
        return compressor.compressor_fingerprint(self)

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
    def tokenize_contexts(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text as the encoder reads them (no special tokens)."""
        return compressor.tokenize_contexts(self.tokenizer, texts)

    def soft_tokens_of(
        self, token_ids: Sequence[Sequence[int]], rate: int, *, batch_size: int = 16, batch_tokens: int = 512
    ) -> list[torch.Tensor]:
        """Token id lists -> one (ceil(n_i / rate), H) soft-token tensor each; differentiable (training uses it)."""
        return compressor.soft_tokens_of(self, token_ids, rate, batch_size=batch_size, batch_tokens=batch_tokens)

    @torch.no_grad()
    def compress(
        self, texts: Sequence[str], rate: int | None = None, *, batch_size: int = 16, batch_tokens: int = 512
    ) -> list[torch.Tensor]:
        """Soft tokens of each text: a (ceil(n_i / rate), H) tensor per text, on the model's device, in the
        decoder's dtype. Long texts are compressed segment by segment (nothing is truncated); an empty or
        whitespace-only text gives an empty (0, H) tensor. Segments are batched by length, at most
        `batch_size` rows and `batch_tokens` padded tokens."""
        rate = self.config.check_rate(rate if rate is not None else self.config.rates[0])
        with self.lock:
            return self.soft_tokens_of(self.tokenize_contexts(texts), rate, batch_size=batch_size,
                                       batch_tokens=batch_tokens)

    # -- decoding --------------------------------------------------------------------------
    def decoder_inputs(self, conversations: Sequence[Sequence[ChatMessage]]) -> tuple[torch.Tensor, ...]:
        """Left-padded decoder inputs: embeds (B, T, H), mask (B, T), position_ids (B, T)."""
        return decoder_inputs(self.tokenizer, self.config.prompt, self.base.get_input_embeddings(), conversations)

    def question_conversations(self, prompts: Sequence[str], contexts: Sequence[Sequence[Context]] | None) -> list:
        """One conversation per prompt: contexts[i] (soft tokens or texts), then prompts[i]."""
        return question_conversations(self.config.prompt, prompts, contexts)

    def generation_settings(self, settings: GenerationSettings | None, overrides: dict) -> GenerationSettings:
        """`settings` (default: the checkpoint's) with `overrides` (GenerationSettings fields) applied."""
        if settings is not None and not isinstance(settings, GenerationSettings):
            raise ConfigError(f"settings must be a GenerationSettings, not {type(settings).__name__}")
        return (settings or self.config.generation).replace(**overrides)

    @torch.no_grad()
    def generate_chat(self, conversations: Sequence[Sequence[ChatMessage]], settings: GenerationSettings | None = None,
                      quote_from: Sequence[Sequence[str]] | None = None,
                      json_schema: Sequence[dict | None] | None = None, **overrides) -> list[str]:
        """Generate the next assistant turn of each conversation (a batch gives the same outputs as one-by-one calls).

        A message's content is a string or a list of text pieces and soft tokens (m, H), e.g.
        `{"role": "user", "content": [soft_a, "\\n", soft_b, "\\nWhat is ...?"]}`. `overrides` are
        GenerationSettings fields (max_new_tokens, do_sample, temperature, top_p, repetition_penalty,
        stop). `quote_from[i]`, when given, holds texts that answer i must quote (`gmsa.decode.extractive`);
        `json_schema[i]` a JSON schema answer i must follow (`gmsa.decode.structured`; None: free).
        """
        if not conversations:
            return []
        for name, given in (("quote_from", quote_from), ("json_schema", json_schema)):
            if given is not None and len(given) != len(conversations):
                raise ValueError(f"{name} has {len(given)} entries for {len(conversations)} conversations")
        resolved = self.generation_settings(settings, overrides)
        processors = answer_processors(self.tokenizer, quote_from, json_schema)
        with self.lock:
            embeds, mask, _ = self.decoder_inputs(conversations)
            check_positions(self.base.config, mask, resolved.max_new_tokens)
            ids = generate_ids(self.base, self.tokenizer, embeds, mask, resolved, logits_processor=processors)
        return decode_texts(self.tokenizer, ids, resolved, quote_from)

    def stream_chat(self, conversation: Sequence[ChatMessage], settings: GenerationSettings | None = None,
                    quote_from: Sequence[str] | None = None, json_schema: dict | None = None,
                    **overrides) -> Iterator[str]:
        """Like `generate_chat` for one conversation (quoting the texts `quote_from`, or following `json_schema`,
        when given), yielding text chunks token by token."""
        resolved = self.generation_settings(settings, overrides)
        processors = answer_processors(self.tokenizer, None if quote_from is None else [quote_from],
                                       None if json_schema is None else [json_schema])
        with self.lock, torch.no_grad():
            embeds, mask, _ = self.decoder_inputs([conversation])
        check_positions(self.base.config, mask, resolved.max_new_tokens)
        yield from stream_text(self.base, self.tokenizer, embeds, mask, resolved, self.lock, processors, quote_from)

    def generate(
        self,
        prompts: Sequence[str],
        contexts: Sequence[Sequence[Context]] | None = None,
        settings: GenerationSettings | None = None,
        quote_from: Sequence[Sequence[str]] | None = None,
        **overrides,
    ) -> list[str]:
        """Answer each prompt; contexts[i] (soft tokens or plain texts) come before prompts[i], in order;
        quoting `quote_from[i]` when given."""
        return self.generate_chat(self.question_conversations(prompts, contexts), settings, quote_from, **overrides)

    def stream(
        self, prompt: str, contexts: Sequence[Context] = (), settings: GenerationSettings | None = None, **overrides
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
        if isinstance(soft_tokens, torch.Tensor) or not all(isinstance(s, torch.Tensor) for s in soft_tokens):
            raise ConfigError("soft_tokens must be a list of (m, H) tensors, one per text")
        longest = max((int(s.shape[0]) for s in soft_tokens), default=1) * max(self.config.rates) + 16
        base = dataclasses.replace(settings or self.config.generation, repetition_penalty=1.0, max_new_tokens=longest)
        instruction = self.config.prompt.restate_instruction
        return self.generate([instruction] * len(soft_tokens), [[s] for s in soft_tokens], base, **overrides)

    def format_question(self, question: str) -> str:
        """The instruction after the documents."""
        return self.config.prompt.question_template.format(question=question)

    def answer_questions(
        self,
        questions: Sequence[str],
        contexts: Sequence[Sequence[Context]],
        settings: GenerationSettings | None = None,
        quote_from: Sequence[Sequence[str]] | None = None,
        **overrides,
    ) -> list[str]:
        """Answer each question over its contexts (soft tokens or plain texts), laid out as KEFT lays out
        a QA sample: the contexts in order, then the question template. With `quote_from` (the documents'
        texts, per question) every answer is a quote of them."""
        prompts = [self.format_question(q) for q in questions]
        return self.generate(prompts, contexts, settings, quote_from=quote_from, **overrides)

    def plan(self, question: str, documents: Sequence[str], budget: Budget = DEFAULT_BUDGET,
             relevance: Relevance = None) -> Plan:
        """How `answer` would send each document within `budget` (`gmsa.plan`): whole, at a rate, or dropped;
        `relevance`: None (MiniLM), "order", scores, or a callable (`gmsa.answering.Relevance`)."""
        return answering.plan_for(self, question, documents, budget, relevance)

    def answer(self, question: str, documents: Sequence[str], rate: int | None = None, budget: Budget | None = None,
               relevance: Relevance = None, settings: GenerationSettings | None = None, extractive: bool = False,
               **overrides) -> Answer:
        """Answer over documents within a `budget` (default "auto": the most relevant whole, the rest as soft
        tokens) or at one fixed `rate`; `extractive`: the answer quotes the documents (`gmsa.answering`)."""
        return answering.answer(self, question, documents, rate, budget, relevance, settings, extractive, **overrides)
