"""Where a question's answer sits in the documents it reads: the earliest reference answer, verbatim, in a gold one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from gmsa.data import QAExample


@dataclass(frozen=True)
class AnswerLocation:
    """`document`: index into the documents read; `first_token` and `tokens`: the answer's first token and
    length, and `document_tokens`: the document's length, counted as the encoder and decoder tokenise it."""

    document: int
    first_token: int
    tokens: int
    document_tokens: int


def locate_answer(tokenizer: PreTrainedTokenizerBase, example: QAExample,
                  documents: Sequence[str]) -> AnswerLocation | None:
    """The earliest reference answer found verbatim in a gold document of `documents` (the first such document),
    or None when no gold document holds one."""
    gold_texts = {example.documents[i] for i in example.gold}
    for index, text in enumerate(documents):
        if text not in gold_texts:
            continue
        found = [(text.find(ref), ref) for ref in example.answers if ref.strip() and ref in text]
        if not found:
            continue
        char, ref = min(found)
        spans = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True).offset_mapping
        first = next(t for t, (_, end) in enumerate(spans) if end > char)
        last = next(t for t, (_, end) in enumerate(spans) if end >= char + len(ref))
        return AnswerLocation(index, first, last - first + 1, len(spans))
    return None
