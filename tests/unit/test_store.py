"""Compress at ingest (gmsa.store): sharded safetensors keyed by text hash and rate, resumable, split by rank."""

import pytest
import torch

from gmsa import GMSA
from gmsa.errors import GMSAError
from gmsa.store import SHARD, SoftTokenStore, check_shard, ingest, text_key

TEXTS = [f"Document {i}: " + "words of a paragraph " * (1 + i % 5) for i in range(23)]


@pytest.fixture(scope="module")
def model(tiny_checkpoint) -> GMSA:
    return GMSA.from_pretrained(tiny_checkpoint, device="cpu")


def test_stored_soft_tokens_are_the_compressed_ones_in_bf16(model, tmp_path):
    store = ingest(model, TEXTS + TEXTS[:3] + ["  "], tmp_path / "store", shard_texts=10, progress=False)
    fingerprint = model.compressor_fingerprint()
    assert len(store) == len(TEXTS) * len(model.config.rates)  # distinct, non-blank texts once per rate
    assert len([p for p in (tmp_path / "store").iterdir() if SHARD.fullmatch(p.name)]) == 3
    for rate in model.config.rates:
        fresh = model.compress(TEXTS[:4], rate)
        for text, soft in zip(TEXTS[:4], fresh):
            stored = store.get(fingerprint, rate, text, tuple(soft.shape))
            assert stored.dtype == torch.bfloat16 and torch.equal(stored, soft.to(torch.bfloat16))
    assert store.get(fingerprint, model.config.rates[0], TEXTS[0] + " ") is None  # another text
    assert store.get("another compressor", model.config.rates[0], TEXTS[0]) is None
    assert all(check_shard(p) is None for p in (tmp_path / "store").iterdir() if SHARD.fullmatch(p.name))


def test_a_killed_ingest_resumes_with_only_what_is_missing(model, tmp_path):
    path = tmp_path / "store"
    ingest(model, TEXTS, path, shard_texts=8, progress=False)
    shards = sorted(p for p in path.iterdir() if SHARD.fullmatch(p.name))
    shards[-1].unlink()  # the shard being written when the run was killed never got its name
    (path / f".{shards[-1].name}.tmp").write_bytes(b"half a file")
    (path / "notes.txt").write_text("the user's own file stays")
    survivors = {p.name: p.stat().st_mtime_ns for p in shards[:-1]}
    store = ingest(model, TEXTS, path, shard_texts=8, progress=False)
    assert len(store) == len(TEXTS) * len(model.config.rates)
    assert not list(path.glob(".*.tmp")) and (path / "notes.txt").is_file()
    assert all(p.stat().st_mtime_ns == survivors[p.name] for p in shards[:-1])  # not rewritten


def test_ranks_split_the_corpus_and_each_writes_its_own_shards(model, tmp_path):
    path = tmp_path / "store"
    for rank in (0, 1):
        ingest(model, TEXTS, path, rank=rank, world_size=2, progress=False)
    names = sorted(p.name for p in path.iterdir() if SHARD.fullmatch(p.name))
    assert names == ["shard-r0-000000.safetensors", "shard-r1-000000.safetensors"]
    store = SoftTokenStore(path)
    assert all(text_key(t, r) in store for t in TEXTS for r in model.config.rates)


def test_a_store_of_another_compressor_or_a_foreign_folder_is_refused(model, other_tiny_base, tmp_path):
    ingest(model, TEXTS[:2], tmp_path / "store", progress=False)
    other = GMSA.from_base(str(other_tiny_base), model.config, device="cpu")
    with pytest.raises(GMSAError, match="another compressor"):
        ingest(other, TEXTS[:2], tmp_path / "store", progress=False)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    with pytest.raises(GMSAError, match="not an empty folder"):
        ingest(model, TEXTS[:2], tmp_path / "notes", progress=False)
    with pytest.raises(GMSAError, match="not a soft-token store"):
        SoftTokenStore(tmp_path / "notes")


def test_gmsa_index_cli_and_two_torchrun_processes_build_the_same_store(tiny_checkpoint, tmp_path):
    import json
    import os
    import subprocess
    import sys

    from gmsa.cli.ask import main

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    assert main(["index", str(corpus), "--out", str(tmp_path / "one"), "--checkpoint", str(tiny_checkpoint),
                 "--device", "cpu", "--shard-texts", "10"]) == 0
    assert main(["index", str(corpus), "--out", str(tmp_path / "one"), "--checkpoint", str(tiny_checkpoint),
                 "--device", "cpu", "--verify"]) == 0  # a finished store: nothing left to do, nothing rewritten
    shard = sorted((tmp_path / "one").glob("shard-*"))[0]
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF  # one flipped byte in the last tensor
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for file in (tmp_path / "one").iterdir():
        (damaged / file.name).write_bytes(data if file == shard else file.read_bytes())
    assert main(["index", str(corpus), "--out", str(damaged), "--checkpoint", str(tiny_checkpoint),
                 "--device", "cpu", "--verify"]) == 2
    one = SoftTokenStore(tmp_path / "one")
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "gmsa.cli.index",
                    str(corpus), "--out", str(tmp_path / "two"), "--checkpoint", str(tiny_checkpoint)],
                   check=True, env=environment, capture_output=True, timeout=300)
    two = SoftTokenStore(tmp_path / "two")
    assert sorted(p.name for p in (tmp_path / "two").glob("shard-*")) == ["shard-r0-000000.safetensors",
                                                                          "shard-r1-000000.safetensors"]
    assert len(two) == len(one) and all(key in two for key in one._where)
    fingerprint, rate = one.fingerprint, one.rates[0]
    assert all(torch.equal(one.get(fingerprint, rate, t), two.get(fingerprint, rate, t)) for t in TEXTS)


def test_a_damaged_store_or_a_single_string_is_named(model, tmp_path):
    from gmsa.errors import ConfigError

    with pytest.raises(ConfigError, match="not one string"):
        ingest(model, "one text", tmp_path / "store", progress=False)
    ingest(model, TEXTS[:3], tmp_path / "store", progress=False)
    shard = next((tmp_path / "store").glob("shard-*"))
    shard.write_bytes(shard.read_bytes()[:40])  # a truncated shard
    with pytest.raises(GMSAError, match=f"{shard.name} cannot be read .* delete it and run gmsa index again"):
        SoftTokenStore(tmp_path / "store")
    (tmp_path / "store" / "store.json").write_text("{not json")
    with pytest.raises(GMSAError, match="store.json is damaged"):
        SoftTokenStore(tmp_path / "store")
