"""Extractive answers: generation constrained to quote a span of the documents.

A RAG system holds the text of every document it compresses, even though the decoder reads only
soft tokens. When answers are spans of those documents (factoid QA), that text can constrain
decoding at almost no cost: the decoder still reads soft tokens only (no prefill of the text), and
at each step the best-scoring token that keeps the answer a quote is taken. The answer must start at
a word start of some document and end (EOS) at a word end; matching ignores case and runs of
whitespace. Measured on nq_dev in BENCHMARKS.md ("Answers that quote the documents").
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedTokenizerBase

WHITESPACE = frozenset(" \t\n\r\f\v")


def _normal_map(text: str) -> tuple[str, list[int]]:
    """`text` normalised as quotes are matched (each character lower-cased, each run of whitespace one space),
    and for each normalised character the index of the character of `text` it comes from."""
    normal: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        if char in WHITESPACE:
            if normal and normal[-1] == " " and origin[-1] == index - 1:
                origin[-1] = index  # the run goes on: one space, from the run's last character
                continue
            piece = " "
        else:
            piece = char.lower()  # one character may lower to two ("İ")
        normal.append(piece)
        origin.extend([index] * len(piece))
    return "".join(normal), origin


def _normal(text: str) -> str:
    """How quotes are matched: lower case, each run of whitespace one space."""
    return _normal_map(text)[0]


@functools.lru_cache(maxsize=4)
def token_pieces(tokenizer: PreTrainedTokenizerBase) -> tuple[dict[str, list[int]], int]:
    """Every token's text, normalised as quotes are matched -> the token ids that decode to it, and the
    longest such text."""
    pieces: dict[str, list[int]] = {}
    special = set(tokenizer.all_special_ids)
    for token in range(len(tokenizer)):
        if token in special:
            continue
        text = _normal(tokenizer.decode([token]))
        if text and "\ufffd" not in text:  # a partial UTF-8 byte cannot be matched against text
            pieces.setdefault(text, []).append(token)
    return pieces, max(map(len, pieces))


def _word_starts(source: str) -> list[int]:
    return [i for i in range(len(source)) if not source[i].isspace() and (i == 0 or not source[i - 1].isalnum())]


def _ends_a_word(source: str, end: int, quote: str) -> bool:
    return end == len(source) or not (source[end].isalnum() and quote[-1].isalnum())


def is_quote(text: str, sources: Sequence[str]) -> bool:
    """Is `text` a whole quote of a source as `QuoteConstraint` matches one (from a word start to a word end,
    any case and spacing)? Greedy decoding under the constraint leaves such an answer as it was."""
    quote = _normal(text).strip()
    for source in map(_normal, sources):
        for at in _word_starts(source):
            if quote and source.startswith(quote, at) and _ends_a_word(source, at + len(quote), quote):
                return True
    return False


def respell(text: str, sources: Sequence[str], settled_only: bool = False) -> str:
    """`text` with the characters it quotes written as the source writes them.

    Quotes match in any case, so a decoder may write "DriNkInG" for a document's "drinking". The spelling
    comes from the first source span (from a word start) that quotes the longest quoted start of `text`;
    whitespace, and characters past the end of the quote, stay as generated. With `settled_only`, only the
    longest start whose spelling no continuation of `text` can change is returned (every span still
    quoting it spells it alike): a stream that shows that while generating, then the whole, shows exactly
    what `respell` gives once generation is done.
    """
    maps = [_normal_map(source) for source in sources]
    quoted, ranges = "", []  # the normalised text as QuoteConstraint matches it; each character's range in it
    for char in text:
        if char in WHITESPACE:
            quoted += " " if quoted and not quoted.endswith(" ") else ""
            ranges.append(None)
        else:
            ranges.append((len(quoted), len(quoted) + len(char.lower())))
            quoted += char.lower()
    matched = {(k, at): _common_prefix(normal, at, quoted)
               for k, (normal, _) in enumerate(maps) for at in _word_starts(normal)}
    longest = max(matched.values(), default=0)
    spans = [span for span, length in matched.items() if length == longest] if longest else []
    if not spans:
        return text

    def spelled(k: int, at: int) -> list[str]:
        out, last = [], None  # last: the source character written last (one may lower to two)
        for char, where in zip(text, ranges):
            if where is None or where[1] > longest:
                out.append(char)
                last = None
                continue
            origin = list(dict.fromkeys(maps[k][1][at + where[0]:at + where[1]]))
            out.append("".join(sources[k][i] for i in origin if i != last))
            last = origin[-1]
        return out

    first = spelled(*spans[0])
    if not settled_only:
        return "".join(first)
    others = [spelled(*span) for span in spans[1:]]
    settled = next((i for i, piece in enumerate(first) if any(o[i] != piece for o in others)), len(first))
    return "".join(first[:settled])


def _common_prefix(source: str, at: int, quoted: str) -> int:
    """How many characters of `quoted` the source repeats from `at` on."""
    length = 0
    while length < len(quoted) and at + length < len(source) and source[at + length] == quoted[length]:
        length += 1
    return length


class QuoteConstraint(LogitsProcessor):
    """Allow only the tokens that keep each row's generated text a quote of that row's sources, and EOS
    once it is a whole quote (it ends at a word end). The quote starts at a word start; case and runs of
    whitespace are ignored. A row with nothing left to quote is left unconstrained (it may end).

    Generation must run from input embeddings, so `input_ids` holds the generated tokens only (B, N).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, sources: Sequence[Sequence[str]]) -> None:
        for index, row in enumerate(sources):
            if isinstance(row, str) or not all(isinstance(s, str) for s in row):
                hint = " (wrap one text in a list)" if isinstance(row, str) else ""
                raise TypeError(f"quote_from[{index}] must be a list of the texts answer {index} may quote, "
                                f"not {type(row).__name__}{hint}")
        self.tokenizer = tokenizer
        self.sources = [[_normal(s) for s in row] for row in sources]
        self.starts = [[_word_starts(s) for s in row] for row in self.sources]
        self.pieces, self.longest = token_pieces(tokenizer)

    def _allowed(self, row: int, so_far: str) -> tuple[set[int], bool]:
        """Tokens that continue the quote `so_far` in this row's sources, and whether it may end here."""
        allowed: set[int] = set()
        complete = False
        for source, starts in zip(self.sources[row], self.starts[row]):
            for at in starts:
                if not source.startswith(so_far, at):
                    continue
                end = at + len(so_far)
                rest = source[end:end + self.longest]
                if so_far and _ends_a_word(source, end, so_far):
                    complete = True
                # A first token may carry the space before its word, but must hold more than the space.
                ahead = ((rest, 1), (" " + rest, 2)) if not so_far else ((rest, 1),)
                for text, shortest in ahead:
                    for length in range(shortest, len(text) + 1):
                        allowed.update(self.pieces.get(text[:length], ()))
        return allowed, complete

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[0] != len(self.sources):
            raise ValueError(f"QuoteConstraint got {input_ids.shape[0]} rows for {len(self.sources)} source lists")
        keep = torch.zeros_like(scores, dtype=torch.bool)  # (B, V)
        for row, ids in enumerate(input_ids.tolist()):
            so_far = _normal(self.tokenizer.decode(ids, skip_special_tokens=True)).lstrip()
            allowed, complete = self._allowed(row, so_far)
            if not allowed and not complete:
                keep[row] = True  # nothing to quote (or the quote was left): leave this row free
                continue
            keep[row, list(allowed)] = True
            if complete:
                keep[row, self.tokenizer.eos_token_id] = True
        return scores.masked_fill(~keep, float("-inf"))  # (B, V)


def quote_processors(
    tokenizer: PreTrainedTokenizerBase, quote_from: Sequence[Sequence[str]] | None
) -> LogitsProcessorList | None:
    """Generation's logits processors for answers that quote `quote_from[i]` (row i); None: unconstrained."""
    return None if quote_from is None else LogitsProcessorList([QuoteConstraint(tokenizer, quote_from)])
