"""JSON answers: generation constrained to a JSON schema (gmsa.decode.structured), on the tiny random model."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from gmsa import GMSA
from gmsa.decode.batching import GenerationBatcher
from gmsa.errors import ConfigError

# Bounded values only: a random model may write a free string until max_new_tokens.
SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Rome", "Lyon"]},
                                           "capital": {"type": "boolean"}}, "required": ["city", "capital"]}


@pytest.fixture(scope="module")
def model(tiny_checkpoint) -> GMSA:
    return GMSA.from_pretrained(tiny_checkpoint, device="cpu")


def chats(model: GMSA, count: int) -> list:
    contexts = [model.compress(["Paris is the capital of France."], 2)] * count
    return model.question_conversations([f"Question {i}: which city?" for i in range(count)], contexts)


def test_constrained_answers_are_json_of_the_schema_and_free_rows_stay_free(model):
    conversations = chats(model, 3)
    free = model.generate_chat(conversations, max_new_tokens=60, repetition_penalty=1.0)
    answers = model.generate_chat(conversations, json_schema=[SCHEMA, None, SCHEMA], max_new_tokens=60,
                                  repetition_penalty=1.0)
    for answer in (answers[0], answers[2]):
        parsed = json.loads(answer)
        assert set(parsed) == {"city", "capital"} and parsed["city"] in {"Paris", "Rome", "Lyon"}
        assert isinstance(parsed["capital"], bool)
    assert answers[1] == free[1], "a row without a schema is generated as without constraints"
    with pytest.raises(json.JSONDecodeError):
        json.loads(free[0])  # the random model does not write JSON by itself: the constraint does
    alone = [model.generate_chat([c], json_schema=[SCHEMA], max_new_tokens=60, repetition_penalty=1.0)[0]
             for c in conversations[::2]]
    assert alone == [answers[0], answers[2]]


def test_streamed_json_is_the_generated_json(model):
    conversation = chats(model, 1)[0]
    whole = model.generate_chat([conversation], json_schema=[SCHEMA], max_new_tokens=60, repetition_penalty=1.0)[0]
    assert "".join(model.stream_chat(conversation, json_schema=SCHEMA, max_new_tokens=60,
                                     repetition_penalty=1.0)).strip() == whole


def test_concurrent_json_requests_batch_with_their_own_schemas(model):
    other = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    conversations = chats(model, 4)
    schemas = [SCHEMA, other, SCHEMA, other]
    expected = [model.generate_chat([c], json_schema=[s], max_new_tokens=60)[0] for c, s in zip(conversations, schemas)]
    batcher = GenerationBatcher(model, window=0.2)
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda cs: batcher.generate(cs[0], json_schema=cs[1], max_new_tokens=60),
                                zip(conversations, schemas)))
    assert replies == expected and max(batcher.batch_sizes) > 1
    assert all(set(json.loads(r)) == set(s["required"]) for r, s in zip(replies, schemas))


def test_bad_schemas_and_conflicting_constraints_are_named(model):
    conversation = chats(model, 1)
    with pytest.raises(ConfigError, match="json_schema must be a JSON schema"):
        model.generate_chat(conversation, json_schema=["{}"])
    with pytest.raises(ValueError, match="json_schema has 2 entries for 1"):
        model.generate_chat(conversation, json_schema=[SCHEMA, SCHEMA])
    with pytest.raises(ConfigError, match="either a quote .* or JSON"):
        model.generate_chat(conversation, quote_from=[["Paris"]], json_schema=[SCHEMA])


def test_a_schema_the_library_cannot_follow_is_named(model):
    with pytest.raises(ConfigError, match="not a JSON schema lm-format-enforcer can follow"):
        model.generate_chat(chats(model, 1), json_schema=[{"type": "object", "properties": {"a": {"type": 3}}}])
