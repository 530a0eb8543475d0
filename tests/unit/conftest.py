"""The tiny training corpus the gmsa-train tests share."""

import json

import pytest
from training_recipes import TEXTS


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
