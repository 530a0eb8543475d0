"""Budgeted compression: each document goes to the decoder whole, as soft tokens at one of the checkpoint's
rates, or not at all, so that its positions stay within a budget and the most relevant documents get the most
room.

    budget=0.25     a quarter of the documents' tokens, in decoder positions (a fraction in (0, 1])
    budget=300      300 decoder positions (an integer >= 1)
    budget="auto"   the documents whole when they are short (compressing costs more than it saves below
                    `AUTO_TEXT_TOKENS` tokens in all), else a quarter

The planner is deterministic and greedy: documents are ranked by relevance (ties: the earlier first) and,
most relevant first, each takes the richest form the rest of the budget allows (whole text, then the lowest
rate up), never richer than a more relevant document's (rates follow relevance); one that does not fit even
at the highest rate is dropped. The most relevant document goes whole whenever it fits the budget, and when
it alone is longer than the budget its first tokens fill it as text: that is where the answers are (lab/LOG.md
"Budgeted compression": on 300 nq_dev questions, sending it soft instead answered EM 0.16 against 0.49 for
its first tokens as text on the 45 questions whose top document was longer than a quarter of the tokens).
The decoder reads them in their ranking, the most relevant last (next to the question that follows them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from gmsa.errors import ConfigError

AUTO_TEXT_TOKENS = 64
"""`budget="auto"` keeps every document as text when they hold at most this many tokens in all."""
AUTO_FRACTION = 0.25
"""`budget="auto"` otherwise spends this fraction of the documents' tokens."""

Budget = float | int | str


@dataclass(frozen=True)
class Placement:
    """How one document is sent: "text" (whole), "prefix" (its first `kept` tokens as text), "soft" (at
    `rate`) or "dropped"."""

    index: int
    """Its position in the caller's list of documents."""
    form: str
    rate: int | None
    tokens: int
    """Its length in tokens as text."""
    relevance: float
    kept: int | None = None
    """With "prefix": how many of its first tokens are sent."""

    @property
    def positions(self) -> int:
        """Decoder positions it takes."""
        if self.form in ("text", "prefix"):
            return self.kept if self.form == "prefix" else self.tokens
        return math.ceil(self.tokens / self.rate) if self.form == "soft" else 0

    def describe(self) -> str:
        return {"text": "text", "prefix": f"first {self.kept} tokens", "soft": f"rate {self.rate}",
                "dropped": "dropped"}[self.form]


@dataclass(frozen=True)
class Plan:
    """Every document's placement, in the order the decoder reads them (dropped ones last), and the budget."""

    budget: int
    """Decoder positions the documents may take."""
    placements: tuple[Placement, ...]

    @property
    def sent(self) -> list[Placement]:
        """The documents the decoder reads, in reading order (the most relevant last)."""
        return [p for p in self.placements if p.form != "dropped"]

    @property
    def positions(self) -> int:
        return sum(p.positions for p in self.placements)

    @property
    def text_tokens(self) -> int:
        return sum(p.positions for p in self.placements if p.form in ("text", "prefix"))

    @property
    def soft_tokens(self) -> int:
        return sum(p.positions for p in self.placements if p.form == "soft")

    @property
    def document_tokens(self) -> int:
        """What every document would cost as text."""
        return sum(p.tokens for p in self.placements)

    def summary(self) -> str:
        counts = {form: sum(p.form == form for p in self.placements) for form in ("text", "soft", "dropped")}
        counts["text"] += sum(p.form == "prefix" for p in self.placements)
        return (f"{self.document_tokens} document tokens -> {self.text_tokens} as text ({counts['text']} documents) + "
                f"{self.soft_tokens} soft tokens ({counts['soft']}), {counts['dropped']} dropped; budget {self.budget}")


def budget_positions(budget: Budget, document_tokens: int) -> int | None:
    """Decoder positions for `budget` over documents of `document_tokens` tokens in all; None: no limit
    (`"auto"` with short documents). Errors name the budget and what it may be."""
    if isinstance(budget, str):
        if budget != "auto":
            raise ConfigError(f"budget={budget!r} is invalid: a fraction in (0, 1], a number of positions >= 1, "
                              "or 'auto'")
        return None if document_tokens <= AUTO_TEXT_TOKENS else math.ceil(AUTO_FRACTION * document_tokens)
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget):
        raise ConfigError(f"budget={budget!r} is invalid: a fraction in (0, 1], a number of positions >= 1, "
                          "or 'auto'")
    if isinstance(budget, float):
        if not 0 < budget <= 1:
            raise ConfigError(f"budget={budget!r} is invalid: a fraction of the documents' tokens is in (0, 1]; "
                              "pass an integer for a number of decoder positions")
        return max(1, math.ceil(budget * document_tokens))
    if budget < 1:
        raise ConfigError(f"budget={budget!r} is invalid: a number of decoder positions is >= 1")
    return budget


