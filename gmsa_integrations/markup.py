"""How a compressed document travels through text-only chains: a marked span around its own text.

    <g8 x3kq7a>
    The document's text, unchanged.
    </g>

`g8`: read at rate 8; `x3kq7a`: the first 30 bits of the text's sha256 in base32. The span costs a non-GMSA
LLM ~14 tokens a document (SmolLM2's tokenizer, 50 nq_dev documents; the earlier
`<gmsa-doc rate="8" sha256="<16 hex>">` cost ~40). A non-GMSA LLM reads the text as it is. A GMSA chat model
finds each span, checks that the hash matches the text inside (an edited or crafted span stays plain text,
with one warning per span), and replaces the span by that text's soft tokens, from the cache or compressed
anew. Soft tokens are always looked up by the full hash of the text actually in the prompt, so no marker can
pull in another document's soft tokens.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import threading
from dataclasses import dataclass

logger = logging.getLogger(__name__)

_SPAN = re.compile(r"<g(\d{1,4}) ([a-z2-7]{6})>\n(.*?)\n</g>", re.DOTALL)
_warned: set[str] = set()
_warned_lock = threading.Lock()


def text_digest(text: str) -> str:
    """The span's check of its text: 6 base32 characters (30 bits) of its sha256."""
    return base64.b32encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()[:6].lower()


def mark_document(text: str, rate: int) -> str:
    """`text` wrapped in a span that asks a GMSA model to read it compressed at `rate`."""
    return f"<g{rate} {text_digest(text)}>\n{text}\n</g>"


def _warn_once(digest: str) -> None:
    with _warned_lock:
        if digest in _warned or len(_warned) > 10_000:
            return
        _warned.add(digest)
    logger.warning("a marked document <g.. %s> no longer matches its text (edited or reformatted after it was "
                   "compressed): it is read as plain text", digest)


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
        if text_digest(body) != digest:
            _warn_once(digest)
            continue  # not what the compressor wrote: leave it as text
        if match.start() > position:
            pieces.append(text[position:match.start()])
        pieces.append(MarkedDocument(body, rate))
        position = match.end()
    if position < len(text):
        pieces.append(text[position:])
    return pieces
