"""The budget planner: its arithmetic (budget never exceeded, most relevant richest and last, deterministic),
its errors, and budgeted answering on a tiny model (one encoder pass for several rates)."""

import math
import random

import pytest
import torch

from gmsa import GMSA, ConfigError, GMSAConfig
from gmsa.compress import compressor
from gmsa.plan import AUTO_TEXT_TOKENS, budget_positions, plan

RATES = (4, 8, 16)


def test_the_budget_is_never_exceeded_and_the_most_relevant_get_the_most_room():
    generator = random.Random(0)
    for _ in range(500):
        count = generator.randint(1, 12)
        tokens = [generator.randint(1, 400) for _ in range(count)]
        relevance = [generator.random() for _ in range(count)]
        budget = generator.choice([0.05, 0.1, 0.25, 0.5, 1.0, generator.randint(30, 3000)])
        try:
            chosen = plan(tokens, relevance, budget, RATES)
        except ConfigError:
            assert all(math.ceil(n / 16) > budget_positions(budget, sum(tokens)) for n in tokens)
            continue
        assert chosen.positions <= chosen.budget == budget_positions(budget, sum(tokens))
        sent = chosen.sent
        assert [p.relevance for p in sent] == sorted(p.relevance for p in sent)  # the most relevant last
        assert sorted(p.index for p in chosen.placements) == list(range(count))
        dropped = [p for p in chosen.placements if p.form == "dropped"]
        if dropped and sent:  # a dropped document is no more relevant than... or did not fit at rate 16
            assert all(d.relevance <= max(p.relevance for p in sent) or math.ceil(d.tokens / 16) > chosen.budget
                       for d in dropped)
        room = {"text": 1.0, **{f"rate {r}": 1 / r for r in RATES}}
        assert [room[p.describe()] for p in sent] == sorted(room[p.describe()] for p in sent)  # follow relevance
        top = sent[-1] if sent else None
        if top is not None and top.tokens <= chosen.budget - sum(math.ceil(p.tokens / 16) for p in sent[:-1]):
            assert top.form == "text"  # the most relevant whole when it fits beside the rest at the top rate
        assert chosen == plan(tokens, relevance, budget, RATES)  # deterministic


def test_a_plan_reads_like_its_description():
    chosen = plan([100, 200, 80, 0], [0.2, 0.9, 0.5, 0.1], 0.25, RATES)
    # 95 positions: all at rate 16 first (13 + 5 + 7), then, most relevant first, the richest form that fits
    assert chosen.budget == 95 and chosen.positions == 50 + 20 + 25
    assert [(p.index, p.form, p.rate) for p in chosen.placements] == [
        (0, "soft", 4), (2, "soft", 4), (1, "soft", 4), (3, "dropped", None)]
    tight = plan([100, 200, 80], [0.2, 0.9, 0.5], 60, RATES)  # 25 at rate 16, then 35 more to spend
    # the most relevant cannot afford rate 4 (37 more): rate 8; the others then at most rate 8 too
    assert [(p.index, p.form, p.rate) for p in tight.sent] == [(0, "soft", 8), (2, "soft", 8), (1, "soft", 8)]
    assert [p.form for p in plan([100, 200, 80], [0.2, 0.9, 0.5], 1.0, RATES).sent] == ["text"] * 3
    mixed = plan([100, 200, 80], [0.2, 0.9, 0.5], 300, RATES)
    assert [(p.index, p.form, p.rate) for p in mixed.sent] == [(0, "soft", 8), (2, "text", None), (1, "text", None)]
    assert mixed.positions == 293 and "-> 280 as text (2 documents) + 13 soft tokens (1)" in mixed.summary()
    ties = plan([50, 50], [0.5, 0.5], 60, RATES)
    assert [p.index for p in ties.sent] == [1, 0] and ties.sent[-1].form == "text"  # ties: the earlier first


@pytest.mark.parametrize("budget, message", [
    (0, "positions is >= 1"), (-3, "positions is >= 1"), (0.0, r"in \(0, 1\]"), (-0.5, r"in \(0, 1\]"),
    (1.5, "pass an integer"), (True, "invalid"), ("half", "invalid"), (float("nan"), "invalid"), (None, "invalid"),
])
def test_a_bad_budget_is_a_clear_error(budget, message):
    with pytest.raises(ConfigError, match=message):
        plan([100, 40], [1.0, 0.5], budget, RATES)


