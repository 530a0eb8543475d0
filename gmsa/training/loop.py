"""A training stage's loop: fit -> validate, checkpointing on schedule, on one or many processes (accelerate).

Multi-process runs (`torchrun ... -m gmsa.cli.train ...`, or `accelerate launch --multi_gpu`) draw the
batches one process would, give each process an equal share of every batch, and average gradients
across processes after each backward pass: N processes follow the one-process run's loss curve.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from gmsa.backbone.adapters import decoder_adapter, use_adapter
from gmsa.evaluation.metrics import accuracy, bleu4, exact_match, prefix_exact_match, token_f1
from gmsa.training.layouts import mixed_layouts
from gmsa.training.objective import batch_loss, compress_contexts, sample_rates, text_contexts
from gmsa.training.samples import Sample
from gmsa.training.setup import Run, setup
from gmsa.training.state import commit_checkpoint, save_training_state

__all__ = ["Run", "fit", "setup", "validate"]


def _draw(pool: list[Sample], seed: int, first: int, count: int) -> list[Sample]:
    """Positions first..first+count-1 of an endless stream of reshuffled passes over `pool`."""
    drawn = []
    for position in range(first, first + count):
        epoch, offset = divmod(position, len(pool))
        order = list(range(len(pool)))
        random.Random(seed * 7919 + epoch).shuffle(order)
        drawn.append(pool[order[offset]])
    return drawn


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


def _batch(run: Run, step: int, rates: list[int] | None) -> tuple[list[Sample], list[int] | None]:
    """This process's samples for `step` and their rates. The whole batch is a deterministic function of
    (seed, step), the same for any number of processes, so resuming needs no state."""
    config = run.config
    samples = _share(run, _draw(run.train, config.seed, step * config.batch_size, config.batch_size))
    return samples, None if rates is None else _share(run, rates)


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
    variants = [(f"r{rate or 'none'}", rate, None, 0.0) for rate in rates]
    variants += [(f"b{b:g}", None, b, 0.0) for b in config.budgets]  # as the planner lays them out
    variants += [(f"t{b:g}", None, b, 1.0) for b in config.budgets if config.text_layouts]  # text only
    for name, rate, budget, text in variants:
        losses = []
        for start in range(0, len(run.eval), config.batch_size):
            chunk = run.eval[start:start + config.batch_size]
            layouts = None if budget is None else mixed_layouts(chunk, model.config.rates, [budget], 0.0, 0, 0, text)
            with _autocast(run):
                loss, _ = batch_loss(model, chunk, None if rate is None else [rate] * len(chunk), False, layouts)
            losses.append(loss.item())
        metrics[f"eval_loss_{name}"] = sum(losses) / len(losses)
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
            answers = model.generate([s.instruction for s in chunk], contexts, max_new_tokens=config.max_answer_tokens)
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
        samples, rates = _batch(run, run.step, batch_rates)
        # The backward pass runs with the decoder's adapter active too: gradient checkpointing recomputes
        # decoder layers in it (the encoder then never trains, TrainConfig checks).
        layouts = None
        if config.budgets:
            layouts = mixed_layouts(samples, model.config.rates, config.budgets, config.random_layouts, config.seed,
                                    run.step * run.accelerator.num_processes + run.accelerator.process_index,
                                    config.text_layouts)
        with use_adapter(model.base, decoder_adapter(model.base)):
            with _autocast(run):
                loss, tokens = batch_loss(model, samples, rates, config.stage == "ae" or config.keft_encoder, layouts)
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
