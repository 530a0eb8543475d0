"""A training stage as setup -> fit -> validate, resumable, on one or many processes (accelerate).

Multi-process runs (`torchrun ... -m gmsa.cli.train ...`, or `accelerate launch --multi_gpu`) draw the
batches one process would, give each process an equal share of every batch, and average gradients
across processes after each backward pass: N processes follow the one-process run's loss curve.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from gmsa.adapters import DECODER_ADAPTER, add_decoder_adapter, has_adapter
from gmsa.base import resolve_device
from gmsa.errors import ConfigError
from gmsa.evaluation.metrics import accuracy, bleu4, exact_match, prefix_exact_match, token_f1
from gmsa.model import GMSA
from gmsa.similarity import embedder_device
from gmsa.training.calibration import calibrate_alignment
from gmsa.training.distill import Distillation, load_teacher
from gmsa.training.objective import batch_loss, compress_contexts, mixed_task_loss, sample_rates, text_contexts
from gmsa.training.recipe import TrainConfig
from gmsa.training.samples import Sample, ae_samples, qa_samples, restate_samples
from gmsa.training.state import commit_checkpoint, latest_checkpoint, load_training_state, save_training_state

logger = logging.getLogger(__name__)


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
    restate: list[Sample] = field(default_factory=list)  # KEFT's restating mix (`restate_fraction`)
    distillation: Distillation | None = None  # KEFT's teacher (`teacher`)
    step: int = 0
    history: list[dict] = field(default_factory=list)

    @property
    def out_dir(self) -> Path:
        return Path(self.config.out_dir)


def _build_model(config: TrainConfig, device: torch.device) -> GMSA:
    dtype = torch.bfloat16 if config.precision == "bf16" else torch.float32  # the frozen base; trained weights: fp32
    if config.init_from is None:
        return GMSA.from_base(config.model.base_model, config.model, device=device, dtype=dtype)
    model = GMSA.from_pretrained(config.init_from, base_model=config.model.base_model, device=device, dtype=dtype)
    decoder_trains = config.stage == "keft" or config.ae_decoder
    keft = {k: getattr(config.model, k) for k in ("keft_mode", "keft_lora_rank", "keft_lora_alpha", "keft_targets")}
    if decoder_trains and not has_adapter(model.base, DECODER_ADAPTER):
        model.config = dataclasses.replace(model.config, **keft)
        add_decoder_adapter(model.base, model.config)
    elif decoder_trains:  # the adapter comes from init_from (an `ae_decoder` AE, or KEFT continued): it must match
        for key, wanted in keft.items():
            have = getattr(model.config, key)
            if key in ("keft_lora_rank", "keft_lora_alpha") and keft["keft_mode"] == "full":
                continue  # "full" takes rank = alpha = hidden size, whatever these say
            if key == "keft_targets":
                have, wanted = list(have), list(wanted)
            if have != wanted:
                raise ConfigError(f"model.{key}={wanted!r} does not match the decoder adapter in "
                                  f"{config.init_from} ({key}={have!r}): set it to match")
    model.config = dataclasses.replace(model.config, prompt=config.model.prompt, rates=config.model.rates)
    if config.model.group_merge == "slot" and model.slot_maps is None:  # they start as the mean: nothing changes
        model.config = dataclasses.replace(model.config, slot_rank=config.model.slot_rank)
        model.add_slot_maps()
    elif config.model.group_merge != model.config.group_merge:
        raise ConfigError(f"model.group_merge={config.model.group_merge!r}: {config.init_from} merges with "
                          f"{model.config.group_merge!r} (its slot maps are trained): set model.group_merge=slot")
    elif model.slot_maps is not None and not set(config.model.rates) <= model.slot_maps.rates:
        raise ConfigError(f"model.rates={list(config.model.rates)!r}: {config.init_from} has slot maps for rates "
                          f"{sorted(model.slot_maps.rates)} only")
    return model


def _trainable(model: GMSA, config: TrainConfig) -> dict[str, torch.nn.Parameter]:
    compressor = ("encoder.", "merge.", "lsa.")
    if config.stage == "ae":
        parts = compressor + ("decoder.",) if config.ae_decoder else compressor
    else:
        parts = compressor + ("decoder.",) if config.keft_encoder else ("decoder.",)
    chosen = {n: p for n, p in model.trained_parameters().items() if n.startswith(parts)}
    model.requires_grad_(False)
    for param in chosen.values():
        param.requires_grad_(True)
    return chosen


def _qa_samples(paths: list[str], config: TrainConfig, model: GMSA) -> list[Sample]:
    """KEFT samples as the recipe asks; MiniLM ranks documents on the model's GPU, else the CPU."""
    return qa_samples(paths, model.tokenizer, model.config, config.max_documents, config.max_answer_tokens,
                      config.rerank_documents, config.rerank_order, embedder_device(model.device))


