"""Training recipes: one validated dataclass, read from YAML, with `key=value` overrides.

Model fields (GMSAConfig) sit under `model:` in the YAML and are overridden as `model.key=value`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gmsa.config import GMSAConfig, check_field_types
from gmsa.errors import ConfigError

STAGES = ("ae", "keft")
PRECISIONS = ("fp32", "bf16-mixed", "bf16")


@dataclass
class TrainConfig:
    """One training stage: `gmsa-train ae|keft --config RECIPE key=value ...`."""

    stage: str = "ae"
    """"ae" (encoder LoRA + LSA learn to be restated) or "keft" (the decoder learns to answer)."""
    train_data: list[str] = field(default_factory=list)
    """Files or folders: text or JSONL for AE; QA or reference-schema JSONL for KEFT."""
    eval_data: str | None = None
    """A held-out file for periodic evaluation; default: a slice held out of train_data."""
    holdout: int | None = None
    """Without eval_data, the last `holdout` samples of train_data are never trained on (default:
    eval_samples) and validation uses the first `eval_samples` of them."""
    out_dir: str = "runs/gmsa"
    """Where checkpoints go (`step-*/`, `latest`, `final/`)."""
    init_from: str | None = None
    """The checkpoint this stage starts from (`--from`; KEFT: the AE checkpoint)."""
    compression: str = "gmsa"
    """"gmsa" (soft tokens) or "none" (documents as text: the fine-tuned uncompressed baseline)."""
    steps: int = 1000
    """Optimizer steps."""
    batch_size: int = 8
    """The whole batch: several processes (torchrun) each take an equal share of it."""
    lr: float = 1e-4
    """Learning rate of the decoder adapter (and of everything without its own)."""
    lsa_lr: float | None = None
    """Learning rate of the LSA; default: lr."""
    encoder_lr: float | None = None
    """Learning rate of the encoder LoRA where it trains (AE, or KEFT with keft_encoder); default: lr."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_ratio: float = 0.1
    """Share of the steps with a linear warm-up before the cosine decay."""
    grad_clip: float = 1.0
    """Gradient norm clipping."""
    max_text_tokens: int = 256
    """AE texts are cut to this many tokens (the start of each text)."""
    calibration_samples: int = 256
    """AE from scratch fits the LSA's affine maps and readout on this many training texts first."""
    ae_decoder: bool = False
    """AE also trains the decoder adapter (`model.keft_mode`), which KEFT then continues. Not the paper's AE,
    which freezes the decoder; on SmolLM2-135M the frozen decoder is what caps reconstruction (lab/LOG.md)."""
    keft_encoder: bool = False
    """KEFT also trains the encoder LoRA and the LSA (the answer loss reaches the soft tokens). Documents are
    still compressed each on its own and without the question, so compressed documents stay cacheable."""
    rate_curriculum: list[list[int]] = field(default_factory=list)
    """[[rate, until_step], ...] in order: every sample of the steps before `until_step` uses that rate, and
    later steps sample `model.rates`. AE warm start: [[1, 100], [2, 300]] (rates below the model's are
    allowed) starts from the fitted readout's rate-1 map. KEFT: [[4, 300]] spends every step on rate 4."""
    budgets: list[float] = field(default_factory=list)
    """KEFT: a mixed reader. Each sample's documents reach the decoder as the budget planner sends them
    (`gmsa.plan`: the most relevant whole, the rest as soft tokens at rates that follow relevance, ranked by
    MiniLM) within a budget drawn from this list (fractions of its documents' tokens). []: every document at
    the sample's rate (the paper)."""
    random_layouts: float = 0.0
    """With budgets: the share of samples whose documents get random forms (text or any rate) instead, so the
    gold document is not always the one sent whole."""
    text_layouts: float = 0.0
    """With budgets: the share of samples sent as text only within the drawn budget (the most relevant documents
    whole, the next one's first tokens: the evaluation's rerank-text), so the reader keeps reading several whole
    documents as well as a reader trained on text (lab/LOG.md). With random_layouts at most 1 in all."""
    max_documents: int = 5
    """KEFT examples keep at most this many documents (gold documents always kept)."""
    max_answer_tokens: int = 32
    """KEFT targets are cut to this many tokens."""
    eval_every: int = 200
    """Validate every this many steps (and at the last)."""
    eval_samples: int = 32
    """Held-out samples validation reads."""
    save_every: int = 200
    """Checkpoint every this many steps (and at the last); a killed run resumes from the newest."""
    seed: int = 0
    """Seeds the adapters' initialisation and the batches (a function of seed and step)."""
    precision: str = "fp32"
    """"fp32"; "bf16-mixed" (fp32 weights, bf16 autocast on CUDA or CPU); or "bf16" (the frozen base model's
    weights stored in bf16, half the memory, with bf16 autocast; trained weights stay fp32, as saved)."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward pass: the same losses for much less memory
    (the uncompressed baseline reads ~800-token prompts through every layer). Only where the encoder does
    not train: one adapter is active while the backward pass recomputes layers."""
    device: str | None = None
    """"cpu", "cuda", ...; default: what accelerate picks (CUDA when present)."""
    log_every: int = 10
    """Write the loss to log.jsonl every this many steps."""
    model: GMSAConfig = field(default_factory=GMSAConfig)
    """The model's config (`model:` in YAML, `model.key=value` overrides)."""

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = GMSAConfig.from_dict(self.model)
        if not isinstance(self.model, GMSAConfig):
            raise ConfigError(f"model={self.model!r:.80} is invalid: a mapping of GMSAConfig fields")
        if isinstance(self.train_data, str):
            self.train_data = [self.train_data]
        check_field_types(self)
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
        if not self.grad_clip > 0:
            raise ConfigError(f"grad_clip={self.grad_clip!r} is invalid: a gradient norm > 0")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay={self.weight_decay!r} is invalid: a number >= 0")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed={self.seed!r} is invalid: an integer in [0, 2**32)")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio={self.warmup_ratio!r} is invalid: a number in [0, 1)")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision={self.precision!r} is invalid: one of {PRECISIONS}")
        self._check_curriculum()
        if self.stage == "keft" and self.model.keft_mode == "none":
            raise ConfigError("stage 'keft' needs model.keft_mode='lora' or 'full' (what the decoder trains)")
        for name in ("ae_decoder", "keft_encoder", "gradient_checkpointing"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r} is invalid: true or false")
        if self.ae_decoder and self.stage != "ae":
            raise ConfigError("ae_decoder=true is invalid for stage 'keft': KEFT always trains the decoder")
        if self.keft_encoder and (self.stage != "keft" or self.compression != "gmsa"):
            raise ConfigError("keft_encoder=true is only valid for stage 'keft' with compression 'gmsa' "
                              "(the AE always trains the encoder; the uncompressed baseline has none)")
        if self.ae_decoder and self.model.keft_mode == "none":
            raise ConfigError("ae_decoder=true needs model.keft_mode='lora' or 'full' (the decoder adapter to train)")
        if not isinstance(self.budgets, list) or not all(
                isinstance(b, (int, float)) and not isinstance(b, bool) and 0 < b <= 1 for b in self.budgets):
            raise ConfigError(f"budgets={self.budgets!r} is invalid: a list of fractions in (0, 1]")
        self.budgets = [float(b) for b in self.budgets]  # `[1]` is the whole documents, not one position
        if self.budgets and (self.stage != "keft" or self.compression != "gmsa"):
            raise ConfigError("budgets are only valid for stage 'keft' with compression 'gmsa' (a mixed reader)")
        for name in ("random_layouts", "text_layouts"):
            share = getattr(self, name)
            if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
                raise ConfigError(f"{name}={share!r} is invalid: a number in [0, 1]")
            if share and not self.budgets:
                raise ConfigError(f"{name}={share!r} needs budgets (a mixed reader)")
        if self.random_layouts + self.text_layouts > 1 + 1e-9:
            raise ConfigError(f"random_layouts={self.random_layouts!r} + text_layouts={self.text_layouts!r} is "
                              "more than 1: they are shares of the samples")
        if self.gradient_checkpointing and (self.stage == "ae" or self.keft_encoder):
            raise ConfigError("gradient_checkpointing=true is only valid where the encoder does not train (KEFT "
                              "without keft_encoder): the backward pass recomputes layers with one adapter active")

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
    return yaml.safe_load(text)


