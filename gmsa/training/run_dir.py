"""A run's folder (`out_dir`): one run per folder, never mixed with another, never over its own `--from`.

    out_dir/run.json      the recipe the run started with; `--resume` must match it (`RESULT_NEUTRAL` aside)
    out_dir/log.jsonl     losses and validation, one JSON record per line
    out_dir/step-NNNNNN/  resumable checkpoints (`gmsa.training.state`), `latest` names the newest
    out_dir/final/        the trained checkpoint; out_dir/recipe.json the recipe, written with it
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from gmsa.errors import ConfigError
from gmsa.training.recipe import TrainConfig
from gmsa.training.state import LATEST

logger = logging.getLogger(__name__)

RUN_RECIPE = "run.json"
RUN_FILES = (LATEST, "final", "log.jsonl", "recipe.json", RUN_RECIPE)
RESULT_NEUTRAL = ("out_dir", "log_every", "eval_every", "save_every", "device", "model.generation")
"""Recipe fields a resumed run may change: where it writes, how often it logs, validates and saves, the device,
and how the model generates (the validation's answers, never the weights). Every other field changes what the
run computes, so `--resume` refuses a recipe that differs in it."""
LEFTOVERS = (".staging-*", ".step-*.old-*", ".final.tmp-*", ".final.old-*", f".{LATEST}.tmp")
"""What a killed write leaves in a run folder (one writer per run folder: any of these at start is stale)."""


def run_contents(out_dir: Path) -> list[str]:
    """The names in `out_dir` that a training run wrote."""
    if not out_dir.is_dir():
        return []
    return sorted(p.name for p in out_dir.iterdir() if p.name in RUN_FILES or p.name.startswith("step-"))


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _differences(started: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    changed = []
    for key in sorted(set(started) | set(now)):
        name = f"{prefix}{key}"
        if name in RESULT_NEUTRAL:
            continue
        before, after = started.get(key), now.get(key)
        if isinstance(before, dict) and isinstance(after, dict):
            changed.extend(_differences(before, after, f"{name}."))
        elif before != after:
            changed.append(f"{name}: {before!r} -> {after!r}")
    return changed


def record_recipe(config: TrainConfig, overwrite: bool = False) -> None:
    """Once the run is set up (its data and model valid): with `overwrite`, remove the run it replaces; write
    `run.json` (a resumed run keeps the one it started with)."""
    out_dir = Path(config.out_dir)
    existing = run_contents(out_dir) if overwrite else []
    if existing:
        logger.warning("--overwrite: removing the run in %s (%s)", out_dir, ", ".join(existing))
        for name in existing:
            target = out_dir / name
            shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
    if (out_dir / RUN_RECIPE).is_file():
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    temporary = out_dir / f".{RUN_RECIPE}.tmp"
    temporary.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    os.replace(temporary, out_dir / RUN_RECIPE)


def _defaults() -> dict[str, Any]:
    """TrainConfig's top-level defaults, as run.json writes them."""
    fields = dataclasses.fields(TrainConfig)
    values = {f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory() for f in fields
              if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
    return json.loads(json.dumps({k: v for k, v in values.items() if not dataclasses.is_dataclass(v)}))


def _check_recipe(out_dir: Path, config: TrainConfig) -> None:
    path = out_dir / RUN_RECIPE
    if not path.is_file():
        logger.warning("%s has no %s (the run predates it): the recipe cannot be checked against the one it "
                       "started with; recording this one", out_dir, RUN_RECIPE)
        return
    try:
        started = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:
        raise ConfigError(f"{path} is damaged ({error}): restore it, or start a new run") from None
    # a field added since the run started was its default then; through JSON, so tuples and lists compare equal
    started = {**_defaults(), **started}
    changed = _differences(started, json.loads(json.dumps(config.to_dict())))
    if changed:
        raise ConfigError(f"--resume with a recipe that differs from the one {out_dir} started with, in "
                          f"{len(changed)} field(s): {'; '.join(changed[:4])}. Resume with the same recipe, or "
                          "start a new run (another out_dir, --from a checkpoint of this one)")


def prepare_run_dir(config: TrainConfig, resume: bool, overwrite: bool, main_process: bool = True) -> None:
    """Check `out_dir` before anything is computed: a new run needs a folder without a run (or `overwrite`), a
    resumed one the same recipe, and no run writes inside the checkpoint it starts from. Removes what killed
    writes left behind; an old run replaced with `overwrite` goes only once the new one is set up (`record_recipe`)."""
    out_dir = Path(config.out_dir)
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: continue the run, or replace it")
    if config.init_from is not None and _inside(Path(config.init_from), out_dir):
        raise ConfigError(f"--from {config.init_from} lies inside out_dir {out_dir}: this run would write over "
                          "the checkpoint it starts from; choose another out_dir")
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"out_dir {out_dir} is a file, not a folder")
    existing = run_contents(out_dir)
    if existing and not (resume or overwrite):
        raise ConfigError(f"out_dir {out_dir} already holds a run ({', '.join(existing[:4])}): pass --resume to "
                          "continue it, --overwrite to replace it, or choose another out_dir")
    if resume and existing:
        _check_recipe(out_dir, config)
    if not main_process or not out_dir.is_dir():
        return
    for pattern in LEFTOVERS:
        for leftover in out_dir.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)