def _split(samples: list[Sample], config: TrainConfig, model: GMSA) -> tuple[list[Sample], list[Sample]]:
    if config.eval_data:
        if config.stage == "ae":
            held_out = ae_samples([config.eval_data], model.tokenizer, model.config, config.max_text_tokens)
        else:
            held_out = _qa_samples([config.eval_data], config, model)
        return samples, held_out[: config.eval_samples]
    holdout = config.holdout or config.eval_samples
    if len(samples) <= holdout:
        return samples, []
    return samples[:-holdout], samples[-holdout:][: config.eval_samples]


def setup(config: TrainConfig, resume: bool = False) -> Run:
    """Build the model, data, optimizer and schedule; restore them from the last checkpoint on resume."""
    if config.device is not None:
        resolve_device(config.device)  # a device this machine lacks is an error, not a silent CPU run
    accelerator = Accelerator(cpu=config.device == "cpu")
    _check_shares(config, accelerator.num_processes)
    torch.manual_seed(config.seed)  # same adapter initialisation on every process
    random.seed(config.seed)
    model = _build_model(config, accelerator.device)
    if config.gradient_checkpointing:
        # non-reentrant: the frozen embeddings need no requires_grad trick for gradients to reach the LoRA
        model.base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    trainable = _trainable(model, config)
    if config.stage == "ae":
        samples = ae_samples(config.train_data, model.tokenizer, model.config, config.max_text_tokens)
    else:
        samples = _qa_samples(config.train_data, config, model)
    train, held_out = _split(samples, config, model)
    if not train:
        raise ValueError(f"no training samples in {config.train_data}")
    if config.stage == "ae" and config.init_from is None:
        # Data-dependent start for the LSA's affine maps; a resumed run then loads its trained values.
        calibrate_alignment(model, [s.contexts[0] for s in train[: config.calibration_samples]])
    groups = [
        {"params": [p for n, p in trainable.items() if n.startswith("decoder.")], "lr": config.lr},
        {"params": [p for n, p in trainable.items() if n.startswith(("encoder.", "merge."))],
         "lr": config.encoder_lr or config.lr},
        {"params": [p for n, p in trainable.items() if n.startswith("lsa.")], "lr": config.lsa_lr or config.lr},
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=config.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(config.warmup_ratio * config.steps), config.steps)
    restate = []
    if config.restate_fraction:
        restate = restate_samples(train, model.config.prompt.restate_instruction, model.tokenizer.eos_token_id,
                                  config.max_text_tokens)
        if not restate:
            raise ConfigError(f"restate_fraction={config.restate_fraction!r} needs documents to restate: the "
                              f"training examples of {config.train_data} have none (closed-book data)")
    distillation = None
    if config.teacher:
        distillation = Distillation(load_teacher(config.teacher, model), config.distill_logits, config.distill_hidden)
    run = Run(config, accelerator, model, trainable, optimizer, scheduler, train, held_out, restate, distillation)
    if resume:
        folder = latest_checkpoint(run.out_dir)
        if folder is None:
            logger.warning("--resume: no checkpoint in %s, starting from scratch", run.out_dir)
        else:
            from gmsa.checkpoint import load_trained, read_checkpoint

            _, _, tensors = read_checkpoint(folder)
            load_trained(model.trained_parameters(), tensors, source=str(folder))
            run.step, run.history = load_training_state(folder, optimizer, scheduler)
            logger.info("resumed from %s at step %d", folder, run.step)
    return run


def _draw(pool: list[Sample], seed: int, first: int, count: int) -> list[Sample]:
    """Positions first..first+count-1 of an endless stream of reshuffled passes over `pool`."""
    drawn = []
    for position in range(first, first + count):
        epoch, offset = divmod(position, len(pool))
        order = list(range(len(pool)))
        random.Random(seed * 7919 + epoch).shuffle(order)
        drawn.append(pool[order[offset]])
    return drawn


def _restating_count(config: TrainConfig) -> int:
    """How many of each batch's samples restate a document (they come first), the rest answer."""
    return round(config.restate_fraction * config.batch_size)


