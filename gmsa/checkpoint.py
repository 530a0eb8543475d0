"""Checkpoints hold only what GMSA trained (safetensors) plus the config and the base model's identity.

Layout of a checkpoint folder:
    gmsa_config.json         {"format_version", "base": {"name", "fingerprint"}, "config": {...}}
    gmsa_weights.safetensors encoder LoRA ("encoder.*"), LSA ("lsa.*"), KEFT weights ("decoder.*")

Loading is strict: a missing, unexpected or mis-shaped tensor is an error, and so is a base
model whose weights fingerprint differs from the one the checkpoint was trained on.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from gmsa.backbone.adapters import DECODER_ADAPTER, ENCODER_ADAPTER
from gmsa.config import GMSAConfig
from gmsa.errors import CheckpointError

CONFIG_FILE = "gmsa_config.json"
WEIGHTS_FILE = "gmsa_weights.safetensors"
FORMAT_VERSION = 1


def trained_parameters(base: nn.Module, lsa: nn.Module) -> dict[str, nn.Parameter]:
    """Checkpoint name -> parameter, for everything GMSA trains and nothing else."""
    params: dict[str, nn.Parameter] = {}
    for name, param in base.named_parameters():
        if f".{ENCODER_ADAPTER}." in name:
            params[f"encoder.{name}"] = param
        elif f".{DECODER_ADAPTER}." in name:
            params[f"decoder.{name}"] = param
    for name, param in lsa.trainable_state_dict().items():
        params[f"lsa.{name}"] = param
    return params


def _readable(folder: Path) -> None:
    """mkdtemp makes a 0700 folder (and safetensors 0600 files); a checkpoint is for sharing: 0755 / 0644."""
    folder.chmod(0o755)
    for file in folder.iterdir():
        if file.is_file():
            file.chmod(0o644)


def replace_folder(staging: Path, target: Path) -> None:
    """Move a fully written `staging` folder to `target`, never leaving a half-written `target`."""
    _readable(staging)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        target.rename(old)
    staging.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_checkpoint(
    path: str | Path,
    config: GMSAConfig,
    base_identity: dict[str, str],
    tensors: dict[str, torch.Tensor],
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a checkpoint folder atomically; `dtype` optionally casts floating weights (e.g. bf16 to ship)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        payload = {
            name: (t.detach().to(dtype) if dtype is not None and t.is_floating_point() else t.detach())
            .contiguous()
            .cpu()
            for name, t in tensors.items()
        }
        save_file(payload, staging / WEIGHTS_FILE, metadata={"format": "pt"})
        meta = {"format_version": FORMAT_VERSION, "base": base_identity, "config": config.to_dict()}
        (staging / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        replace_folder(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def read_checkpoint(path: str | Path) -> tuple[GMSAConfig, dict[str, str], dict[str, torch.Tensor]]:
    """Config, base identity and tensors of a checkpoint folder."""
    folder = Path(path)
    if not (folder / CONFIG_FILE).is_file():
        raise CheckpointError(f"{folder} is not a GMSA checkpoint: {CONFIG_FILE} is missing")
    if not (folder / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{folder} is incomplete: {WEIGHTS_FILE} is missing")
    try:
        meta: dict[str, Any] = json.loads((folder / CONFIG_FILE).read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{folder / CONFIG_FILE}: invalid JSON ({error})") from error
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{folder / CONFIG_FILE}: format_version {meta.get('format_version')!r} is not supported "
            f"(this gmsa reads version {FORMAT_VERSION})"
        )
    return GMSAConfig.from_dict(meta["config"]), meta["base"], load_file(folder / WEIGHTS_FILE)


def check_base(path: str | Path, identity: dict[str, str], base_name: str, fingerprint: str) -> None:
    """A checkpoint loads only over the base model it was trained on (same weights fingerprint)."""
    if fingerprint != identity.get("fingerprint"):
        raise CheckpointError(
            f"{path} was trained on base model {identity.get('name')!r} (weights fingerprint "
            f"{identity.get('fingerprint')}), but {base_name!r} has fingerprint {fingerprint}: "
            "load it with the base model it was trained on"
        )


def load_trained(
    params: dict[str, nn.Parameter], tensors: dict[str, torch.Tensor], source: str, untrained: tuple[str, ...] = ()
) -> None:
    """Copy checkpoint tensors into the model's trained parameters; any mismatch is an error, except that
    parameters named with an `untrained` prefix (a new adapter the checkpoint never had) keep their start."""
    params = {name: param for name, param in params.items() if not (untrained and name.startswith(untrained))}
    missing = sorted(set(params) - set(tensors))
    unexpected = sorted(set(tensors) - set(params))
    mis_shaped = sorted(
        f"{name} {tuple(tensors[name].shape)} vs {tuple(params[name].shape)}"
        for name in set(params) & set(tensors)
        if tensors[name].shape != params[name].shape
    )
    if missing or unexpected or mis_shaped:
        problems = []
        for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mis_shaped)):
            if names:
                problems.append(f"{len(names)} {label} (e.g. {', '.join(names[:3])})")
        raise CheckpointError(f"{source} does not match this model: " + "; ".join(problems))
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(tensors[name].to(param.device, param.dtype))
