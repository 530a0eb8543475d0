"""Concurrent requests gathered into batched generate calls (gmsa.decode.batching)."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from gmsa import GMSA
from gmsa.decode.batching import GenerationBatcher
from gmsa.errors import ConfigError, GMSAError

DOCUMENTS = ["Paris is the capital of France and its largest city.", "The quick brown fox jumps over the lazy dog.",
             "Marie Curie won two Nobel prizes, in physics and in chemistry.", "The tower was finished in 1889."]


@pytest.fixture(scope="module")
def model(tiny_checkpoint) -> GMSA:
    return GMSA.from_pretrained(tiny_checkpoint, device="cpu")


def conversations(model: GMSA, count: int) -> list:
    """`count` questions over documents of different lengths, at different rates (prompts of unequal length)."""
    result = []
    for i in range(count):
        documents = DOCUMENTS[: 1 + i % len(DOCUMENTS)]
        contexts = model.compress(documents, (2, 4)[i % 2])
        result.append(model.question_conversations([f"Question {i}: what does it say?"], [contexts])[0])
    return result


def test_concurrent_requests_are_batched_with_the_sequential_answers(model):
    chats = conversations(model, 12)
    sequential = [model.generate_chat([c], max_new_tokens=10)[0] for c in chats]
    batcher = GenerationBatcher(model, window=0.2, max_batch=8)
    with ThreadPoolExecutor(12) as pool:
        concurrent = list(pool.map(lambda c: batcher.generate(c, max_new_tokens=10), chats))
    assert concurrent == sequential
    assert sum(batcher.batch_sizes) == 12 and max(batcher.batch_sizes) > 1, batcher.batch_sizes
    assert max(batcher.batch_sizes) <= 8


def test_quoting_and_settings_are_kept_per_request(model):
    chats = conversations(model, 4)
    quotes = [DOCUMENTS[: 1 + i % len(DOCUMENTS)] for i in range(4)]
    expected = [model.generate_chat([chats[0]], max_new_tokens=6)[0],
                model.generate_chat([chats[1]], quote_from=[quotes[1]], max_new_tokens=8)[0],
                model.generate_chat([chats[2]], max_new_tokens=8)[0],
                model.generate_chat([chats[3]], quote_from=[quotes[3]], max_new_tokens=8)[0]]
    batcher = GenerationBatcher(model, window=0.2)
    calls = [lambda: batcher.generate(chats[0], max_new_tokens=6),
             lambda: batcher.generate(chats[1], quote_from=quotes[1], max_new_tokens=8),
             lambda: batcher.generate(chats[2], max_new_tokens=8),
             lambda: batcher.generate(chats[3], quote_from=quotes[3], max_new_tokens=8)]
    with ThreadPoolExecutor(4) as pool:
        replies = [f.result() for f in [pool.submit(call) for call in calls]]
    assert replies == expected
    assert sorted(batcher.batch_sizes) == [1, 1, 2], batcher.batch_sizes  # three groups: 6 tokens, 8, 8 quoting


def test_sampled_requests_run_alone(model):
    chats = conversations(model, 3)
    batcher = GenerationBatcher(model, window=0.2)
    with ThreadPoolExecutor(3) as pool:
        replies = list(pool.map(lambda c: batcher.generate(c, do_sample=True, temperature=0.7, max_new_tokens=4),
                                chats))
    assert len(replies) == 3 and batcher.batch_sizes == [1, 1, 1]


def test_an_error_reaches_only_the_request_that_caused_it(model):
    chats = conversations(model, 3)
    too_long = model.question_conversations(["x"], [[torch.zeros(model.base.config.max_position_embeddings,
                                                                 model.hidden_size)]])[0]
    batcher = GenerationBatcher(model, window=0.2)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(batcher.generate, c, max_new_tokens=5) for c in [*chats, too_long]]
        with pytest.raises(GMSAError, match="position"):
            futures[-1].result()
        assert [f.result() for f in futures[:3]] == [model.generate_chat([c], max_new_tokens=5)[0] for c in chats]


def test_bad_settings_are_refused_before_queueing(model):
    with pytest.raises(ConfigError, match="window"):
        GenerationBatcher(model, window=-1)
    with pytest.raises(ConfigError, match="max_batch"):
        GenerationBatcher(model, max_batch=0)
    with pytest.raises(ConfigError, match="unknown generation setting"):
        GenerationBatcher(model).generate(conversations(model, 1)[0], max_tokens=3)
