"""Extractive answers: generation constrained to quote the documents (gmsa.decode.extractive)."""

import re

import pytest
import torch

from gmsa import GMSA
from gmsa.decode.extractive import QuoteConstraint, is_quote, respell

DOCUMENTS = ["Paris is the capital of France and its largest city.", "The quick brown fox jumps over the lazy dog."]


def normal(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower()).strip()


def starts_a_quote(answer: str, sources: list[str]) -> bool:
    """A span of a source starting at a word start, in any case and spacing (the end may be cut by the
    token limit)."""
    return any(re.search(rf"(?<!\w){re.escape(normal(answer))}", normal(s)) for s in sources)


@pytest.fixture(scope="module")
def model(tiny_checkpoint) -> GMSA:
    return GMSA.from_pretrained(tiny_checkpoint, device="cpu")


def test_constrained_answers_quote_their_documents(model):
    questions = ["What is the capital of France?", "Who jumps?", "What is in the text?"]
    contexts = [model.compress(DOCUMENTS, 2), model.compress(DOCUMENTS[1:], 4), model.compress(DOCUMENTS[:1], 2)]
    sources = [DOCUMENTS, DOCUMENTS[1:], DOCUMENTS[:1]]
    free = model.answer_questions(questions, contexts, max_new_tokens=12)
    quoted = model.answer_questions(questions, contexts, quote_from=sources, max_new_tokens=12)
    assert not all(starts_a_quote(a, s) for a, s in zip(free, sources)), "the random model quotes by itself: no test"
    for answer, row in zip(quoted, sources):
        assert answer.strip() and starts_a_quote(answer, row), (answer, row)
        assert any(" ".join(answer.split()) in " ".join(d.split()) for d in row), (answer, row)  # as spelled there
    # one by one gives the same quotes (the constraint follows each row on its own)
    alone = [model.answer_questions([q], [c], quote_from=[s], max_new_tokens=12)[0]
             for q, c, s in zip(questions, contexts, sources)]
    assert alone == quoted


def test_constraint_keeps_the_best_token_that_continues_a_quote(model):
    tokenizer = model.tokenizer
    constraint = QuoteConstraint(tokenizer, [["Paris is the capital of France."]])
    so_far = tokenizer("Paris is the", add_special_tokens=False).input_ids
    scores = torch.zeros(1, len(tokenizer))
    wrong = tokenizer(" quick", add_special_tokens=False).input_ids[0]
    right = tokenizer(" capital", add_special_tokens=False).input_ids[0]
    scores[0, wrong], scores[0, right] = 5.0, 1.0
    masked = constraint(torch.tensor([so_far]), scores)  # (1, V)
    assert masked[0].argmax().item() == right
    assert masked[0, tokenizer.eos_token_id] == 0.0  # "Paris is the" ends at a word end: it may stop
    whole = tokenizer("Paris is the capital", add_special_tokens=False).input_ids
    mid_word = whole[:-1]  # the tiny tokenizer splits "capital" into several tokens
    assert normal(tokenizer.decode(mid_word)).startswith("paris is the cap") and mid_word != whole
    assert constraint(torch.tensor([mid_word]), scores)[0, tokenizer.eos_token_id] == float("-inf")
    assert constraint(torch.tensor([whole]), scores)[0, tokenizer.eos_token_id] == 0.0  # may end at a word end


def test_a_row_without_sources_is_free_and_rows_must_match(model):
    tokenizer = model.tokenizer
    scores = torch.randn(2, len(tokenizer))
    masked = QuoteConstraint(tokenizer, [[], ["Paris"]])(torch.zeros(2, 0, dtype=torch.long), scores)
    assert torch.equal(masked[0], scores[0])
    assert torch.isinf(masked[1]).sum() > 0
    with pytest.raises(ValueError, match="3 rows for 2 source lists"):
        QuoteConstraint(tokenizer, [[], []])(torch.zeros(3, 0, dtype=torch.long), torch.zeros(3, len(tokenizer)))
    with pytest.raises(TypeError, match=r"quote_from\[0\] must be a list .* \(wrap one text in a list\)"):
        model.answer_questions(["a?"], [[]], quote_from=["Paris"])
    with pytest.raises(ValueError, match="quote_from has 1 entries for 2 conversations"):
        model.answer_questions(["a?", "b?"], [[], []], quote_from=[["Paris"]])


def test_a_whole_quote_runs_from_a_word_start_to_a_word_end():
    assert is_quote("paris  IS", ["Hello. Paris is\nthe capital."])  # any case and spacing
    assert is_quote("(born 1955)", ["Jesse Corti (born 1955) is an actor."])
    assert not is_quote("aris", ["Paris"])  # not from a word start
    assert not is_quote("Par", ["Paris"])  # not to a word end
    assert not is_quote("", ["Paris"]) and not is_quote("x", [])


def test_quotes_are_respelled_as_their_source_writes_them():
    sources = ["He was Drinking  water in\nNew York.", "The Jungle Book (İstanbul edition) is the book."]
    assert respell("DriNkInG", sources) == "Drinking"
    assert respell(" drinking water in new   YORK", sources) == " Drinking water in New   York"  # spaces kept
    assert respell("the jungle BOOK (i̇stanbul", sources) == "The Jungle Book (İstanbul"  # one char lowers to two
    assert respell("THE BOOK.", sources) == "the book."  # the span that quotes it, not the first "The"
    assert respell("new yorkshire", sources) == "New Yorkshire"  # past the end of the quote: as generated
    assert respell("xyz new", sources) == "xyz new"
    # While "the" could still become "The Jungle" or "the book", its spelling is not settled.
    assert respell("the", sources, settled_only=True) == ""
    text = " the book. And more"
    for end in range(len(text) + 1):  # what a stream shows at any point is the start of the whole answer
        assert respell(text, sources).startswith(respell(text[:end], sources, settled_only=True))
    assert respell(text, sources) == " the book. And more"
