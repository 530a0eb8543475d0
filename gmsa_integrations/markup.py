"""How a compressed document travels through text-only chains: a marked span around its own text.

    <gmsa-doc rate="8" sha256="3f0c9a1e5b7d2c46">
    The document's text, unchanged.
    </gmsa-doc>

A non-GMSA LLM reads the text as it is. A GMSA chat model finds each span, checks that the
hash matches the text inside (an edited, truncated or crafted span stays plain text), and
replaces the span by that text's soft tokens, from the cache or compressed anew. Soft tokens
are always looked up by the hash of the text actually in the prompt, so no marker can pull in
another document's soft tokens.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_SPAN = re.compile(r'<gmsa-doc rate="(\d{1,4})" sha256="([0-9a-f]{16})">\n(.*?)\n</gmsa-doc>', re.DOTALL)


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def mark_document(text: str, rate: int) -> str:
    """`text` wrapped in a span that asks a GMSA model to read it compressed at `rate`."""
    return f'<gmsa-doc rate="{rate}" sha256="{text_digest(text)[:16]}">\n{text}\n</gmsa-doc>'


def unmark(text: str) -> str:
    """The text with every valid span replaced by its plain content (for text-only consumers)."""
    return "".join(piece if isinstance(piece, str) else piece.text for piece in split_marked(text))


@dataclass(frozen=True)
class MarkedDocument:
    """A verified span: the document's text and the rate it asks for."""

    text: str
    rate: int


def split_marked(text: str) -> list[str | MarkedDocument]:
    """Plain text pieces and verified documents, in order; spans whose hash fails stay text."""
    pieces: list[str | MarkedDocument] = []
    position = 0
    for match in _SPAN.finditer(text):
        rate, digest, body = int(match.group(1)), match.group(2), match.group(3)
        if text_digest(body)[:16] != digest:
            continue  # not what the compressor wrote: leave it as text
        if match.start() > position:
            pieces.append(text[position:match.start()])
        pieces.append(MarkedDocument(body, rate))
        position = match.end()
    if position < len(text):
        pieces.append(text[position:])
    return pieces
