"""Training recipes: one validated dataclass, read from YAML, with `key=value` overrides.

Model fields (GMSAConfig) sit under `model:` in the YAML and are overridden as `model.key=value`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gmsa.config import GMSAConfig
from gmsa.errors import ConfigError

STAGES = ("ae", "keft")
PRECISIONS = ("fp32", "bf16-mixed", "bf16")


@dataclass
class TrainConfig:
    """One training stage.

    stage:            "ae" (encoder LoRA + LSA learn to be restated) or "keft" (decoder learns to answer).
    train_data:       files/folders: text or JSONL for AE; QA or reference JSONL for KEFT.
    eval_data:        held-out file for periodic evaluation; default: a slice held out of train_data.
    holdout:          without eval_data, the last `holdout` samples of train_data are never trained on
                      (default: eval_samples) and validation uses the first `eval_samples` of them.
    out_dir:          where checkpoints go (`step-*/`, `latest`, `final/`).
    compression:      "gmsa" (soft tokens) or "none" (documents as text: the uncompressed baseline).
    steps, batch_size, lr, lsa_lr, weight_decay, warmup_ratio, grad_clip: the optimisation. batch_size is
                      the whole batch: several processes (torchrun) each take an equal share of it.
    encoder_lr:       learning rate of the encoder LoRA where it trains (AE, or KEFT with keft_encoder);
                      default: lr. The LSA has its own (lsa_lr), the decoder adapter takes lr.
    max_text_tokens:  AE texts are cut to this many tokens (the start of each text).
    rate_curriculum:  [[rate, until_step], ...] in order: every sample of the steps before `until_step` uses
                      that rate, and later steps sample `model.rates`; the checkpoint serves `model.rates`
                      either way. AE warm start: [[1, 100], [2, 300]] (rates below the model's are allowed)
                      starts from the fitted readout's rate-1 map and widens each soft token's span step by
                      step. KEFT: [[4, 300]] spends every step of a 300-step run on rate 4.
    calibration_samples: AE from scratch fits the LSA's affine maps on this many training texts first.
    ae_decoder:       AE also trains the decoder adapter (`model.keft_mode`: its W_Q/W_K/W_V LoRA), which
                      KEFT then continues. Not the paper's AE, which freezes the decoder; on SmolLM2-135M the
                      frozen decoder is what caps reconstruction (BENCHMARKS.md, "A decoder that learns to read").
    keft_encoder:     KEFT also trains the encoder LoRA and the LSA (end to end: the answer loss reaches the
                      soft tokens). Not the paper's KEFT, which freezes them. Documents are still compressed
                      each on its own and without the question, so compressed documents stay cacheable.
    restate_fraction: KEFT batches keep this fraction of AE samples (restate one of the training documents,
                      cut to max_text_tokens), so that learning to answer does not unlearn reading soft tokens
                      exactly; restating gets the same fraction of the loss (each task's mean over its own
                      target tokens), not a share by token count. 0 (the paper's KEFT): answers only. On
                      SmolLM2-135M 0.25 kept restatements (BLEU-4 0.10 -> 0.22) and cost answers (F1 0.28 ->
                      0.23; BENCHMARKS.md, "Twice the steps at rate 4, and a restating mix weighted by task").
    teacher:          KEFT distils from this checkpoint (over the same base model), reading each answering
                      sample's documents as text: typically the fine-tuned uncompressed baseline. Its terms
                      join the answer loss with weights `distill_logits` (KL of the teacher's over the
                      student's next-token distribution on answer tokens) and `distill_hidden` (every layer's
                      states over the question and answer, scaled per dimension; gmsa/training/distill.py).
                      On SmolLM2-135M neither weight 1 nor 10 improved nq_dev answers (BENCHMARKS.md,
                      "Distilling from the fine-tuned uncompressed baseline").
    max_documents:    KEFT examples keep at most this many documents (gold documents first kept).
    rerank_documents: KEFT examples keep only this many of their `max_documents`, those closest to the question
                      in MiniLM space, in `rerank_order`: train as `gmsa-eval qa --rerank` hands the decoder
                      its documents.
    rerank_order:     "last" (the most relevant document next to the question) or "first".
    max_answer_tokens: KEFT targets are cut to this many tokens.
    precision:        "fp32"; "bf16-mixed" (fp32 weights, bf16 autocast on CUDA or CPU); or "bf16" (the frozen
                      base model's weights stored in bf16, half the memory, with bf16 autocast; the trained
                      weights, adapters and LSA, stay fp32 and the checkpoint holds them in fp32).
    gradient_checkpointing: recompute each layer's activations in the backward pass instead of keeping
                      them: the same losses for much less memory (the uncompressed baseline reads ~800-token
                      prompts through every layer), at the cost of a second forward pass.
    """

    stage: str = "ae"
    train_data: list[str] = field(default_factory=list)
    eval_data: str | None = None
    holdout: int | None = None
    out_dir: str = "runs/gmsa"
    init_from: str | None = None
    compression: str = "gmsa"
    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-4
    lsa_lr: float | None = None
    encoder_lr: float | None = None
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0
    max_text_tokens: int = 256
    calibration_samples: int = 256
    ae_decoder: bool = False
    keft_encoder: bool = False
    restate_fraction: float = 0.0
    rate_curriculum: list[list[int]] = field(default_factory=list)
    teacher: str | None = None
    distill_logits: float = 0.0
    distill_hidden: float = 0.0
    max_documents: int = 5
    rerank_documents: int | None = None
    rerank_order: str = "last"
    max_answer_tokens: int = 32
    eval_every: int = 200
    eval_samples: int = 32
    save_every: int = 200
    seed: int = 0
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    device: str | None = None
    log_every: int = 10
    model: GMSAConfig = field(default_factory=GMSAConfig)

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = GMSAConfig.from_dict(self.model)
        if isinstance(self.train_data, str):
            self.train_data = [self.train_data]
        if self.stage not in STAGES:
            raise ConfigError(f"stage={self.stage!r} is invalid: one of {STAGES}")
        if self.compression not in ("gmsa", "none"):
            raise ConfigError(f"compression={self.compression!r} is invalid: 'gmsa' or 'none'")
        if self.compression == "none" and self.stage == "ae":
            raise ConfigError("compression='none' only makes sense for stage 'keft' (the uncompressed baseline)")
        for name in ("steps", "batch_size", "max_text_tokens", "max_documents", "max_answer_tokens",
                     "eval_every", "eval_samples", "save_every", "log_every",
                     "calibration_samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name}={value!r} is invalid: an integer >= 1")
        for name in ("lr", "lsa_lr", "encoder_lr"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0):
                raise ConfigError(f"{name}={value!r} is invalid: a learning rate > 0")
        if self.holdout is not None and (not isinstance(self.holdout, int) or self.holdout < self.eval_samples):
            raise ConfigError(f"holdout={self.holdout!r} is invalid: an integer >= eval_samples ({self.eval_samples})")
        if self.rerank_documents is not None and not (
                isinstance(self.rerank_documents, int) and not isinstance(self.rerank_documents, bool)
                and 1 <= self.rerank_documents <= self.max_documents):
            raise ConfigError(f"rerank_documents={self.rerank_documents!r} is invalid: an integer from 1 to "
                              f"max_documents ({self.max_documents}), or null to keep them all in their order")
        if self.rerank_order not in ("first", "last"):
            raise ConfigError(f"rerank_order={self.rerank_order!r} is invalid: 'first' or 'last' (where the most "
                              f"relevant document goes)")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio={self.warmup_ratio!r} is invalid: a number in [0, 1)")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision={self.precision!r} is invalid: one of {PRECISIONS}")
        self._check_curriculum()
        if self.stage == "keft" and self.model.keft_mode == "none":
            raise ConfigError("stage 'keft' needs model.keft_mode='lora' or 'full' (what the decoder trains)")
        if not isinstance(self.ae_decoder, bool):
            raise ConfigError(f"ae_decoder={self.ae_decoder!r} is invalid: true or false")
        if self.ae_decoder and self.stage != "ae":
            raise ConfigError("ae_decoder=true is invalid for stage 'keft': KEFT always trains the decoder")
        if not isinstance(self.keft_encoder, bool):
            raise ConfigError(f"keft_encoder={self.keft_encoder!r} is invalid: true or false")
        if self.keft_encoder and (self.stage != "keft" or self.compression != "gmsa"):
            raise ConfigError("keft_encoder=true is only valid for stage 'keft' with compression 'gmsa' "
                              "(the AE always trains the encoder; the uncompressed baseline has none)")
        fraction = self.restate_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
            raise ConfigError(f"restate_fraction={fraction!r} is invalid: a number in [0, 1)")
        if fraction and (self.stage != "keft" or self.compression != "gmsa"):
            raise ConfigError(f"restate_fraction={fraction!r} is only valid for stage 'keft' with compression 'gmsa'")
        if fraction and round(fraction * self.batch_size) in (0, self.batch_size):
            raise ConfigError(f"restate_fraction={fraction!r} is invalid with batch_size={self.batch_size}: "
                              "it must leave at least one restating and one QA sample in each batch")
        self._check_distillation()
        if self.ae_decoder and self.model.keft_mode == "none":
            raise ConfigError("ae_decoder=true needs model.keft_mode='lora' or 'full' (the decoder adapter to train)")

    def _check_distillation(self) -> None:
        for name in ("distill_logits", "distill_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ConfigError(f"{name}={value!r} is invalid: a weight >= 0")
            if value and self.teacher is None:
                raise ConfigError(f"{name}={value!r} needs a teacher checkpoint to distil from (teacher=PATH)")
        if self.teacher is None:
            return
        if not isinstance(self.teacher, str) or not self.teacher:
            raise ConfigError(f"teacher={self.teacher!r} is invalid: the path of a checkpoint folder")
        if self.stage != "keft" or self.compression != "gmsa":
            raise ConfigError(f"teacher={self.teacher!r} is only valid for stage 'keft' with compression 'gmsa'")
        if not (self.distill_logits or self.distill_hidden):
            raise ConfigError(f"teacher={self.teacher!r} is unused: set distill_logits or distill_hidden > 0")

    def _check_curriculum(self) -> None:
        if self.rate_curriculum and self.compression != "gmsa":
            raise ConfigError(f"rate_curriculum={self.rate_curriculum!r} is invalid with compression "
                              f"{self.compression!r}: there is no compression rate")
        last_until = 0
        for entry in self.rate_curriculum:
            valid = isinstance(entry, (list, tuple)) and len(entry) == 2 and all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in entry)
            if not valid or entry[1] <= last_until:
                raise ConfigError(f"rate_curriculum entry {entry!r} is invalid: [rate, until_step], integers >= 1, "
                                  "until_step increasing")
            if self.model.segment_tokens % entry[0]:
                raise ConfigError(f"rate_curriculum rate {entry[0]!r} is invalid: it must divide "
                                  f"model.segment_tokens={self.model.segment_tokens}")
            last_until = entry[1]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _parse_value(text: str) -> Any:
    """`key=value` values are YAML scalars or lists: 1e-4, true, [4, 8], "text"."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads "1e-3" as a string
        except ValueError:
            return value
    return value


def _set(tree: dict[str, Any], dotted: str, value: Any, known: dict[str, Any]) -> None:
    keys = dotted.split(".")
    node, spec = tree, known
    for depth, key in enumerate(keys):
        if key not in spec:
            where = ".".join(keys[:depth]) or "the recipe"
            raise ConfigError(f"unknown key {dotted!r}: {where} has no field {key!r} (known: {sorted(spec)})")
        if depth == len(keys) - 1:
            node[key] = value
        else:
            node = node.setdefault(key, {})
            spec = spec[key]


def _known_fields(kind: type) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for f in dataclasses.fields(kind):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        result[f.name] = _known_fields(type(default)) if dataclasses.is_dataclass(default) else None
    return result


def load_recipe(path: str | Path | None, overrides: list[str] = (), **fixed: Any) -> TrainConfig:
    """A TrainConfig from a YAML recipe, `key=value` overrides, then `fixed` values (from CLI flags)."""
    tree: dict[str, Any] = {}
    known = _known_fields(TrainConfig)
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"cannot read recipe {path}: {error}") from error
        if not isinstance(loaded, dict):
            raise ConfigError(f"recipe {path} must be a mapping of fields")

        def walk(prefix: str, mapping: dict[str, Any]) -> None:
            for key, value in mapping.items():
                name = f"{prefix}{key}"
                if isinstance(value, dict) and name.count(".") < 2 and key in ("model", "prompt", "generation"):
                    walk(name + ".", value)
                else:
                    _set(tree, name, value, known)

        walk("", loaded)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key, value = item.split("=", 1)
        _set(tree, key.strip(), _parse_value(value), known)
    for key, value in fixed.items():
        if value is not None:
            _set(tree, key, value, known)
    return TrainConfig(**tree)
