"""Resumable training state, written atomically and without pickle.

A checkpoint folder `step-NNNNNN/` holds the GMSA checkpoint (trained weights + config) and
    trainer_state.safetensors  optimizer moments and the torch RNG state
    trainer_state.json         step, scheduler, optimizer hyperparameters, python RNG, history
`latest` names the newest complete folder; it is replaced (os.replace) only after the folder
is complete, so a run killed mid-write resumes from the previous checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from gmsa.checkpoint import read_tensors, replace_folder
from gmsa.errors import CheckpointError
from gmsa.integrity import DIGEST_KEY, tensor_digest

STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"
LATEST = "latest"
STEP_FOLDER = re.compile(r"step-\d{6,}")


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def save_training_state(
    folder: Path, optimizer: torch.optim.Optimizer, scheduler: Any, step: int, history: list[dict[str, float]]
) -> None:
    tensors, optimizer_meta = _optimizer_tensors(optimizer)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for index, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = rng
    save_file(tensors, folder / STATE_TENSORS, metadata={DIGEST_KEY: tensor_digest(tensors)})
    python_rng = random.getstate()
    meta = {
        "step": step,
        "optimizer": optimizer_meta,
        "scheduler": scheduler.state_dict(),
        "python_rng": [python_rng[0], list(python_rng[1]), python_rng[2]],
        "history": history,
    }
    (folder / STATE_JSON).write_text(json.dumps(meta))


def load_training_state(folder: Path, optimizer: torch.optim.Optimizer, scheduler: Any) -> tuple[int, list[dict]]:
    """Restore optimizer, scheduler and RNG; returns (step, history)."""
    try:
        meta = json.loads((folder / STATE_JSON).read_text(encoding="utf-8"))
        step, history, optimizer_meta = int(meta["step"]), list(meta["history"]), meta["optimizer"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{folder / STATE_JSON} is damaged ({type(error).__name__}: {error}): resume "
                              "from an earlier step folder by pointing `latest` at it") from None
    tensors, _ = read_tensors(folder / STATE_TENSORS)
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    for index, values in optimizer_meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    saved_groups = [len(g["params"]) for g in optimizer_meta["param_groups"]]
    run_groups = [len(g["params"]) for g in optimizer.param_groups]
    if saved_groups != run_groups:
        # e.g. a run folder written before the decoder / encoder / LSA learning rates were split apart
        raise CheckpointError(f"{folder} cannot resume this run: its optimizer holds parameter groups of "
                              f"{saved_groups} tensors, this recipe trains {run_groups}. Resume it with the "
                              "recipe and gmsa version that wrote it, or start from its weights in a new "
                              "out_dir with --from")
    optimizer.load_state_dict({"state": state, "param_groups": optimizer_meta["param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
    version, internal, gauss = meta["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    return step, history


def commit_checkpoint(out_dir: Path, staging: Path, step: int, keep: int = 2) -> Path:
    """Move a complete staging folder to `step-NNNNNN`, point `latest` at it, prune old ones."""
    target = out_dir / f"step-{step:06d}"
    replace_folder(staging, target)
    pointer = out_dir / f".{LATEST}.tmp"
    pointer.write_text(target.name + "\n")
    os.replace(pointer, out_dir / LATEST)
    folders = sorted(p for p in out_dir.glob("step-*") if p.is_dir())
    for old in folders[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The folder `latest` names: always a `step-NNNNNN` folder inside `out_dir`, never a path elsewhere."""
    pointer = out_dir / LATEST
    if not pointer.is_file():
        return None
    name = pointer.read_text(encoding="utf-8", errors="replace").strip()
    if not STEP_FOLDER.fullmatch(name):
        raise CheckpointError(f"{pointer} names {name[:80]!r}, not a step-NNNNNN folder of this run: point it at "
                              "one of the step folders in " + str(out_dir))
    folder = out_dir / name
    if folder.is_symlink() or folder.resolve().parent != out_dir.resolve():
        raise CheckpointError(f"{folder} leads outside {out_dir}: a run resumes only from its own step folders")
    if not (folder / STATE_JSON).is_file():
        raise CheckpointError(f"{pointer} names {folder.name}, which is incomplete or missing")
    return folder