def _check_shares(config: TrainConfig, world: int) -> None:
    """Every process must get the same number of samples of each task, or the averaged gradient is skewed."""
    restating = _restating_count(config)
    if config.batch_size % world or restating % world:
        raise ConfigError(f"batch_size={config.batch_size} ({restating} restating) does not split evenly over "
                          f"{world} processes: use a multiple of {world} for each")


def _share(run: Run, items: list) -> list:
    """This process's contiguous share of a whole batch's `items`."""
    size = len(items) // run.accelerator.num_processes
    start = run.accelerator.process_index * size
    return items[start:start + size]


def _rates(run: Run, step: int) -> list[int] | None:
    """The whole batch's compression rates for `step`, in batch order (None: the uncompressed baseline)."""
    config = run.config
    if config.compression == "none":
        return None
    return sample_rates(run.model.config.rates, config.batch_size, config.seed, step, config.rate_curriculum)


def _batch(run: Run, step: int, rates: list[int] | None) -> tuple[list[Sample], list[int] | None, int]:
    """This process's samples for `step`, their rates, and how many of them restate (they come first).

    The whole batch is a deterministic function of (seed, step), the same for any number of processes,
    so resuming needs no state. With a restating mix, each batch holds round(fraction * batch_size)
    restating samples, drawn from their own stream, then the QA samples.
    """
    config = run.config
    n_restate = _restating_count(config) if run.restate else 0
    n_answer = config.batch_size - n_restate
    restating = _share(run, _draw(run.restate, config.seed + 1, step * n_restate, n_restate) if n_restate else [])
    answering = _share(run, _draw(run.train, config.seed, step * n_answer, n_answer))
    if rates is not None:
        rates = _share(run, rates[:n_restate]) + _share(run, rates[n_restate:])
    return restating + answering, rates, len(restating)


def _mean_over_processes(run: Run, values: torch.Tensor) -> torch.Tensor:
    """Every process's `values` averaged, on every process (a no-op for one process)."""
    if run.accelerator.num_processes > 1:
        dist.all_reduce(values)
        values /= run.accelerator.num_processes
    return values


def _average_gradients(run: Run) -> None:
    if run.accelerator.num_processes == 1:
        return
    grads = [p.grad for p in run.trainable.values() if p.grad is not None]
    flat = _mean_over_processes(run, torch.cat([g.reshape(-1) for g in grads]))  # one all-reduce, not one per tensor
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def _autocast(run: Run):
    """bf16 autocast on CUDA, and on CPUs too (oneDNN bf16 kernels: ~1.4x faster AE steps on AVX512-BF16)."""
    if run.config.precision in ("bf16-mixed", "bf16"):
        return torch.autocast(run.model.device.type, dtype=torch.bfloat16)
    return nullcontext()


def save(run: Run) -> Path | None:
    """Checkpoint weights + optimizer/scheduler/RNG state atomically (main process only)."""
    run.accelerator.wait_for_everyone()
    folder = None
    if run.accelerator.is_main_process:
        run.out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=run.out_dir))
        try:
            run.model.save_pretrained(staging / "weights")
            for item in (staging / "weights").iterdir():
                item.rename(staging / item.name)
            (staging / "weights").rmdir()
            save_training_state(staging, run.optimizer, run.scheduler, run.step, run.history)
            folder = commit_checkpoint(run.out_dir, staging, run.step)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    run.accelerator.wait_for_everyone()
    return folder


def _log(run: Run, record: dict) -> None:
    run.history.append(record)
    if run.accelerator.is_main_process:
        run.out_dir.mkdir(parents=True, exist_ok=True)
        with open(run.out_dir / "log.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")


def _reconstruction_scores(run: Run, samples: list[Sample], rate: int) -> dict[str, float]:
    """BLEU-4 and prefix exact match of restated held-out texts at `rate` (a cheap slice of gmsa-eval)."""
    model = run.model
    soft = [contexts[0] for contexts in compress_contexts(model, samples, [rate] * len(samples))]
    restated = model.reconstruct(soft, max_new_tokens=max(len(s.target) for s in samples) + 8)
    references = [model.tokenizer.decode(s.target, skip_special_tokens=True) for s in samples]
    count = len(samples)
    return {
        f"eval_bleu4_r{rate}": sum(bleu4(p, r) for p, r in zip(restated, references)) / count,
        f"eval_prefix_em_r{rate}": sum(prefix_exact_match(p, r) for p, r in zip(restated, references)) / count,
    }


