"""Damaged files are caught, never served: checkpoint and trainer-state tensors carry a digest, NaN / Inf is an
error, an edited config is refused; a soft-token cache entry that fails any check is recomputed, warned once."""

import json
import logging
import os
import time

import pytest
import torch
from safetensors.torch import load_file, save_file
from training_recipes import recipe

from gmsa import GMSA
from gmsa.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from gmsa.cli.train import main as train_main
from gmsa.errors import CheckpointError, GMSAError
from gmsa_integrations.cache import SoftTokenCache, cache_key
from gmsa_integrations.runtime import GMSARuntime


def _flip_last_byte(path):
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40  # inside the last tensor's data, not the header
    path.write_bytes(bytes(data))


@pytest.fixture
def saved(model, tmp_path):
    return model.save_pretrained(tmp_path / "ckpt")


def test_flipped_bytes_in_checkpoint_weights_are_refused(saved):
    _flip_last_byte(saved / WEIGHTS_FILE)
    with pytest.raises(CheckpointError, match="do not match the sha256 digest"):
        GMSA.from_pretrained(saved)


def test_nan_in_checkpoint_weights_is_refused_even_without_a_digest(saved):
    tensors = load_file(saved / WEIGHTS_FILE)
    name = sorted(tensors)[0]
    tensors[name][0] = float("nan")
    save_file(tensors, saved / WEIGHTS_FILE, metadata={"format": "pt"})  # as a file written before digests
    with pytest.raises(CheckpointError, match=f"NaN or Inf in 1 tensor\\(s\\) \\(e.g. {name}\\)"):
        GMSA.from_pretrained(saved)


def test_a_config_edited_after_training_is_refused_but_generation_defaults_may_change(saved):
    meta = json.loads((saved / CONFIG_FILE).read_text())
    meta["config"]["generation"]["max_new_tokens"] = 7
    (saved / CONFIG_FILE).write_text(json.dumps(meta))
    assert GMSA.from_pretrained(saved).config.generation.max_new_tokens == 7
    meta["config"]["rates"] = [2, 4, 8]
    (saved / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"edited after its weights were trained \(rates: trained \[2, 4\], now"):
        GMSA.from_pretrained(saved)


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / CONFIG_FILE).write_text("{not json"), "not valid JSON"),
    (lambda f: (f / CONFIG_FILE).write_bytes(b'{"config": "caf\xe9"}'), "not valid JSON"),
    (lambda f: (f / CONFIG_FILE).write_text("[1, 2]"), "expected an object"),
    (lambda f: (f / WEIGHTS_FILE).write_bytes((f / WEIGHTS_FILE).read_bytes()[:1000]), "not a readable safetensors"),
    (lambda f: (f / WEIGHTS_FILE).write_bytes(b""), "not a readable safetensors"),
])
def test_a_damaged_checkpoint_file_is_a_checkpoint_error(saved, damage, message):
    damage(saved)
    with pytest.raises(CheckpointError, match=message):
        GMSA.from_pretrained(saved)


def test_nan_soft_tokens_are_an_error_not_an_answer(model):
    with torch.no_grad():
        next(p for n, p in model.trained_parameters().items() if n.startswith("lsa.")).fill_(float("nan"))
    with pytest.raises(GMSAError, match="NaN or Inf soft tokens for text 0"):
        model.compress(["Paris is the capital of France."], 2)


@pytest.mark.parametrize("damage, message", [
    (lambda step: (step / "trainer_state.json").write_text("{broken"), "trainer_state.json is damaged"),
    (lambda step: _flip_last_byte(step / "trainer_state.safetensors"), "do not match the sha256 digest"),
    (lambda step: (step / "trainer_state.safetensors").write_bytes(b"x" * 50), "not a readable safetensors"),
])
def test_a_damaged_trainer_state_is_one_line_on_resume(tmp_path, tiny_base, corpus, capsys, damage, message):
    path = recipe(tmp_path, tiny_base, corpus[0], tmp_path / "run")
    assert train_main(["ae", "--config", str(path), "steps=3"]) == 0
    damage(tmp_path / "run" / "step-000003")
    capsys.readouterr()
    assert train_main(["ae", "--config", str(path), "steps=3", "--resume"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and message in err[0], err


@pytest.fixture
def runtime(tiny_checkpoint, tmp_path):
    return GMSARuntime(str(tiny_checkpoint), device="cpu", cache=SoftTokenCache(directory=tmp_path / "cache"))


TEXT = "Paris is the capital of France."


def _entry(runtime) -> str:
    return runtime.cache._path(cache_key(runtime.fingerprint, 2, TEXT))


@pytest.mark.parametrize("damage", [
    lambda path, soft: _flip_last_byte(path),
    lambda path, soft: save_file({"soft_tokens": torch.zeros(0, soft.shape[1])}, path,
                                 metadata={"key": path.stem}),  # an empty tensor under the document's key
    lambda path, soft: save_file({"soft_tokens": soft[:-1].contiguous()}, path, metadata={"key": path.stem}),
    lambda path, soft: save_file({"soft_tokens": torch.full_like(soft, float("nan"))}, path,
                                 metadata={"key": path.stem}),
    lambda path, soft: path.write_bytes(b"garbage"),
])
def test_a_damaged_cache_entry_is_recomputed_with_one_warning(runtime, tmp_path, caplog, damage):
    expected = runtime.compress([TEXT], 2)[0]
    damage(_entry(runtime), expected)
    for attempt in range(2):
        fresh = GMSARuntime(runtime.checkpoint, device="cpu", cache=runtime.cache)
        fresh.cache.clear()  # memory only: the next lookup reads the damaged file
        if attempt == 1:
            damage(_entry(runtime), expected)
        with caplog.at_level(logging.WARNING, logger="gmsa_integrations.cache"):
            torch.testing.assert_close(fresh.compress([TEXT], 2)[0], expected)
    warnings = [r for r in caplog.records if "is ignored and recomputed" in r.getMessage()]
    assert len(warnings) == 1  # once per entry, not once per lookup


def test_an_unwritable_cache_folder_is_a_clear_error(tmp_path):
    taken = tmp_path / "file.txt"
    taken.write_text("not a folder")
    with pytest.raises(GMSAError, match="cache folder .*file.txt cannot be written"):
        SoftTokenCache(directory=taken)


def test_a_read_only_cache_folder_is_a_clear_error(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        with pytest.raises(GMSAError, match="cache folder .* cannot be written"):
            SoftTokenCache(directory=folder)
    finally:
        folder.chmod(0o700)


def test_killed_writes_temp_files_are_cleaned(tmp_path):
    stale, live = tmp_path / ".0123456789abcdef-1.tmp", tmp_path / ".0123456789abcdef-2.tmp"
    stale.write_bytes(b"half")
    live.write_bytes(b"being written")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    cache = SoftTokenCache(directory=tmp_path)
    assert not stale.exists() and live.exists()  # another process may still be writing a fresh one
    cache.clear(disk=True)
    assert not live.exists()
