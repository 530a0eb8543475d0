"""End to end on the real embedded default model (SmolLM2-135M-Instruct), on CPU."""

import math

import pytest
import torch

from gmsa import GMSA
from gmsa.backbone.adapters import decoder_adapter, use_adapter

pytestmark = pytest.mark.integration

DOCUMENTS = [
    "Marie Curie was a physicist and chemist who conducted pioneering research on radioactivity. "
    "She was the first woman to win a Nobel Prize and the only person to win it in two sciences.",
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, France, completed in 1889.",
]


@pytest.fixture(scope="module")
def default_model() -> GMSA:
    return GMSA.from_pretrained(device="cpu")


def test_later_loads_reuse_the_converted_copy(default_model):
    from gmsa.backbone.loading import embedded_base_folder

    converted = sorted(embedded_base_folder().glob("*.safetensors"))
    assert converted, "the first load must leave a converted safetensors copy in the cache"
    stamps = [path.stat().st_mtime_ns for path in converted]
    GMSA.from_pretrained(device="cpu")
    assert [path.stat().st_mtime_ns for path in converted] == stamps, "a later load must not convert again"


def test_compress_and_answer_end_to_end(default_model):
    counts = [len(ids) for ids in default_model.tokenize_contexts(DOCUMENTS)]
    soft = default_model.compress(DOCUMENTS, rate=4)
    assert [s.shape for s in soft] == [(math.ceil(n / 4), 576) for n in counts]
    assert all(torch.isfinite(s).all() for s in soft)
    answer = default_model.answer("Where is the Eiffel Tower?", DOCUMENTS, rate=4, max_new_tokens=24)
    assert answer.text.strip()
    assert answer.context_tokens == sum(counts) and answer.soft_tokens == sum(s.shape[0] for s in soft)


def test_long_document_is_not_truncated(default_model):
    long_text = " ".join(DOCUMENTS * 30)
    tokens = len(default_model.tokenize_contexts([long_text])[0])
    assert tokens > default_model.config.segment_tokens
    assert default_model.compress([long_text], rate=8)[0].shape[0] == math.ceil(tokens / 8)


def test_batch_and_stream_match_single_generation(default_model):
    """Left-padding a batch changes nothing but float summation order: next-token logits agree to
    fp32 noise (greedy texts can still part at an exact near-tie, so those are compared one by one)."""
    soft = default_model.compress(DOCUMENTS, rate=8)
    prompts = [default_model.format_question(q) for q in ("Who was Marie Curie?", "When was it built?")]
    conversations = default_model.question_conversations(prompts, [[soft[0]], [soft[1]]])

    def next_token_logits(batch):
        embeds, mask, positions = default_model.decoder_inputs(batch)
        with torch.no_grad(), use_adapter(default_model.base, decoder_adapter(default_model.base)):
            return default_model.base(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits[:, -1]

    together = next_token_logits(conversations)  # (2, V), left-padded
    alone = torch.cat([next_token_logits([c]) for c in conversations])  # (2, V), no padding
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-3)
    single = default_model.generate(prompts[:1], [[soft[0]]], max_new_tokens=16)[0]
    assert "".join(default_model.stream(prompts[0], [soft[0]], max_new_tokens=16)).strip() == single


def test_uncompressed_text_context_answers(default_model):
    [text] = default_model.generate(
        [default_model.format_question("In which city is the Eiffel Tower?")], [[DOCUMENTS[1]]], max_new_tokens=24
    )
    assert "Paris" in text


def test_plain_text_at_gmsas_budget_on_the_real_tokenizer(default_model):
    from gmsa.evaluation.token_budget import shorten_documents, surprisal

    counts = [len(ids) for ids in default_model.tokenize_contexts(DOCUMENTS)]
    scores = surprisal(default_model, default_model.tokenize_contexts(DOCUMENTS))
    assert [len(s) for s in scores] == counts and all(torch.isfinite(s).all() and (s >= 0).all() for s in scores)
    # a real LM finds " Prize" after "a Nobel" far more predictable than " physicist" after "Marie Curie was a"
    pieces = [default_model.tokenizer.decode([i]) for i in default_model.tokenize_contexts(DOCUMENTS[:1])[0]]
    assert scores[0][pieces.index(" Prize")] + 3 < scores[0][pieces.index(" physicist")]
    for how in ("truncated", "selective"):
        kept = shorten_documents(default_model, DOCUMENTS, 4, how)
        lengths = [len(ids) for ids in default_model.tokenize_contexts(kept)]
        assert all(abs(length - math.ceil(n / 4)) <= 2 for length, n in zip(lengths, counts)), (how, lengths)
    assert DOCUMENTS[1].startswith(shorten_documents(default_model, DOCUMENTS, 4, "truncated")[1])


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_the_default_in_half_precision_answers_as_in_fp32(default_model, dtype):
    """bf16 is the CUDA default; the CPU runs the same kernels' dtype here, so a mismatch cannot land."""
    half = GMSA.from_pretrained(device="cpu", dtype=dtype)  # the fingerprint check passes in any dtype
    assert half.base_fingerprint == default_model.base_fingerprint
    questions = ["In which city is the Eiffel Tower?", "Who was the first woman to win a Nobel Prize?"]
    for question, expected in zip(questions, ["Paris", "Marie Curie"]):
        assert half.answer(question, DOCUMENTS, rate=4, max_new_tokens=16).text == expected
    assert half.answer("When was the Eiffel Tower completed?", DOCUMENTS, rate=4, extractive=True,
                       max_new_tokens=16).text == "1889"
