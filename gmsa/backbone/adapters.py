"""LoRA adapters on the shared base model, and switching between them.

The base weights live in memory once. The encoder's LoRA ("gmsa_encoder", on the first k
layers) and the decoder's KEFT adapter ("gmsa_decoder", optional) are both peft adapters
injected into that one model; a `use_adapter` block says which one its forward passes see.

peft injects and switches them directly (`inject_adapter_in_model`, each tuner layer's `set_adapter`), not
through transformers' PEFT integration: that layer adds nothing GMSA uses and pins a minimum peft version of
its own (transformers 5.24 wants peft >= 0.22.0), which would tie every transformers release to a peft one.

Adapter weights are fp32 whatever the base's dtype (peft's `cast_adapter_dtype`, as `get_peft_model`
does): a bf16/fp16 base keeps its memory saving, and trained weights keep fp32 precision (peft casts a
layer's input up for the adapter and the sum back to the base's dtype).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer, cast_adapter_dtype
from transformers import PreTrainedModel

from gmsa.config import GMSAConfig
from gmsa.errors import ConfigError

ENCODER_ADAPTER = "gmsa_encoder"
DECODER_ADAPTER = "gmsa_decoder"


def add_encoder_adapter(base: PreTrainedModel, config: GMSAConfig) -> None:
    """LoRA on `lora_targets` of the first `encoder_layers` layers only."""
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.lora_targets),
        layers_to_transform=list(range(config.encoder_layers)),
        layers_pattern="layers",
    )
    _inject(base, lora, ENCODER_ADAPTER)


def add_decoder_adapter(base: PreTrainedModel, config: GMSAConfig) -> None:
    """The KEFT adapter on the decoder's `keft_targets` (attention W_Q, W_K, W_V) in every layer.

    It is a separate adapter from the encoder's, so KEFT never changes what the encoder sees.
    "lora": rank `keft_lora_rank`. "full": rank = hidden size, so the update B @ A can be any
    matrix: the paper's full fine-tuning of W_Q, W_K, W_V, kept apart from the shared base weights.
    """
    if config.keft_mode == "lora":
        rank, alpha = config.keft_lora_rank, config.keft_lora_alpha
    elif config.keft_mode == "full":
        rank = alpha = base.config.hidden_size
    else:
        raise ValueError(f"keft_mode={config.keft_mode!r} adds no decoder adapter")
    _inject(base, LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(config.keft_targets), lora_dropout=0.0),
            DECODER_ADAPTER)


def _inject(base: PreTrainedModel, lora: LoraConfig, name: str) -> None:
    """Add adapter `name` (fp32 weights), leaving the plain base model active."""
    with warnings.catch_warnings():  # two adapters on one model is the design, not a mistake to warn about
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute", category=UserWarning)
        try:
            inject_adapter_in_model(lora, base, adapter_name=name)
        except ValueError as error:  # peft: target modules the base model lacks
            raise ConfigError(f"adapter {name}: {str(error).splitlines()[0]} (lora_targets / keft_targets name "
                              "projections of the base model's layers, e.g. q_proj)") from None
    cast_adapter_dtype(base, name)
    _activate(base, None)


def has_adapter(base: PreTrainedModel, name: str) -> bool:
    return name in (getattr(base, "peft_config", None) or {})


def decoder_adapter(base: PreTrainedModel) -> str | None:
    """The adapter the decoder reads with: the KEFT adapter when there is one, else none (the plain base)."""
    return DECODER_ADAPTER if has_adapter(base, DECODER_ADAPTER) else None


def _activate(base: PreTrainedModel, name: str | None) -> None:
    """Make only adapter `name` active (None: the plain base model), keeping every requires_grad flag:
    peft flips them when switching adapters, and training decides what is trainable."""
    layers = [module for module in base.modules() if isinstance(module, BaseTunerLayer)]
    if not layers:
        return
    flags = [(param, param.requires_grad) for param in base.parameters()]
    for layer in layers:  # a layer without adapter `name` (e.g. a decoder-only layer) then adds nothing
        layer.enable_adapters(name is not None)
        if name is not None:
            layer.set_adapter(name)
    for param, flag in flags:
        param.requires_grad_(flag)
    base._gmsa_adapter = name


@contextmanager
def use_adapter(base: PreTrainedModel, name: str | None) -> Iterator[None]:
    """Within the block only adapter `name` is active (None: the plain base model); the previous choice is
    restored after it. Not thread-safe on its own: GMSA holds a lock around model use."""
    previous = getattr(base, "_gmsa_adapter", None)
    _activate(base, name)
    try:
        yield
    finally:
        _activate(base, previous)