def _typed(value: Any, annotation: str | None) -> Any:
    """YAML 1.1 reads `1e-3` (no dot) as a string: a number-like string becomes a float where one is due."""
    if isinstance(value, list) and annotation == "list[float]":
        return [_typed(item, "float") for item in value]
    if isinstance(value, str) and annotation and annotation.startswith("float"):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _set(tree: dict[str, Any], dotted: str, value: Any, known: dict[str, Any]) -> None:
    keys = dotted.split(".")
    node, spec = tree, known
    for depth, key in enumerate(keys):
        if not isinstance(spec, dict) or key not in spec:
            where = ".".join(keys[:depth]) or "the recipe"
            fields = sorted(spec) if isinstance(spec, dict) else []
            raise ConfigError(f"unknown key {dotted!r}: {where} has no field {key!r} (known: {fields})")
        if depth == len(keys) - 1:
            node[key] = _typed(value, spec[key] if isinstance(spec[key], str) else None)
        else:
            node = node.setdefault(key, {})
            spec = spec[key]


def _known_fields(kind: type) -> dict[str, Any]:
    """Field name -> its annotation (a string), or the nested dataclass's known fields."""
    result: dict[str, Any] = {}
    for f in dataclasses.fields(kind):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        result[f.name] = _known_fields(type(default)) if dataclasses.is_dataclass(default) else str(f.type)
    return result


def bundled_recipes() -> Path | None:
    """The recipes that ship with gmsa: the wheel's copy (gmsa/recipes), or a source checkout's recipes/."""
    package = Path(__file__).resolve().parents[1]
    return next((folder for folder in (package / "recipes", package.parent / "recipes") if folder.is_dir()), None)


def recipe_path(path: str | Path) -> Path:
    """A recipe file; a bare name that is not a file here (`default-keft.yaml`, `default-keft`) is a bundled one."""
    path = Path(path)
    if path.exists() or path.parent != Path("."):
        return path
    folder = bundled_recipes()
    for name in (path.name, f"{path.name}.yaml"):
        if folder is not None and (folder / name).is_file():
            return folder / name
    names = sorted(p.name for p in folder.glob("*.yaml")) if folder else []
    raise ConfigError(f"recipe {path} not found (no such file here, and no bundled recipe of that name: {names})")


def load_recipe(path: str | Path | None, overrides: list[str] = (), **fixed: Any) -> TrainConfig:
    """A TrainConfig from a YAML recipe (a file, or the name of a bundled one), `key=value` overrides, then
    `fixed` values (from CLI flags)."""
    tree: dict[str, Any] = {}
    known = _known_fields(TrainConfig)
    if path is not None:
        path = recipe_path(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as error:
            raise ConfigError(f"{path}: not UTF-8 text (byte {error.object[error.start]:#04x} at offset "
                              f"{error.start})") from None
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"cannot read recipe {path}: {error}") from None
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
