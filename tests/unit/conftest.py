"""What the unit tests share: the tiny training corpus and a tiny GMSA in the shipped layout."""

import json

import pytest
import torch
from tiny_gmsa import tiny_config
from training_recipes import TEXTS

from gmsa import GMSA


@pytest.fixture
def corpus(tmp_path):
    ae = tmp_path / "ae.jsonl"
    ae.write_text("".join(json.dumps({"text": f"{t} ({copy})"}) + "\n" for copy in range(3) for t in TEXTS))
    qa = tmp_path / "qa.jsonl"
    records = [{"question": f"What is in text {i}?", "answers": [t.split()[1]],
                "documents": [{"title": "T", "text": t}, {"title": "U", "text": TEXTS[(i + 1) % 4]}], "gold": [0]}
               for i, t in enumerate(TEXTS * 2)]
    qa.write_text("".join(json.dumps(r) + "\n" for r in records))
    return ae, qa


@pytest.fixture
def model(tiny_base) -> GMSA:
    """A tiny GMSA in the shipped layout whose adapters visibly matter."""
    torch.manual_seed(0)
    gmsa = GMSA.from_base(str(tiny_base), tiny_config(tiny_base), device="cpu")
    # Give the zero-initialised LoRA B matrices values, so adapters visibly matter in tests.
    with torch.no_grad():
        for name, param in gmsa.trained_parameters().items():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    return gmsa
