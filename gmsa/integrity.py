"""Integrity of stored tensors: a sha256 digest written beside them (safetensors metadata) and checked on load,
and a check that numbers are finite. Checkpoints, trainer states and soft-token caches use both, so flipped
bytes or a NaN on disk are an error (or a recomputed cache entry), never weights or soft tokens served."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch

DIGEST_KEY = "sha256"
"""The safetensors metadata field that holds `tensor_digest` of the file's tensors."""


def tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order (the file's byte layout aside)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())  # (n * itemsize,) raw bytes
    return digest.hexdigest()


def digest_problem(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None) -> str | None:
    """What is wrong with tensors read back against their metadata's digest; None when they match (or when
    the file predates digests: files without one are still read, and checked for finite values)."""
    recorded = (metadata or {}).get(DIGEST_KEY)
    if recorded is None:
        return None
    if tensor_digest(tensors) != recorded:
        return "its tensors do not match the sha256 digest written with them (the file was changed or damaged)"
    return None


def non_finite(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating tensors that hold NaN or Inf."""
    return [name for name, tensor in tensors.items()
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
