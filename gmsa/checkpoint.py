"""Checkpoints hold only what GMSA trained (safetensors) plus the config and the base model's identity.

Layout of a checkpoint folder:
    gmsa_config.json         {"format_version", "base": {"name", "fingerprint"}, "config": {...}}
    gmsa_weights.safetensors encoder LoRA ("encoder.*"), LSA ("lsa.*"), KEFT weights ("decoder.*")

Loading is strict: a missing, unexpected or mis-shaped tensor is an error, and so is a base
model whose weights fingerprint differs from the one the checkpoint was trained on, weights that no longer
match the sha256 digest written with them, NaN or Inf in them, and a config edited since they were trained
(the weights file's metadata holds the config's trained fields; only `generation` and `base_model` may change).
Writing never destroys what gmsa did not write: a file, or a folder that is not a GMSA checkpoint, is refused.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from gmsa.backbone.adapters import DECODER_ADAPTER, ENCODER_ADAPTER
from gmsa.config import GMSAConfig
from gmsa.errors import CheckpointError
from gmsa.integrity import DIGEST_KEY, digest_problem, non_finite, tensor_digest

CONFIG_FILE = "gmsa_config.json"
WEIGHTS_FILE = "gmsa_weights.safetensors"
FORMAT_VERSION = 1
SERVING_FIELDS = ("generation", "base_model")
"""Config fields a user may edit in gmsa_config.json after training: they do not change what the weights mean."""
OVERRIDABLE = (*SERVING_FIELDS, "prompt", "rates", "keft_mode", "keft_lora_rank", "keft_lora_alpha", "keft_targets")
"""Config fields `GMSA.from_pretrained(overrides=)` may change: how the model is served, and what a training stage
continuing the checkpoint changes (its rates, its prompt, a decoder adapter it adds). The others define what the
trained weights compute, so changing them would serve weights for something they were never trained on."""
STALE_SECONDS = 600
"""A staging folder left beside a checkpoint this long ago belongs to a killed write, and is removed."""


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


def _check_target(target: Path) -> None:
    """A checkpoint goes to a new or empty folder, or replaces a GMSA checkpoint: nothing else is overwritten."""
    if target.exists() and not target.is_dir():
        raise CheckpointError(f"{target} is a file, not a folder: a checkpoint is a folder; nothing was written")
    if target.is_dir() and any(target.iterdir()) and not (target / CONFIG_FILE).is_file():
        raise CheckpointError(f"{target} is a folder that is not a GMSA checkpoint (no {CONFIG_FILE}) and is not "
                              "empty: save to a new or empty folder; nothing was written")


def _keep_foreign_files(target: Path, staging: Path) -> None:
    """Files a user put in an existing checkpoint folder (a README, logs) move on with the new checkpoint."""
    if not target.is_dir():
        return
    for item in target.iterdir():
        if item.name in (CONFIG_FILE, WEIGHTS_FILE):
            continue
        if item.is_dir():
            shutil.copytree(item, staging / item.name, symlinks=True)
        else:
            shutil.copy2(item, staging / item.name, follow_symlinks=False)


def remove_stale_staging(parent: Path, name: str, older_than: float = STALE_SECONDS) -> None:
    """Remove what killed writes of checkpoint `name` left in `parent` (`.name.tmp-*`, `.name.old-*`)."""
    now = time.time()
    for pattern in (f".{name}.tmp-*", f".{name}.old-*"):
        for item in parent.glob(pattern):
            try:
                if now - item.stat().st_mtime >= older_than:
                    shutil.rmtree(item) if item.is_dir() else item.unlink()
            except OSError:
                pass  # another process is finishing it, or it is gone already


def _trained_config(config: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key not in SERVING_FIELDS}


def write_checkpoint(
    path: str | Path,
    config: GMSAConfig,
    base_identity: dict[str, str],
    tensors: dict[str, torch.Tensor],
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a checkpoint folder atomically; `dtype` optionally casts floating weights (e.g. bf16 to ship)."""
    target = Path(path)
    _check_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target.parent, target.name)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        payload = {
            name: (t.detach().to(dtype) if dtype is not None and t.is_floating_point() else t.detach())
            .contiguous()
            .cpu()
            for name, t in tensors.items()
        }
        bad = non_finite(payload)
        if bad:
            raise CheckpointError(f"not saving {target}: NaN or Inf in {len(bad)} tensor(s) (e.g. {bad[0]})")
        trained = json.dumps(_trained_config(config.to_dict()), sort_keys=True)
        save_file(payload, staging / WEIGHTS_FILE,
                  metadata={"format": "pt", DIGEST_KEY: tensor_digest(payload), "config": trained})
        meta = {"format_version": FORMAT_VERSION, "base": base_identity, "config": config.to_dict()}
        (staging / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        _keep_foreign_files(target, staging)
        replace_folder(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A safetensors file's tensors and metadata, checked against its digest and for NaN / Inf."""
    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file ({error})") from None
    problem = digest_problem(tensors, metadata)
    if problem:
        raise CheckpointError(f"{path}: {problem}; restore it from its source")
    bad = non_finite(tensors)
    if bad:
        raise CheckpointError(f"{path}: NaN or Inf in {len(bad)} tensor(s) (e.g. {bad[0]}); restore it from its source")
    return tensors, metadata


def _check_config_unchanged(folder: Path, config: dict[str, Any], metadata: dict[str, str]) -> None:
    if "config" not in metadata:
        return  # written before gmsa recorded the trained config
    trained = json.loads(metadata["config"])
    now = _trained_config(config)
    changed = sorted(key for key in set(trained) | set(now) if trained.get(key) != now.get(key))
    if changed:
        details = "; ".join(f"{key}: trained {trained.get(key)!r}, now {now.get(key)!r}" for key in changed[:3])
        raise CheckpointError(f"{folder / CONFIG_FILE} was edited after its weights were trained ({details}): "
                              f"only {', '.join(SERVING_FIELDS)} may change; restore the other fields")


def check_overrides(overrides: Any) -> dict[str, Any]:
    """`overrides` as a dict of fields in `OVERRIDABLE`."""
    if overrides is None:
        return {}
    if not isinstance(overrides, dict):
        raise CheckpointError(f"overrides={overrides!r:.80} is invalid: a dict of config fields")
    refused = sorted(set(overrides) - set(OVERRIDABLE))
    if refused:
        raise CheckpointError(f"overrides {refused} cannot change a trained checkpoint (they change what its weights "
                              f"compute); only {list(OVERRIDABLE)} can")
    return overrides


def read_checkpoint(path: str | Path) -> tuple[GMSAConfig, dict[str, str], dict[str, torch.Tensor]]:
    """Config, base identity and tensors of a checkpoint folder."""
    if not isinstance(path, (str, Path)):
        raise CheckpointError(f"path={path!r:.80} is invalid: a checkpoint folder (str or Path)")
    folder = Path(path)
    if not (folder / CONFIG_FILE).is_file():
        raise CheckpointError(f"{folder} is not a GMSA checkpoint: {CONFIG_FILE} is missing")
    if not (folder / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{folder} is incomplete: {WEIGHTS_FILE} is missing")
    try:
        meta: dict[str, Any] = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{folder / CONFIG_FILE}: not valid JSON ({error})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict) or not isinstance(meta.get("base"), dict):
        raise CheckpointError(f"{folder / CONFIG_FILE}: expected an object with 'config' and 'base' objects")
    unknown = sorted(set(meta) - {"format_version", "base", "config"})
    if unknown:  # e.g. a "generation" edited at the top level, where it would change nothing
        raise CheckpointError(f"{folder / CONFIG_FILE}: unknown key(s) {unknown} at the top level (expected "
                              "format_version, base, config; generation settings live in config.generation)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{folder / CONFIG_FILE}: format_version {meta.get('format_version')!r} is not supported "
            f"(this gmsa reads version {FORMAT_VERSION})"
        )
    tensors, metadata = read_tensors(folder / WEIGHTS_FILE)
    _check_config_unchanged(folder, meta["config"], metadata)
    return GMSAConfig.from_dict(meta["config"]), meta["base"], tensors


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
