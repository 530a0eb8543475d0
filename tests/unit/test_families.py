"""GMSA over tiny random models of each supported family: compress, generate, save and load."""

import math

import pytest
from tiny import build_tiny_model

from gmsa import GMSA, GMSAConfig


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "mistral"])
def test_family_end_to_end(family, tmp_path):
    folder = build_tiny_model(tmp_path / family, family=family)
    config = GMSAConfig(base_model=str(folder), encoder_layers=2, lora_rank=4, rates=(2, 4), segment_tokens=16)
    model = GMSA.from_base(str(folder), config, device="cpu")
    text = "Paris is the capital of France and its largest city. The quick brown fox jumps over the lazy dog."
    n = len(model.tokenize_contexts([text])[0])
    [soft] = model.compress([text], rate=4)
    assert soft.shape == (math.ceil(n / 4), model.hidden_size)
    prompts, contexts = ["Question: who?", "Answer."], [[soft], [soft, "plain"]]
    together = model.generate(prompts, contexts, max_new_tokens=4, repetition_penalty=1.0)
    assert together == [model.generate([p], [c], max_new_tokens=4, repetition_penalty=1.0)[0]
                        for p, c in zip(prompts, contexts)]
    model.save_pretrained(tmp_path / "ckpt")
    assert GMSA.from_pretrained(tmp_path / "ckpt").base_fingerprint == model.base_fingerprint
