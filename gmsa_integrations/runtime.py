"""What both integrations share: one loaded GMSA per (checkpoint, device, dtype), the soft-token
cache, and turning chat messages that contain marked documents into GMSA conversations.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import torch

from gmsa import GMSA
from gmsa.compress.compressor import soft_tokens_at_rates
from gmsa.decode.batching import GenerationBatcher
from gmsa.decode.prompt import render_chat
from gmsa.errors import ConfigError
from gmsa.store import SoftTokenStore
from gmsa_integrations.cache import SoftTokenCache, default_cache
from gmsa_integrations.markup import MarkedDocument, split_marked

logger = logging.getLogger(__name__)

_models: dict[tuple[str, str, str], tuple[GMSA, str, GenerationBatcher]] = {}
_models_lock = threading.Lock()


def shared_model(checkpoint: str | None, device: str | None, dtype: str | None) -> tuple[GMSA, str, GenerationBatcher]:
    """The GMSA for this checkpoint/device/dtype, its compressor fingerprint and the batcher that gathers
    concurrent requests to it, loaded once per process."""
    from gmsa.backbone.loading import resolve_device

    resolved_device = str(resolve_device(device))
    key = (str(Path(checkpoint).resolve()) if checkpoint else "<bundled default>", resolved_device, str(dtype))
    with _models_lock:
        if key not in _models:
            model = GMSA.from_pretrained(checkpoint, device=resolved_device, dtype=dtype)
            _models[key] = (model, model.compressor_fingerprint(), GenerationBatcher(model))
        return _models[key]


_stores: dict[str, SoftTokenStore] = {}


def shared_store(path: str | Path) -> SoftTokenStore:
    """The ingest store at `path` (`gmsa index`), its shard headers read once per process."""
    key = str(Path(path).resolve())
    with _models_lock:
        if key not in _stores:
            _stores[key] = SoftTokenStore(key)
        return _stores[key]


@dataclass
class Usage:
    """Token counts of one prompt as the decoder reads it."""

    text_tokens: int = 0
    soft_tokens: int = 0
    document_tokens: int = 0  # what the compressed documents would cost as text
    output_tokens: int = 0

    @property
    def input_tokens(self) -> int:
        return self.text_tokens + self.soft_tokens


class GMSARuntime:
    """Lazy access to a shared GMSA, with cached compression.

    Nothing heavy happens in __init__; the model loads on first use and is shared by every
    runtime (hence every compressor, chat model or LLM) on the same checkpoint/device/dtype.
    """

    def __init__(self, checkpoint: str | None = None, device: str | None = None, dtype: str | None = None,
                 cache: SoftTokenCache | None = None, store: str | Path | None = None) -> None:
        self.checkpoint, self.device, self.dtype = checkpoint, device, dtype
        self.cache = cache if cache is not None else default_cache()
        self.store = shared_store(store) if store is not None else None
        self.encoder_texts = 0
        """Texts this runtime had to compress (neither the store nor the cache had them)."""

    @property
    def model(self) -> GMSA:
        return shared_model(self.checkpoint, self.device, self.dtype)[0]

    @property
    def fingerprint(self) -> str:
        return shared_model(self.checkpoint, self.device, self.dtype)[1]

    def check_rate(self, rate: int | None) -> int:
        return self.model.config.check_rate(rate if rate is not None else self.model.config.rates[0])

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.model.tokenize_contexts(list(texts))]

    def compress(self, texts: Sequence[str], rate: int) -> list[torch.Tensor]:
        """Soft tokens of each text at `rate`: cached ones reused, the rest compressed in one batch."""
        return self.compress_many([(text, rate) for text in texts])

    def compress_many(self, requests: Sequence[tuple[str, int]]) -> list[torch.Tensor]:
        """Soft tokens of each (text, rate): cached ones reused, the rest compressed in one encoder pass for
        every rate (`gmsa.compress.compressor.soft_tokens_at_rates`); the cache holds each (text, rate) once."""
        model, fingerprint, _ = shared_model(self.checkpoint, self.device, self.dtype)
        distinct = list(dict.fromkeys(text for text, _ in requests))
        tokens = dict(zip(distinct, map(len, model.tokenize_contexts(distinct))))
        found = [self._lookup(fingerprint, rate, text, (math.ceil(tokens[text] / rate), model.hidden_size))
                 for text, rate in requests]
        missing: dict[str, set[int]] = {}
        for (text, rate), soft in zip(requests, found):
            if soft is None:
                missing.setdefault(text, set()).add(rate)
        if missing:
            texts = sorted(missing)
            self.encoder_texts += len(texts)
            for rate in {r for rates in missing.values() for r in rates}:
                model.config.check_rate(rate)
            with model.lock, torch.no_grad():
                fresh = soft_tokens_at_rates(model, model.tokenize_contexts(texts), [sorted(missing[t]) for t in texts])
            computed = dict(zip(texts, fresh))
            for text, by_rate in computed.items():
                for rate, soft in by_rate.items():
                    self.cache.put(fingerprint, rate, text, soft)
            found = [soft if soft is not None else computed[text][rate] for (text, rate), soft in zip(requests, found)]
        return [soft.to(model.device, model.base.dtype) for soft in found]

    def _lookup(self, fingerprint: str, rate: int, text: str, shape: tuple[int, int]) -> torch.Tensor | None:
        """Soft tokens from the ingest store (`gmsa.store`), else the cache (an entry of another shape is
        recomputed), else None."""
        stored = self.store.get(fingerprint, rate, text, shape) if self.store is not None else None
        return stored if stored is not None else self.cache.get(fingerprint, rate, text, shape)

    def resolve(self, text: str) -> tuple[list[str | torch.Tensor], Usage]:
        """A message's text with its marked documents replaced by soft tokens.

        Whitespace between adjacent documents becomes the model's document separator, and the
        text after the last document starts on a new line: the layout GMSA is trained on, so a
        chain's prompt reads exactly like `GMSA.answer`'s.
        """
        model = self.model
        pieces = split_marked(text)
        documents = [p for p in pieces if isinstance(p, MarkedDocument)]
        usage = Usage()
        soft_by_piece: dict[int, torch.Tensor] = {}
        for rate in sorted({self._usable_rate(d.rate) for d in documents}):
            indices = [i for i, p in enumerate(pieces)
                       if isinstance(p, MarkedDocument) and self._usable_rate(p.rate) == rate]
            for index, soft in zip(indices, self.compress([pieces[i].text for i in indices], rate)):
                soft_by_piece[index] = soft
        content: list[str | torch.Tensor] = []
        for index, piece in enumerate(pieces):
            if isinstance(piece, MarkedDocument):
                content.append(soft_by_piece[index])
                usage.soft_tokens += int(soft_by_piece[index].shape[0])
                continue
            previous_is_document = index > 0 and isinstance(pieces[index - 1], MarkedDocument)
            next_is_document = index + 1 < len(pieces) and isinstance(pieces[index + 1], MarkedDocument)
            if previous_is_document and next_is_document and not piece.strip():
                piece = model.config.prompt.document_separator
            elif previous_is_document:
                piece = "\n" + piece.lstrip()
            elif next_is_document and not piece.strip():
                continue
            content.append(piece)
        usage.document_tokens = sum(self.count_tokens([d.text for d in documents]))
        return content, usage

    def conversation(self, messages: Sequence[tuple[str, str]]) -> tuple[list[dict], Usage]:
        """(role, text) messages -> a GMSA conversation with marked documents as soft tokens, and its usage."""
        usage, conversation = Usage(), []
        for role, text in messages:
            content, part = self.resolve(text)
            usage.soft_tokens += part.soft_tokens
            usage.document_tokens += part.document_tokens
            conversation.append({"role": role, "content": content})
        parts = render_chat(self.model.tokenizer, self.model.config.prompt, conversation)
        usage.text_tokens = sum(int(p.shape[0]) for p in parts if not p.is_floating_point())
        return conversation, usage

    @staticmethod
    def quoted_texts(messages: Sequence[tuple[str, str]], extractive: bool) -> list[str] | None:
        """The marked documents' texts, which an extractive reply must quote; None when not extractive."""
        if not extractive:
            return None
        return [p.text for _, text in messages for p in split_marked(text) if isinstance(p, MarkedDocument)]

    def submit(self, messages: Sequence[tuple[str, str]], extractive: bool = False, json_schema: dict | None = None,
               **settings) -> tuple[Future, Usage]:
        """Queue the assistant's reply to (role, text) messages: a Future of its text, and the usage so far.
        `settings` are GenerationSettings fields; `extractive`: the reply quotes the compressed documents
        (`gmsa.decode.extractive`); `json_schema`: the reply is JSON following it (`gmsa.decode.structured`).
        Concurrent requests share batched generate calls (`gmsa.decode.batching`)."""
        conversation, usage = self.conversation(messages)
        quotes = self.quoted_texts(messages, extractive)
        batcher = shared_model(self.checkpoint, self.device, self.dtype)[2]
        return batcher.submit(conversation, quote_from=quotes, json_schema=json_schema, **settings), usage

    def generate(self, messages: Sequence[tuple[str, str]], extractive: bool = False, json_schema: dict | None = None,
                 **settings) -> tuple[str, Usage]:
        """The assistant's reply to (role, text) messages and its usage (`submit`, waited for)."""
        reply, usage = self.submit(messages, extractive, json_schema, **settings)
        text = reply.result()
        usage.output_tokens = self.count_tokens([text])[0]
        return text, usage

    async def agenerate(self, messages: Sequence[tuple[str, str]], extractive: bool = False,
                        json_schema: dict | None = None, **settings) -> tuple[str, Usage]:
        """`generate` for async code: the prompt is built in a worker thread (it may compress), and the reply is
        awaited without holding a thread, so the event loop's executor never caps how many requests batch."""
        reply, usage = await asyncio.to_thread(self.submit, messages, extractive, json_schema, **settings)
        text = await asyncio.wrap_future(reply)
        usage.output_tokens = self.count_tokens([text])[0]
        return text, usage

    def stream(self, messages: Sequence[tuple[str, str]], extractive: bool = False, json_schema: dict | None = None,
               **settings) -> tuple[Iterator[str], Usage]:
        """Reply chunks as they come, and the usage (output_tokens filled in once the chunks run out)."""
        conversation, usage = self.conversation(messages)
        quotes = self.quoted_texts(messages, extractive)

        def chunks() -> Iterator[str]:
            text = ""
            for chunk in self.model.stream_chat(conversation, quote_from=quotes, json_schema=json_schema, **settings):
                text += chunk
                yield chunk
            usage.output_tokens = self.count_tokens([text.strip()])[0]  # as generate() counts its stripped reply

        return chunks(), usage

    def _usable_rate(self, rate: int) -> int:
        rates = self.model.config.rates
        if rate in rates:
            return rate
        closest = min(rates, key=lambda r: abs(r - rate))
        logger.warning("rate %d is not one this checkpoint was trained for %s; using %d", rate, rates, closest)
        return closest

    def rank(self, query: str, texts: Sequence[str]) -> list[float]:
        """MiniLM cosine similarity of each text to the query."""
        from gmsa.similarity import embedder_device, relevance

        return relevance(query, list(texts), embedder_device(self.model.device))


def generation_settings(max_tokens: int | None, temperature: float | None, top_p: float | None,
                        repetition_penalty: float | None, stop: Sequence[str] | None, extractive: bool = False) -> dict:
    """Framework-style sampling options -> GMSA GenerationSettings overrides (temperature 0: greedy), and
    whether the reply quotes the compressed documents (`GMSARuntime.generate`'s `extractive`)."""
    if temperature is not None and not (isinstance(temperature, (int, float)) and math.isfinite(temperature)
                                        and temperature >= 0):
        raise ConfigError(f"temperature={temperature!r} is invalid: a number >= 0 (0: greedy)")
    sampling = None if temperature is None else temperature > 0  # None: the checkpoint's setting
    return {
        "max_new_tokens": max_tokens,
        "do_sample": sampling,
        "temperature": temperature if sampling else None,
        "top_p": top_p if sampling else None,
        "repetition_penalty": repetition_penalty,
        "stop": tuple(stop) if stop else (),
        "extractive": bool(extractive),
    }