def parse_budget(text: str) -> Budget:
    """A budget written on a command line: "auto", an integer number of positions, or a fraction."""
    if text == "auto":
        return text
    try:
        value: Budget = float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise ConfigError(f"budget={text!r} is invalid: a fraction in (0, 1], a number of positions >= 1, "
                          "or 'auto'") from None
    budget_positions(value, 1)  # its checks, with their messages
    return value


def plan(tokens: Sequence[int], relevance: Sequence[float], budget: Budget, rates: Sequence[int]) -> Plan:
    """Place documents of `tokens` tokens, scored `relevance` (higher: more relevant), within `budget`,
    each whole, at one of `rates`, or dropped. Empty documents are dropped. A budget too small for any
    document at the highest rate is an error (never an empty prompt by surprise)."""
    if len(tokens) != len(relevance):
        raise ValueError(f"{len(tokens)} documents but {len(relevance)} relevance scores")
    if not rates:
        raise ValueError("plan needs at least one compression rate")
    limit = budget_positions(budget, sum(tokens))
    ranked = sorted(range(len(tokens)), key=lambda i: (-relevance[i], i))  # most relevant first
    if limit is None:  # "auto" over short documents: everything whole
        forms = {i: ("text", None) for i in ranked if tokens[i]}
        return _ordered(sum(tokens), forms, tokens, relevance, ranked)
    highest = max(rates)
    smallest = min((math.ceil(n / highest) for n in tokens if n), default=0)
    if smallest > limit:
        raise ConfigError(f"budget={budget!r} ({limit} decoder positions) is smaller than any document at the "
                          f"highest rate {highest} (the smallest takes {smallest}): raise the budget")
    best = next((i for i in ranked if tokens[i]), None)
    if best is not None and tokens[best] > limit:  # the most relevant alone overflows: its first tokens as text
        first = Placement(best, "prefix", None, tokens[best], relevance[best], kept=limit)
        rest = [Placement(i, "dropped", None, tokens[i], relevance[i]) for i in ranked if i != best]
        return Plan(limit, (first, *rest))
    options: list[str | int] = ["text", *sorted(rates)]  # richest first
    forms: dict[int, tuple[str, int | None]] = {}
    left, richest = limit, 0
    for i in ranked:
        if not tokens[i]:
            continue
        for position in range(richest, len(options)):
            option = options[position]
            cost = tokens[i] if option == "text" else math.ceil(tokens[i] / option)
            if cost <= left:
                forms[i] = ("text", None) if option == "text" else ("soft", option)
                left, richest = left - cost, position
                break
    return _ordered(limit, forms, tokens, relevance, ranked)


def text_only(tokens: Sequence[int], relevance: Sequence[float], budget: Budget) -> list[tuple[int, int]]:
    """The planner's text-only alternative (`rerank-text`, and the mixed reader's text layouts): the most relevant
    documents whole until `budget`, the next one cut to what is left; (index, tokens kept), most relevant last."""
    left, kept = budget_positions(budget, sum(tokens)), []
    if left is None:  # "auto" over short documents: everything whole
        left = sum(tokens)
    for i in sorted(range(len(tokens)), key=lambda i: (-relevance[i], i)):  # most relevant first
        if left <= 0:
            break
        if tokens[i]:
            kept.append((i, min(tokens[i], left)))
            left -= kept[-1][1]
    return kept[::-1]


def _ordered(limit: int, forms: dict[int, tuple[str, int | None]], tokens: Sequence[int],
             relevance: Sequence[float], ranked: list[int]) -> Plan:
    """The plan in reading order: sent documents least relevant first (the most relevant next to the question),
    then the dropped ones."""
    sent = [Placement(i, *forms[i], tokens[i], relevance[i]) for i in reversed(ranked) if i in forms]
    dropped = [Placement(i, "dropped", None, tokens[i], relevance[i]) for i in ranked if i not in forms]
    return Plan(limit, tuple(sent + dropped))
