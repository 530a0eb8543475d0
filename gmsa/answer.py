"""What `GMSA.answer` returns: the answer and what it cost."""

from __future__ import annotations

from dataclasses import dataclass

from gmsa.plan import Plan


@dataclass
class Answer:
    """An answer with what it cost: document tokens in, decoder positions they took, seconds spent."""

    text: str
    rate: int | None
    """The fixed rate every document was compressed at; None when a budget plan decided (`plan`)."""
    context_tokens: int
    """What the documents would cost as text."""
    soft_tokens: int
    """Soft tokens the decoder read."""
    compress_seconds: float
    generate_seconds: float
    text_tokens: int = 0
    """Document tokens the decoder read as text (a budget plan's whole documents)."""
    plan: Plan | None = None
    """How each document was sent, with a budget."""

    @property
    def compression(self) -> float:
        """Document tokens per decoder position they took."""
        return self.context_tokens / max(self.soft_tokens + self.text_tokens, 1)