def test_a_budget_smaller_than_any_document_at_the_highest_rate_is_an_error_not_an_empty_prompt():
    with pytest.raises(ConfigError, match=r"budget=2 \(2 decoder positions\) is smaller than any document at the "
                                          r"highest rate 16 \(the smallest takes 3\)"):
        plan([40, 100], [1.0, 0.5], 2, RATES)
    assert plan([40, 100], [1.0, 0.5], 3, RATES).sent[0].index == 0  # what fits, fits


def test_auto_keeps_short_documents_whole_and_spends_a_quarter_of_long_ones():
    short = plan([20, AUTO_TEXT_TOKENS - 20], [0.1, 0.2], "auto", RATES)
    assert [p.form for p in short.sent] == ["text", "text"]
    long = plan([300, 300], [0.1, 0.2], "auto", RATES)
    assert long.budget == 150 and long.positions <= 150


def tiny_model(tiny_base) -> GMSA:
    torch.manual_seed(0)
    config = GMSAConfig(base_model=str(tiny_base), encoder_layers=2, lora_rank=4, lora_alpha=8, rates=(2, 4),
                        segment_tokens=16)
    return GMSA.from_base(str(tiny_base), config, device="cpu")


DOCS = ["Paris is the capital of France and its largest city.",
        "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog again.",
        "Soft tokens are vectors that a language model reads instead of text."]


def test_one_encoder_pass_serves_every_rate(tiny_base, monkeypatch):
    model = tiny_model(tiny_base)
    token_ids = model.tokenize_contexts(DOCS)
    calls = []
    encode = compressor.encode
    monkeypatch.setattr(compressor, "encode", lambda *args, **kwargs: calls.append(1) or encode(*args, **kwargs))
    with torch.no_grad():
        both = compressor.soft_tokens_at_rates(model, token_ids, [[2, 4], [2], [4, 2]])
    passes = len(calls)
    assert passes == len(compressor.length_batches(
        [len(s) for ids in token_ids for s in compressor.split_segments(ids, 16)], 16, 512))
    for rate in (2, 4):
        wanted = [i for i, rates in enumerate([[2, 4], [2], [4, 2]]) if rate in rates]
        alone = model.compress([DOCS[i] for i in wanted], rate)
        for i, soft in zip(wanted, alone):
            torch.testing.assert_close(both[i][rate], soft)
    assert len(calls) == passes + 2 * passes  # each single-rate compress encodes again: that is what is saved


def test_budgeted_answer_sends_text_and_soft_tokens_as_planned(tiny_base):
    model = tiny_model(tiny_base)
    scores = [0.1, 0.9, 0.5]
    n = [len(ids) for ids in model.tokenize_contexts(DOCS)]
    budget = n[1] + math.ceil(n[2] / 4) + math.ceil(n[0] / 4)  # the most relevant whole, the others at rate 4
    chosen = model.plan("what?", DOCS, budget, relevance=scores)
    assert [(p.index, p.form, p.rate) for p in chosen.sent] == [(0, "soft", 4), (2, "soft", 4), (1, "text", None)]
    answer = model.answer("what?", DOCS, budget=budget, relevance=scores, max_new_tokens=4)
    assert answer.plan == chosen and answer.rate is None
    assert answer.text_tokens == chosen.text_tokens and answer.soft_tokens == chosen.soft_tokens
    assert answer.context_tokens == chosen.document_tokens
    assert model.plan("what?", DOCS, budget, relevance=lambda q, d: scores) == chosen
    assert [p.index for p in model.plan("what?", DOCS, 0.5, relevance="order").sent][-1] == 0
    fixed = model.answer("what?", DOCS, rate=4, max_new_tokens=4)
    assert fixed.plan is None and fixed.rate == 4 and fixed.text_tokens == 0


@pytest.mark.parametrize("call, message", [
    (lambda m: m.answer("what?", DOCS, rate=4, budget=0.5), "not both"),
    (lambda m: m.answer("what?", "one string"), "not one string"),
    (lambda m: m.answer(None, DOCS, budget=0.5), "question=None is invalid"),
    (lambda m: m.plan("what?", DOCS, 0.5, relevance=[1.0]), "for 3 documents"),
    (lambda m: m.plan("what?", DOCS, 0.5, relevance=[1.0, float("nan"), 2.0]), "one finite number"),
    (lambda m: m.plan("what?", DOCS, 0.5, relevance="bm25"), "relevance='bm25' is invalid"),
])
def test_bad_budgeted_calls_are_clear_errors(tiny_base, call, message):
    with pytest.raises(ConfigError, match=message):
        call(tiny_model(tiny_base))