@torch.no_grad()
def validate(run: Run) -> dict[str, float]:
    """Held-out loss per rate (teacher-forced); for KEFT also EM / F1 / accuracy of generated answers; for AE
    also BLEU-4 / prefix EM of restating the first batch of held-out texts at the first rate (one batch: cheap)."""
    if not run.eval:
        return {}
    model, config = run.model, run.config
    model.eval()
    metrics: dict[str, float] = {}
    rates = [None] if config.compression == "none" else list(model.config.rates)
    for rate in rates:
        losses = []
        for start in range(0, len(run.eval), config.batch_size):
            chunk = run.eval[start:start + config.batch_size]
            with _autocast(run):
                loss, _ = batch_loss(model, chunk, None if rate is None else [rate] * len(chunk), False)
            losses.append(loss.item())
        metrics[f"eval_loss_r{rate or 'none'}"] = sum(losses) / len(losses)
    if config.stage == "ae":
        metrics.update(_reconstruction_scores(run, run.eval[: config.batch_size], model.config.rates[0]))
    if config.stage == "keft":
        rate = None if config.compression == "none" else model.config.rates[0]
        scores = {"em": [], "f1": [], "acc": []}
        for start in range(0, len(run.eval), config.batch_size):
            chunk = run.eval[start:start + config.batch_size]
            if rate is None:
                contexts = text_contexts(chunk)
            else:
                contexts = compress_contexts(model, chunk, [rate] * len(chunk))
            answers = model.generate([s.instruction for s in chunk], contexts, preambles=[s.preamble for s in chunk],
                                     max_new_tokens=config.max_answer_tokens)
            for answer, sample in zip(answers, chunk):
                scores["em"].append(exact_match(answer, sample.answers))
                scores["f1"].append(token_f1(answer, sample.answers))
                scores["acc"].append(accuracy(answer, sample.answers))
        metrics.update({f"eval_{k}": sum(v) / len(v) for k, v in scores.items()})
    model.train()
    return metrics


def fit(run: Run) -> Path:
    """Train until `steps`, evaluating and checkpointing on schedule; returns the final checkpoint folder."""
    config, model = run.config, run.model
    model.train()
    main = run.accelerator.is_main_process
    bar = tqdm(total=config.steps, initial=run.step, desc=f"gmsa-train {config.stage}", disable=not main)
    window_tokens, window_start = 0, time.perf_counter()
    while run.step < config.steps:
        batch_rates = _rates(run, run.step)
        samples, rates, restating = _batch(run, run.step, batch_rates)
        with _autocast(run):
            loss, tokens = mixed_task_loss(model, samples, rates, restating,
                                           train_encoder=config.stage == "ae" or config.keft_encoder,
                                           distillation=run.distillation)
        loss.backward()
        _average_gradients(run)
        torch.nn.utils.clip_grad_norm_(list(run.trainable.values()), config.grad_clip)
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        run.step += 1
        window_tokens += sum(len(s.target) + sum(len(c) for c in s.contexts) for s in samples)
        bar.update(1)
        if run.step % config.log_every == 0 or run.step == config.steps:
            elapsed = time.perf_counter() - window_start
            whole_batch_loss = _mean_over_processes(run, loss.detach().float().clone()).item()
            record = {"step": run.step, "loss": whole_batch_loss, "lr": run.scheduler.get_last_lr()[0],
                      "tokens_per_s": window_tokens * run.accelerator.num_processes / elapsed,
                      "seconds": elapsed, "rates": batch_rates}
            usual_rate = batch_rates and max(set(batch_rates), key=batch_rates.count)
            bar.set_postfix(loss=f"{record['loss']:.3f}", rate=usual_rate, tok_s=f"{record['tokens_per_s']:.0f}")
            _log(run, record)
            window_tokens, window_start = 0, time.perf_counter()
        if run.step % config.eval_every == 0 or run.step == config.steps:
            metrics = validate(run)
            if metrics:
                _log(run, {"step": run.step, **metrics})
                if main:
                    bar.write(f"step {run.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if run.step % config.save_every == 0 or run.step == config.steps:
            save(run)
    bar.close()
    model.eval()
    final = run.out_dir / "final"
    if main:
        model.save_pretrained(final)
        (run.out_dir / "recipe.json").write_text(json.dumps(config.to_dict(), indent=2))
    run.accelerator.wait_for_everyone()
    return final
