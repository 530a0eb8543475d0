"""How a compressed document travels through text-only chains: its own text after a short marker.

    [8 river apple]
    The document's text, unchanged.

`8`: read at rate 8; `river apple`: 22 bits of the text's sha256 spelled as two of 2048 words
(`hash_words.txt`), each a single token in SmolLM2's tokenizer. The marker costs a non-GMSA LLM with that
tokenizer 6 tokens a document (50 nq_dev documents; the earlier `<g8 x3kq7a>...</g>` span cost ~14,
`<gmsa-doc rate="8" sha256="...">` ~40); it reads the text as it is. There is no closing tag: a GMSA chat
model finds each marker and takes as the document the shortest text after it, ending at a line break or where
the prompt ends, whose hash the marker spells. A marker that no text after it matches (the text was edited or
reformatted) stays plain text, with one warning. Soft tokens are always looked up by the full hash of the text
actually in the prompt, so a marker, even a crafted or colliding one, can never pull in another document's
soft tokens.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

logger = logging.getLogger(__name__)

_MARKER = re.compile(r"\[(\d{1,4}) ([a-z]{4,7}) ([a-z]{4,7})\]\n")
_warned: set[str] = set()
_warned_lock = threading.Lock()


@lru_cache(maxsize=1)
def _words() -> tuple[str, ...]:
    lines = (Path(__file__).with_name("hash_words.txt")).read_text(encoding="utf-8").splitlines()
    words = tuple(line for line in lines if line and not line.startswith("#"))
    assert len(words) == 2048, "hash_words.txt must hold 2048 words"
    return words


def text_digest(text: str) -> str:
    """The marker's check of its text: 22 bits of its sha256 as two words."""
    bits = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:3], "big") >> 2  # 22 bits
    return f"{_words()[bits >> 11]} {_words()[bits & 2047]}"


def mark_document(text: str, rate: int) -> str:
    """`text` after a marker that asks a GMSA model to read it compressed at `rate`."""
    return f"[{rate} {text_digest(text)}]\n{text}"


def _warn_once(digest: str) -> None:
    with _warned_lock:
        if digest in _warned or len(_warned) > 10_000:
            return
        _warned.add(digest)
    logger.warning("a marked document [.. %s] no longer matches its text (edited or reformatted after it was "
                   "compressed): it is read as plain text", digest)


def unmark(text: str) -> str:
    """The text with every verified marker removed (for text-only consumers)."""
    return "".join(piece if isinstance(piece, str) else piece.text for piece in split_marked(text))


@dataclass(frozen=True)
class MarkedDocument:
    """A verified document: its text and the rate it asks for."""

    text: str
    rate: int


def _document_end(text: str, start: int, limit: int, digest: str) -> int | None:
    """The end of the shortest text[start:end] whose digest is `digest`, ending before a line break, after one,
    or at `limit`; None when none does."""
    for end in range(start, limit + 1):
        boundary = end == limit or text[end] == "\n" or (end > start and text[end - 1] == "\n")
        if boundary and text_digest(text[start:end]) == digest:
            return end
    return None


def split_marked(text: str) -> list[str | MarkedDocument]:
    """Plain text pieces and verified documents, in order; markers that match no text stay text."""
    markers = list(_MARKER.finditer(text))
    pieces: list[str | MarkedDocument] = []
    position = 0
    for marker in markers:
        if marker.start() < position:
            continue  # inside the document before: a marker-like line of its text
        digest = f"{marker.group(2)} {marker.group(3)}"
        end = _document_end(text, marker.end(), len(text), digest)
        if end is None:
            _warn_once(digest)
            continue  # not what the compressor wrote: leave it as text
        if marker.start() > position:
            pieces.append(text[position:marker.start()])
        pieces.append(MarkedDocument(text[marker.end():end], int(marker.group(1))))
        position = end
    if position < len(text):
        pieces.append(text[position:])
    return pieces
