"""GMSA checkpoints over a tiny random Llama: round trips, strict loading, atomic writes, the KEFT adapter."""

import warnings

import pytest
import torch
from tiny_gmsa import TEXTS, tiny_config

from gmsa import GMSA, CheckpointError


def test_save_and_load_round_trip(model, tmp_path):
    model.save_pretrained(tmp_path / "ckpt")
    loaded = GMSA.from_pretrained(tmp_path / "ckpt", device="cpu")
    assert loaded.config == model.config
    for name, param in model.trained_parameters().items():
        torch.testing.assert_close(loaded.trained_parameters()[name], param, rtol=0, atol=0)
    torch.testing.assert_close(loaded.compress(TEXTS, rate=4)[0], model.compress(TEXTS, rate=4)[0])
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["gmsa_config.json", "gmsa_weights.safetensors"]
    # a shareable folder, not the 0700/0600 modes of its temporary staging folder
    assert (tmp_path / "ckpt").stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "ckpt").iterdir()} == {0o644}


def test_bf16_checkpoint_loads_into_an_fp32_model(model, tmp_path):
    model.save_pretrained(tmp_path / "ckpt", dtype=torch.bfloat16)  # how the bundled default ships
    loaded = GMSA.from_pretrained(tmp_path / "ckpt", device="cpu")
    for name, param in model.trained_parameters().items():
        assert loaded.trained_parameters()[name].dtype == torch.float32
        torch.testing.assert_close(loaded.trained_parameters()[name], param.to(torch.bfloat16).float(), rtol=0, atol=0)


def test_loading_onto_another_base_model_fails(model, tmp_path, other_tiny_base):
    model.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="fingerprint"):
        GMSA.from_pretrained(tmp_path / "ckpt", base_model=str(other_tiny_base))


def test_incomplete_checkpoint_fails_loudly(model, tmp_path):
    from safetensors.torch import load_file, save_file

    model.save_pretrained(tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "gmsa_weights.safetensors"
    tensors = load_file(weights)
    tensors.pop(sorted(tensors)[0])
    tensors["lsa.extra"] = torch.zeros(1)
    save_file(tensors, weights)
    with pytest.raises(CheckpointError, match="1 missing.*1 unexpected"):
        GMSA.from_pretrained(tmp_path / "ckpt")


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="gmsa_config.json is missing"):
        GMSA.from_pretrained(tmp_path)


def test_saving_over_a_checkpoint_replaces_it_whole(model, tmp_path):
    model.save_pretrained(tmp_path / "ckpt")
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_keft_lora_adapter_is_saved_and_used_only_by_the_decoder(tiny_base, tmp_path):
    gmsa = GMSA.from_base(str(tiny_base), tiny_config(tiny_base, keft_mode="lora", keft_lora_rank=2))
    names = list(gmsa.trained_parameters())
    assert any(n.startswith("decoder.") and "q_proj" in n for n in names)
    soft = gmsa.compress(TEXTS[:1], rate=4)
    with torch.no_grad():
        for name, param in gmsa.trained_parameters().items():
            if name.startswith("decoder.") and "lora_B" in name:
                param.normal_(0, 0.5)
    torch.testing.assert_close(gmsa.compress(TEXTS[:1], rate=4)[0], soft[0])  # encoder unaffected
    gmsa.save_pretrained(tmp_path / "k")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = GMSA.from_pretrained(tmp_path / "k")
    assert not [w for w in caught if "peft_config" in str(w.message)]  # two adapters are the design: no warning
    assert loaded.generate(["Hi"], max_new_tokens=5) == gmsa.generate(["Hi"], max_new_tokens=5)
