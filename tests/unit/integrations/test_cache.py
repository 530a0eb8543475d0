"""The shared soft-token cache: keys, bounds, the on-disk store, concurrency."""

import multiprocessing
import threading

import pytest
import torch

from gmsa_integrations.cache import SoftTokenCache, cache_key


def test_entries_are_keyed_by_compressor_rate_and_text():
    cache = SoftTokenCache()
    soft = torch.randn(3, 8)
    cache.put("fp-a", 8, "text", soft)
    assert torch.equal(cache.get("fp-a", 8, "text"), soft)
    assert cache.get("fp-b", 8, "text") is None
    assert cache.get("fp-a", 4, "text") is None
    assert cache.get("fp-a", 8, "text ") is None
    assert cache.hits == 1 and cache.misses == 3


def test_memory_is_bounded_least_recently_used_first():
    one = torch.zeros(4, 8)  # 128 bytes
    cache = SoftTokenCache(max_bytes=3 * 128)
    for name in "abc":
        cache.put("fp", 8, name, one.clone())
    cache.get("fp", 8, "a")  # a becomes the most recently used
    cache.put("fp", 8, "d", one.clone())
    assert cache.get("fp", 8, "b") is None
    assert all(cache.get("fp", 8, name) is not None for name in "acd")
    assert len(cache) == 3


def test_disk_entries_serve_another_cache_and_survive_clearing_memory(tmp_path):
    soft = torch.randn(5, 8)
    SoftTokenCache(directory=tmp_path).put("fp", 8, "text", soft)
    other = SoftTokenCache(directory=tmp_path)
    torch.testing.assert_close(other.get("fp", 8, "text"), soft)
    other.clear()
    torch.testing.assert_close(other.get("fp", 8, "text"), soft)
    other.clear(disk=True)
    assert other.get("fp", 8, "text") is None


def test_a_corrupt_or_misnamed_disk_entry_is_a_miss(tmp_path):
    cache = SoftTokenCache(directory=tmp_path)
    cache.put("fp", 8, "a", torch.randn(2, 8))
    cache.put("fp", 8, "b", torch.randn(2, 8))
    key_a, key_b = cache_key("fp", 8, "a"), cache_key("fp", 8, "b")
    # A file renamed to another key (its recorded key differs) must not be served for that text.
    (tmp_path / f"{key_b}.safetensors").replace(tmp_path / f"{key_a}.safetensors")
    (tmp_path / f"{key_b}.safetensors").write_bytes(b"not a safetensors file")
    fresh = SoftTokenCache(directory=tmp_path)
    assert fresh.get("fp", 8, "a") is None
    assert fresh.get("fp", 8, "b") is None


def _writer(directory: str, worker: int) -> None:
    cache = SoftTokenCache(directory=directory)
    for round_ in range(20):
        cache.put("fp", 8, f"text {round_ % 5}", torch.full((4, 8), float(round_ % 5)))


def test_concurrent_writers_and_readers_never_see_half_a_file(tmp_path):
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_writer, args=(str(tmp_path), i)) for i in range(3)]
    for process in writers:
        process.start()
    errors = []

    def read() -> None:
        cache = SoftTokenCache(directory=tmp_path, max_bytes=0)  # memory off: every get reads the disk
        while any(p.is_alive() for p in writers):
            for n in range(5):
                soft = cache.get("fp", 8, f"text {n}")
                if soft is not None and not torch.equal(soft, torch.full((4, 8), float(n))):
                    errors.append(n)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for thread in readers:
        thread.start()
    for process in writers:
        process.join()
    for thread in readers:
        thread.join()
    assert all(p.exitcode == 0 for p in writers)
    assert not errors
    assert not list(tmp_path.glob("*.tmp"))


def test_invalid_budget_is_rejected():
    with pytest.raises(ValueError, match="max_bytes"):
        SoftTokenCache(max_bytes=-1)
