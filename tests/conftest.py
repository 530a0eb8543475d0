from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny import build_tiny_model  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny random Llama (4 layers, hidden 64) with its tokenizer, saved once per session."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "base")


@pytest.fixture(scope="session")
def other_tiny_base(tmp_path_factory) -> Path:
    """Same architecture, different random weights: a different base model."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-other") / "base", seed=1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_base, tmp_path_factory) -> Path:
    """A saved GMSA checkpoint over the tiny base, with non-zero adapters (rates 2 and 4)."""
    import torch

    from gmsa import GMSA, GMSAConfig

    torch.manual_seed(0)
    config = GMSAConfig(base_model=str(tiny_base), encoder_layers=2, lsa_layers=1, lora_rank=4, lora_alpha=8,
                        rates=(2, 4), segment_tokens=16)
    model = GMSA.from_base(str(tiny_base), config, device="cpu")
    with torch.no_grad():
        for name, param in model.trained_parameters().items():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    return model.save_pretrained(tmp_path_factory.mktemp("tiny-gmsa") / "checkpoint")
