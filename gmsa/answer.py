"""What `GMSA.answer` returns: the answer and what it cost."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Answer:
    """An answer with what it cost: tokens in, soft tokens out, seconds spent."""

    text: str
    rate: int
    context_tokens: int
    soft_tokens: int
    compress_seconds: float
    generate_seconds: float

    @property
    def compression(self) -> float:
        return self.context_tokens / max(self.soft_tokens, 1)
