"""A training stage's set-up: the model (built once, in its final layout), what it trains, the samples, the
optimizer and schedule, restored from the last checkpoint on resume."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from transformers import get_cosine_schedule_with_warmup

from gmsa.backbone.loading import resolve_device
from gmsa.checkpoint import load_trained, read_checkpoint
from gmsa.errors import ConfigError, DataError
from gmsa.model import GMSA
from gmsa.similarity import embedder_device
from gmsa.training.calibration import calibrate_alignment
from gmsa.training.recipe import TrainConfig
from gmsa.training.run_dir import prepare_run_dir, record_recipe
from gmsa.training.samples import Sample, ae_samples, qa_samples
from gmsa.training.state import latest_checkpoint, load_training_state

logger = logging.getLogger(__name__)

KEFT_FIELDS = ("keft_mode", "keft_lora_rank", "keft_lora_alpha", "keft_targets")


@dataclass
class Run:
    """Everything a stage needs while it trains."""

    config: TrainConfig
    accelerator: Accelerator
    model: GMSA
    trainable: dict[str, torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: object
    train: list[Sample]
    eval: list[Sample]
    step: int = 0
    history: list[dict] = field(default_factory=list)

    @property
    def out_dir(self) -> Path:
        return Path(self.config.out_dir)


def _continued_config(config: TrainConfig) -> dict:
    """What a stage changes of its `init_from` checkpoint's config: the prompt, the rates, and the decoder
    adapter where the stage trains one (a new one, or the checkpoint's, which must then match)."""
    overrides = {"prompt": config.model.prompt, "rates": config.model.rates}
    if not (config.stage == "keft" or config.ae_decoder):
        return overrides
    previous, _, _ = read_checkpoint(config.init_from)
    wanted = {k: getattr(config.model, k) for k in KEFT_FIELDS}
    if previous.keft_mode == "none":
        return {**overrides, **wanted}
    for key, value in wanted.items():  # the adapter comes from init_from (an `ae_decoder` AE, or KEFT continued)
        have = getattr(previous, key)
        if key in ("keft_lora_rank", "keft_lora_alpha") and wanted["keft_mode"] == "full":
            continue  # "full" takes rank = alpha = hidden size, whatever these say
        if key == "keft_targets":
            have, value = list(have), list(value)
        if have != value:
            raise ConfigError(f"model.{key}={value!r} does not match the decoder adapter in "
                              f"{config.init_from} ({key}={have!r}): set it to match")
    return overrides


def build_model(config: TrainConfig, device: torch.device) -> GMSA:
    """The model in the layout this stage trains, built once: from the base, or from `init_from`."""
    dtype = torch.bfloat16 if config.precision == "bf16" else torch.float32  # the frozen base; trained: fp32
    if config.init_from is None:
        return GMSA.from_base(config.model.base_model, config.model, device=device, dtype=dtype)
    return GMSA.from_pretrained(config.init_from, base_model=config.model.base_model, device=device, dtype=dtype,
                                overrides=_continued_config(config))


def _trainable(model: GMSA, config: TrainConfig) -> dict[str, torch.nn.Parameter]:
    compressor = ("encoder.", "lsa.")
    if config.stage == "ae":
        parts = compressor + ("decoder.",) if config.ae_decoder else compressor
    else:
        parts = compressor + ("decoder.",) if config.keft_encoder else ("decoder.",)
    chosen = {n: p for n, p in model.trained_parameters().items() if n.startswith(parts)}
    model.requires_grad_(False)
    for param in chosen.values():
        param.requires_grad_(True)
    return chosen


def _samples(paths: list[str], config: TrainConfig, model: GMSA) -> list[Sample]:
    if config.stage == "ae":
        return ae_samples(paths, model.tokenizer, model.config, config.max_text_tokens)
    return qa_samples(paths, model.tokenizer, model.config, config.max_documents, config.max_answer_tokens,
                      rank=bool(config.budgets), rank_device=embedder_device(model.device))


def _split(samples: list[Sample], config: TrainConfig, model: GMSA) -> tuple[list[Sample], list[Sample]]:
    if config.eval_data:
        return samples, _samples([config.eval_data], config, model)[: config.eval_samples]
    holdout = config.holdout or config.eval_samples
    if len(samples) <= holdout:
        raise DataError(", ".join(config.train_data), None, f"{len(samples)} samples, but {holdout} are held out for "
                        "validation (holdout / eval_samples): lower them, or give eval_data")
    return samples[:-holdout], samples[-holdout:][: config.eval_samples]


def check_batch_split(config: TrainConfig, processes: int) -> None:
    """Every process must get the same share of each batch, or the averaged gradient is skewed."""
    if config.batch_size % processes:
        raise ConfigError(f"batch_size={config.batch_size} does not split evenly over {processes} processes: "
                          f"use a multiple of {processes}")


def setup(config: TrainConfig, resume: bool = False, overwrite: bool = False) -> Run:
    """Build the model, data, optimizer and schedule; restore them from the last checkpoint on resume.
    `out_dir` must not hold a run unless `resume` (same recipe) or `overwrite` (`gmsa.training.run_dir`)."""
    if config.device is not None:
        resolve_device(config.device)  # a device this machine lacks is an error, not a silent CPU run
    accelerator = Accelerator(cpu=config.device == "cpu")
    check_batch_split(config, accelerator.num_processes)
    if not config.train_data:
        raise ConfigError("train_data is empty: name at least one file or folder to train on")
    prepare_run_dir(config, resume, overwrite, accelerator.is_main_process)
    torch.manual_seed(config.seed)  # same adapter initialisation on every process
    random.seed(config.seed)
    model = build_model(config, accelerator.device)
    if config.gradient_checkpointing:
        # non-reentrant: the frozen embeddings need no requires_grad trick for gradients to reach the LoRA
        model.base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    trainable = _trainable(model, config)
    train, held_out = _split(_samples(config.train_data, config, model), config, model)
    if not train:
        raise DataError(", ".join(config.train_data), None, "no training samples (every record was empty or held out)")
    if config.stage == "ae" and config.init_from is None:
        # Data-dependent start for the LSA's affine maps; a resumed run then loads its trained values.
        calibrate_alignment(model, [s.contexts[0] for s in train[: config.calibration_samples]])
    groups = [
        {"params": [p for n, p in trainable.items() if n.startswith("decoder.")], "lr": config.lr},
        {"params": [p for n, p in trainable.items() if n.startswith("encoder.")], "lr": config.encoder_lr or config.lr},
        {"params": [p for n, p in trainable.items() if n.startswith("lsa.")], "lr": config.lsa_lr or config.lr},
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=config.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(config.warmup_ratio * config.steps), config.steps)
    run = Run(config, accelerator, model, trainable, optimizer, scheduler, train, held_out)
    if resume:
        folder = latest_checkpoint(run.out_dir)
        if folder is None:
            logger.warning("--resume: no checkpoint in %s, starting from scratch", run.out_dir)
        else:
            _, _, tensors = read_checkpoint(folder)
            load_trained(model.trained_parameters(), tensors, source=str(folder))
            run.step, run.history = load_training_state(folder, optimizer, scheduler)
            logger.info("resumed from %s at step %d", folder, run.step)
    if accelerator.is_main_process:
        record_recipe(config, overwrite)
    return run
