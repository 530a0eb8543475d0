"""The budget planner: its arithmetic (budget never exceeded, most relevant richest and last, deterministic),
its errors, and budgeted answering on a tiny model (one encoder pass for several rates)."""

import math
import random

import pytest
import torch

from gmsa import GMSA, ConfigError, GMSAConfig, answering
from gmsa.compress import compressor
from gmsa.plan import AUTO_TEXT_TOKENS, budget_positions, plan, text_only

RATES = (4, 8, 16)


def random_documents(seed: int, fewest_tokens: int, fractions: list[float], positions: tuple[int, int]):
    """500 random (tokens, relevance, budget) cases: 1-12 documents, a fraction or a number of positions."""
    generator = random.Random(seed)
    for _ in range(500):
        count = generator.randint(1, 12)
        tokens = [generator.randint(fewest_tokens, 400) for _ in range(count)]
        relevance = [generator.random() for _ in range(count)]
        yield tokens, relevance, generator.choice([*fractions, generator.randint(*positions)])


def test_text_only_fills_the_budget_most_relevant_first_and_sends_them_last():
    for tokens, relevance, budget in random_documents(1, 0, [0.05, 0.25, 1.0], (1, 3000)):
        count = len(tokens)
        chosen = text_only(tokens, relevance, budget)
        limit = budget_positions(budget, sum(tokens))
        assert sum(kept for _, kept in chosen) == min(limit, sum(tokens))  # the budget filled, never exceeded
        ranked = sorted((i for i in range(count) if tokens[i]), key=lambda i: (-relevance[i], i))
        assert [i for i, _ in chosen][::-1] == ranked[:len(chosen)]  # most relevant first in, last in reading
        assert all(kept == tokens[i] for i, kept in chosen[1:])  # only the least relevant one sent is cut
        assert all(kept > 0 for _, kept in chosen)  # empty documents take no place
    assert text_only([10, 20], [0.1, 0.9], "auto") == [(0, 10), (1, 20)]  # short documents: all whole


def test_the_budget_is_never_exceeded_and_the_most_relevant_get_the_most_room():
    for tokens, relevance, budget in random_documents(0, 1, [0.05, 0.1, 0.25, 0.5, 1.0], (30, 3000)):
        count = len(tokens)
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
        room = [1.0 if p.form in ("text", "prefix") else 1 / p.rate for p in sent]
        assert room == sorted(room)  # rates follow relevance
        best = max(range(count), key=lambda i: (relevance[i], -i))
        assert sent[-1].index == best  # the most relevant last, whole when it fits, else its first tokens
        assert sent[-1].form == ("text" if tokens[best] <= chosen.budget else "prefix")
        assert chosen == plan(tokens, relevance, budget, RATES)  # deterministic


def test_a_plan_reads_like_its_description():
    # 100 positions, most relevant first, each the richest form that fits and no richer than the one before:
    # 60 tokens whole, 80 at rate 4 (20), 100 at rate 8 (13)
    chosen = plan([100, 60, 80, 0], [0.2, 0.9, 0.5, 0.1], 100, RATES)
    assert [(p.index, p.form, p.rate) for p in chosen.placements] == [
        (0, "soft", 8), (2, "soft", 4), (1, "text", None), (3, "dropped", None)]
    assert chosen.positions == 93 and "-> 60 as text (1 documents) + 33 soft tokens (2)" in chosen.summary()
    tight = plan([100, 50, 80], [0.2, 0.9, 0.5], 60, RATES)  # 50 whole, 80 at rate 8 (10), nothing left
    assert [(p.index, p.form, p.rate) for p in tight.sent] == [(2, "soft", 8), (1, "text", None)]
    assert tight.placements[-1].index == 0 and tight.placements[-1].form == "dropped"
    assert [p.form for p in plan([100, 200, 80], [0.2, 0.9, 0.5], 1.0, RATES).sent] == ["text"] * 3
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
    budget = n[1] + math.ceil(n[2] / 4) + math.ceil(n[0] / 4)  # room for the most relevant whole, then soft
    chosen = model.plan("what?", DOCS, budget, relevance=scores)
    assert chosen.sent[-1].index == 1 and chosen.sent[-1].form == "text"
    assert all(p.form == "soft" for p in chosen.sent[:-1]) and chosen.positions <= budget
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
    (lambda m: m.answer("what?", "one string"), "must be a list of texts, not str"),
    (lambda m: m.answer(None, DOCS, budget=0.5), "question=None is invalid"),
    (lambda m: m.plan("what?", DOCS, 0.5, relevance=[1.0]), "for 3 documents"),
    (lambda m: m.plan("what?", DOCS, 0.5, relevance=[1.0, float("nan"), 2.0]), "one finite number"),
    (lambda m: m.plan("what?", DOCS, 0.5, relevance="bm25"), "relevance='bm25' is invalid"),
])
def test_bad_budgeted_calls_are_clear_errors(tiny_base, call, message):
    with pytest.raises(ConfigError, match=message):
        call(tiny_model(tiny_base))


def test_a_most_relevant_document_longer_than_the_budget_fills_it_with_its_first_tokens():
    chosen = plan([400, 100, 50], [0.9, 0.5, 0.1], 0.25, RATES)  # 138 positions, the top document has 400 tokens
    assert [(p.index, p.form, p.kept) for p in chosen.sent] == [(0, "prefix", 138)]
    assert chosen.positions == chosen.text_tokens == 138 and chosen.sent[0].describe() == "first 138 tokens"
    assert {p.form for p in chosen.placements[1:]} == {"dropped"}


def test_a_prefix_reaches_the_decoder_as_the_documents_first_tokens(tiny_base):
    model = tiny_model(tiny_base)
    n = [len(ids) for ids in model.tokenize_contexts(DOCS)]
    chosen = model.plan("what?", DOCS, n[1] - 3, relevance=[0.1, 0.9, 0.5])
    assert [(p.index, p.form, p.kept) for p in chosen.sent] == [(1, "prefix", n[1] - 3)]
    [context] = answering.planned_contexts(model, DOCS, chosen)
    assert context.tolist() == model.tokenize_contexts(DOCS)[1][: n[1] - 3]
    answer = model.answer("what?", DOCS, budget=n[1] - 3, relevance=[0.1, 0.9, 0.5], max_new_tokens=4)
    assert answer.text_tokens == n[1] - 3 and answer.soft_tokens == 0


def test_planning_without_a_question_is_a_clear_error(tiny_base):
    with pytest.raises(ConfigError, match="question=None is invalid"):
        tiny_model(tiny_base).plan(None, DOCS, 0.5, relevance=[1.0, 0.5, 0.2])
