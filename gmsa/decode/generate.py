"""The decoder: the base model (with the KEFT adapter when present) generating from input embeddings."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from threading import Lock, Thread

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    RepetitionPenaltyLogitsProcessor,
    TextIteratorStreamer,
)

from gmsa.backbone.adapters import decoder_adapter, use_adapter
from gmsa.config import GenerationSettings
from gmsa.decode.extractive import respell


def _generation_config(tokenizer: PreTrainedTokenizerBase, settings: GenerationSettings) -> GenerationConfig:
    options = dict(
        max_new_tokens=settings.max_new_tokens,
        min_new_tokens=settings.min_new_tokens or None,
        do_sample=settings.do_sample,
        repetition_penalty=settings.repetition_penalty,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if settings.do_sample:
        options.update(temperature=settings.temperature, top_p=settings.top_p)
    if settings.stop:
        options.update(stop_strings=list(settings.stop))
    return GenerationConfig(**options)


class _QuietPenaltyOverride(logging.Filter):
    """Drops transformers' notice that our repetition penalty replaces its own (`_processors` does it on purpose)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "RepetitionPenaltyLogitsProcessor" not in record.getMessage()


logging.getLogger("transformers.generation.utils").addFilter(_QuietPenaltyOverride())


def _processors(settings: GenerationSettings, extra: LogitsProcessorList | None) -> LogitsProcessorList:
    """The repetition penalty over the generated tokens of each row, then `extra`.

    transformers' own penalty, given `inputs_embeds` and a left-padded batch, skips each row's first p generated
    tokens (p: the row's padding, meant for prompt ids that embeds do not have; 5.23), so a batched answer differed
    from the same question asked alone; newer releases drop the penalty for embeds. Ours, of the same class, takes
    its place in the list (same order) and penalises every generated token, batched or not.
    """
    own = [RepetitionPenaltyLogitsProcessor(settings.repetition_penalty)] if settings.repetition_penalty != 1.0 else []
    return LogitsProcessorList(own + list(extra or []))


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """Text up to the first stop sequence (exclusive)."""
    cut = min((text.find(s) for s in stop if s in text), default=-1)
    return text if cut < 0 else text[:cut]


@torch.no_grad()
def generate_ids(
    base: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    embeds: torch.Tensor,
    mask: torch.Tensor,
    settings: GenerationSettings,
    streamer: TextIteratorStreamer | None = None,
    logits_processor: LogitsProcessorList | None = None,
) -> torch.Tensor:
    """(B, T, H) left-padded prompts -> (B, N) new token ids, with the decoder's adapter."""
    with use_adapter(base, decoder_adapter(base)), warnings.catch_warnings():
        # Soft tokens have no ids, so the penalty can only see generated tokens (as in the reference code).
        warnings.filterwarnings("ignore", message=".*repetition_penalty.*inputs_embeds.*")
        return base.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            generation_config=_generation_config(tokenizer, settings),
            tokenizer=tokenizer if settings.stop else None,
            streamer=streamer,
            logits_processor=_processors(settings, logits_processor),
        )


def decode_texts(tokenizer: PreTrainedTokenizerBase, ids: torch.Tensor, settings: GenerationSettings,
                 quote_from: Sequence[Sequence[str]] | None = None) -> list[str]:
    """(B, N) ids -> texts cut at a stop sequence; quotes of `quote_from[i]` in the sources' spelling."""
    texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
    if quote_from is not None:
        texts = [respell(text, sources) for text, sources in zip(texts, quote_from)]
    return [cut_at_stop(text, settings.stop).strip() for text in texts]


def stream_text(
    base: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    embeds: torch.Tensor,
    mask: torch.Tensor,
    settings: GenerationSettings,
    lock: Lock,
    logits_processor: LogitsProcessorList | None = None,
    quote_from: Sequence[str] | None = None,
) -> Iterator[str]:
    """Yield text chunks as the decoder produces them (one prompt, (1, T, H)).

    Generation runs in a worker thread holding `lock`; stop sequences end the stream. Quotes of
    `quote_from` come in the sources' spelling, as `decode_texts` gives them.
    """
    streamer = TextIteratorStreamer(tokenizer, skip_special_tokens=True)

    def work() -> None:
        with lock:
            generate_ids(base, tokenizer, embeds, mask, settings, streamer, logits_processor)

    worker = Thread(target=work, daemon=True)
    worker.start()
    hold = max((len(s) for s in settings.stop), default=1) - 1  # a tail that may start a stop sequence
    raw, text, emitted, stopped = "", "", 0, False
    for chunk in streamer:
        if stopped:
            continue  # drain, so the worker can finish
        raw += chunk
        # Quotes are shown as far as their spelling is settled (respell: the same as the whole answer's).
        text = raw if quote_from is None else respell(raw, quote_from, settled_only=True)
        visible = cut_at_stop(text, settings.stop)
        stopped = len(visible) < len(text)
        if not stopped and hold:
            visible = text[: len(text) - hold]
        if len(visible) > emitted:
            yield visible[emitted:]
            emitted = len(visible)
    worker.join()
    text = raw if quote_from is None else cut_at_stop(respell(raw, quote_from), settings.stop)
    if not stopped and len(text) > emitted:
        yield text[emitted:]
