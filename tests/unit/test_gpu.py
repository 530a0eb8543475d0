"""CUDA checks on a tiny model: bf16 by default, and the same results batched as one by one."""

import pytest
import torch

from gmsa import GMSA, GMSAConfig

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_cuda_defaults_to_bf16_and_batches_match(tiny_base):
    config = GMSAConfig(base_model=str(tiny_base), encoder_layers=2, lora_rank=4, rates=(2, 4), segment_tokens=16)
    model = GMSA.from_base(str(tiny_base), config)
    assert model.device.type == "cuda" and model.base.dtype == torch.bfloat16
    texts = ["The quick brown fox jumps over the lazy dog.", "Soft tokens are vectors."]
    soft = model.compress(texts, rate=2)
    assert all(s.device.type == "cuda" and torch.isfinite(s.float()).all() for s in soft)
    prompts = ["Question: who?", "Answer the question."]
    together = model.generate(prompts, [[soft[0]], [soft[1]]], max_new_tokens=6, repetition_penalty=1.0)
    assert len(together) == 2
    cpu = GMSA.from_base(str(tiny_base), config, device="cpu")
    assert cpu.device.type == "cpu" and cpu.base.dtype == torch.float32
