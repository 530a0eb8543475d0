"""JSON answers: generation constrained to a JSON schema, or to any JSON object, by lm-format-enforcer.

A row's allowed next tokens come from lm-format-enforcer's `TokenEnforcer` over the tokens generated so far (the
decoder reads embeddings, so a row's `input_ids` are exactly its answer): a constrained answer is valid JSON for
its schema once it ends, and it can only end there. Rows without a schema are left free, so one batch mixes both.
lm-format-enforcer is optional (`pip install "gmsa[langchain]"` brings it); it is imported on first use.

    model.generate_chat([conversation], json_schema=[{"type": "object", "properties": {"city": {"type": "string"}},
                                                      "required": ["city"]}])   # -> ['{"city": "Paris"}']
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedTokenizerBase

from gmsa.decode.extractive import quote_processors
from gmsa.errors import ConfigError, GMSAError

ANY_JSON_OBJECT: dict = {"type": "object"}
"""The schema of JSON mode: any JSON object."""
MAX_WHITESPACE = 1
"""Whitespace allowed in a row between JSON tokens (the library's default, 12, lets a model pad the reply with
tabs until `max_new_tokens` cuts the JSON short)."""


def _enforcer_module() -> Any:
    try:
        import lmformatenforcer
    except ImportError:
        raise GMSAError('JSON output needs lm-format-enforcer: pip install "gmsa[langchain]" '
                        "(or pip install lm-format-enforcer)") from None
    return lmformatenforcer


@functools.lru_cache(maxsize=4)
def tokenizer_data(tokenizer: PreTrainedTokenizerBase) -> Any:
    """lm-format-enforcer's view of a vocabulary (each token's text and whether it starts a word); built once per
    tokenizer (a few seconds for 49k tokens)."""
    enforcer = _enforcer_module()
    try:  # the library's own builder; its 0.11.3 release cannot import it under transformers 5 (fixed upstream, #175)
        from lmformatenforcer.integrations.transformers import build_token_enforcer_tokenizer_data

        return build_token_enforcer_tokenizer_data(tokenizer)
    except ImportError:
        pass
    vocab_size = len(tokenizer)
    zero = tokenizer.encode("0", add_special_tokens=False)[-1]
    special = set(tokenizer.all_special_ids)
    regular = []
    for token in range(vocab_size):
        if token in special:
            continue
        after_zero = tokenizer.decode([zero, token])[1:]  # "0" first keeps a word-start token's leading space
        regular.append((token, after_zero, len(after_zero) > len(tokenizer.decode([token]))))

    def decode(tokens: list[int]) -> str:
        return tokenizer.decode(tokens).rstrip("\ufffd")  # an unfinished multi-byte character is not text yet

    return enforcer.TokenEnforcerTokenizerData(regular, decode, tokenizer.eos_token_id, False, vocab_size)


def check_schema(schema: object, where: str = "json_schema") -> dict:
    """A JSON schema must be a dict (from `pydantic.BaseModel.model_json_schema()` or written by hand)."""
    if not isinstance(schema, dict):
        raise ConfigError(f"{where} must be a JSON schema (a dict), not {type(schema).__name__}")
    return schema


def _enforcer(tokenizer: PreTrainedTokenizerBase, schema: dict) -> Any:
    library = _enforcer_module()
    try:
        parser = library.JsonSchemaParser(schema)
    except Exception as error:  # noqa: BLE001 - the library's own validation errors vary by schema
        raise ConfigError(f"json_schema is not a JSON schema lm-format-enforcer can follow ({error})") from None
    enforcer = library.TokenEnforcer(tokenizer_data(tokenizer), parser)
    enforcer.root_parser.config.max_consecutive_whitespaces = MAX_WHITESPACE  # TokenEnforcer replaces a given config
    return enforcer


class JsonConstraint(LogitsProcessor):
    """Row i may only continue a JSON value valid for `schemas[i]` (None: row i is free).

    Input: input_ids (B, t) the tokens generated so far, scores (B, V). Output: scores with the disallowed
    tokens of each constrained row at -inf.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, schemas: Sequence[dict | None]) -> None:
        self.enforcers = [None if schema is None else _enforcer(tokenizer, check_schema(schema)) for schema in schemas]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row, enforcer in enumerate(self.enforcers):
            if enforcer is None:
                continue
            allowed = enforcer.get_allowed_tokens(input_ids[row].tolist()).allowed_tokens
            allowed = torch.tensor([t for t in allowed if t < scores.shape[-1]], dtype=torch.long,
                                   device=scores.device)
            mask = torch.full_like(scores[row], float("-inf"))  # (V,)
            mask[allowed] = 0
            scores[row] = scores[row] + mask
        return scores


def answer_processors(tokenizer: PreTrainedTokenizerBase, quote_from: Sequence[Sequence[str]] | None,
                      json_schema: Sequence[dict | None] | None) -> LogitsProcessorList | None:
    """The logits processors of a batch: quotes of `quote_from[i]` (`gmsa.decode.extractive`) or JSON for
    `json_schema[i]`; None when nothing is constrained."""
    if json_schema is None or all(schema is None for schema in json_schema):
        return quote_processors(tokenizer, quote_from)
    if quote_from is not None:
        raise ConfigError("an answer is either a quote of the documents (extractive) or JSON, not both")
    return LogitsProcessorList([JsonConstraint(tokenizer, json_schema)])
