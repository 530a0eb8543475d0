"""Tiny training data and recipes shared by the gmsa-train tests."""

import json

from gmsa.cli.train import main as train_main

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France and its largest city.",
    "Group merging averages hidden states in groups of equal size.",
    "Soft tokens are vectors that a language model reads instead of text.",
]


def recipe(tmp_path, tiny_base, data, out, **extra):
    lines = {
        "train_data": [str(data)], "out_dir": str(out), "batch_size": 2, "eval_samples": 2, "eval_every": 3,
        "save_every": 3, "log_every": 1, "lr": 5e-3, "max_text_tokens": 24,
        "model": {"base_model": str(tiny_base), "encoder_layers": 2, "lora_rank": 4, "lora_alpha": 8,
                  "rates": [2, 4], "segment_tokens": 16},
    }
    lines.update(extra)
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(json.dumps(lines))  # JSON is YAML
    return path


def losses(out):
    return [r["loss"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]


def ae_then_keft(tmp_path, tiny_base, corpus, name, *overrides):
    """A 2-step AE, then a 2-step KEFT from it with `overrides`: both final checkpoint folders."""
    ae, qa = corpus
    out = tmp_path / "ae"
    assert train_main(["ae", "--config", str(recipe(tmp_path, tiny_base, ae, out)), "steps=2"]) == 0
    keft_out = tmp_path / name
    path = recipe(tmp_path, tiny_base, qa, keft_out, stage="keft")
    assert train_main(["keft", "--config", str(path), "--from", str(out / "final"), "steps=2", *overrides]) == 0
    return out / "final", keft_out / "final"
