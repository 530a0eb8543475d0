"""Reading users' files: documents, QA examples and AE texts, with errors that name file and line.

Accepted formats:
- QA schema (JSONL): {"question", "answers": [str], "documents": [{"title", "text"}], "gold"?: [int]}
- reference GMSA schema (JSONL): {"input": context, "prompt": question, "answer": str | [str]}
- AE text (JSONL): {"text": str, "title"?: str}
- plain text: a .txt / .md file, or a folder of them
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gmsa.errors import DataError

TEXT_SUFFIXES = (".txt", ".md")


@dataclass
class QAExample:
    """One question with its reference answers and its documents (plain text, in order)."""

    question: str
    answers: list[str]
    documents: list[str]
    gold: list[int] = field(default_factory=list)
    where: str = ""


def _not_utf8(path: Path, error: UnicodeDecodeError, line: int, column_base: int = 0) -> DataError:
    return DataError(str(path), line, f"not UTF-8 text (byte {error.object[error.start]:#04x} at column "
                                      f"{column_base + error.start + 1}): save the file as UTF-8")


def read_text_file(path: Path) -> str:
    """A text file's contents; bytes that are not UTF-8 are a DataError naming file:line."""
    if not path.is_file():  # a named pipe or a device would block or never end
        raise DataError(str(path), None, "not a regular file")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line_start = data.rfind(b"\n", 0, error.start) + 1
        raise _not_utf8(path, UnicodeDecodeError(error.encoding, data[line_start:], error.start - line_start,
                                                 error.end - line_start, error.reason),
                        data.count(b"\n", 0, error.start) + 1) from None


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; malformed lines (bad JSON, bytes that are not UTF-8)
    raise DataError naming file:line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), None, "no such file" if not path.exists() else "not a regular file")
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise _not_utf8(path, error, number) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(str(path), number, f"invalid JSON ({error.msg} at column {error.colno})") from None
            if not isinstance(record, dict):
                raise DataError(str(path), number, f"expected a JSON object, got {type(record).__name__}")
            yield number, record


def _string(record: dict, key: str, path: Path, line: int) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(str(path), line, f"field {key!r} must be a non-empty string, got {value!r:.80}")
    return value


def _document(doc: Any, path: Path, line: int, index: int) -> str:
    if isinstance(doc, str):
        return doc
    if not isinstance(doc, dict) or not isinstance(doc.get("text"), str):
        raise DataError(str(path), line, f"documents[{index}] must be a string or an object with a 'text' string")
    title = doc.get("title")
    return f"{title}\n{doc['text']}" if isinstance(title, str) and title.strip() else doc["text"]


def parse_qa(record: dict[str, Any], path: Path, line: int) -> QAExample:
    """A QA-schema or reference-schema record as a QAExample."""
    where = f"{path}:{line}"
    if "question" in record:
        answers = record.get("answers")
        if not isinstance(answers, list) or not all(isinstance(a, str) and a.strip() for a in answers):
            raise DataError(str(path), line,
                            f"field 'answers' must be a list of non-empty strings, got {answers!r:.80}")
        documents = record.get("documents")
        if not isinstance(documents, list):
            raise DataError(str(path), line, "field 'documents' must be a list")
        gold = record.get("gold", [])
        indices = isinstance(gold, list) and all(type(g) is int and 0 <= g < len(documents) for g in gold)
        if not indices:
            raise DataError(str(path), line, f"field 'gold' must list indices into documents, got {gold!r:.80}")
        docs = [_document(doc, path, line, i) for i, doc in enumerate(documents)]
        return QAExample(_string(record, "question", path, line), answers, docs, gold, where)
    if "input" in record and "prompt" in record:
        answer = record.get("answer")
        answers = [answer] if isinstance(answer, str) else answer
        if not isinstance(answers, list) or not all(isinstance(a, str) and a.strip() for a in answers):
            raise DataError(str(path), line, f"field 'answer' must be a non-empty string or a list of them, got "
                                             f"{answer!r:.80}")
        question, context = _string(record, "prompt", path, line), _string(record, "input", path, line)
        return QAExample(question, answers, [context], [0], where)
    raise DataError(
        str(path), line,
        f"unrecognised record with keys {sorted(record)}: expected the QA schema "
        "('question', 'answers', 'documents') or the reference schema ('input', 'prompt', 'answer')",
    )


def read_qa(path: str | Path, limit: int | None = None) -> list[QAExample]:
    """QA examples of a JSONL file (QA or reference schema), at most `limit`."""
    examples = []
    for line, record in iter_jsonl(path):
        if limit is not None and len(examples) >= limit:
            break
        examples.append(parse_qa(record, Path(path), line))
    if not examples:
        raise DataError(str(path), None, "no records")
    return examples


def keep_documents(example: QAExample, limit: int) -> list[str]:
    """At most `limit` documents, gold ones always kept, original order preserved."""
    if len(example.documents) <= limit:
        return example.documents
    gold = set(example.gold[:limit])
    others = [i for i in range(len(example.documents)) if i not in gold][: limit - len(gold)]
    return [example.documents[i] for i in sorted(gold | set(others))]


def _record_texts(record: dict[str, Any], path: Path, line: int) -> list[str]:
    if "text" in record and "question" not in record:
        return [_string(record, "text", path, line)]
    return parse_qa(record, path, line).documents


def text_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES and p.is_file())
        if not files:
            raise DataError(str(path), None, f"folder holds no {'/'.join(TEXT_SUFFIXES)} files")
        return files
    return [path]


def read_documents(path: str | Path) -> list[str]:
    """Documents for a question: a text file is one document; JSONL gives every record's documents."""
    path = Path(path)
    if not path.exists():
        raise DataError(str(path), None, "no such file or folder")
    if path.suffix.lower() == ".jsonl":
        documents = [text for line, record in iter_jsonl(path) for text in _record_texts(record, path, line)]
        if not documents:
            raise DataError(str(path), None, "no records")
        return documents
    documents = []
    for file in text_files(path):
        text = read_text_file(file)
        if not text.strip():
            raise DataError(str(file), None, "the file is empty")
        documents.append(text)
    return documents


def read_texts(path: str | Path) -> list[str]:
    """AE training texts: JSONL records' texts (or QA contexts), or paragraphs of text files."""
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        return read_documents(path)
    if not path.exists():
        raise DataError(str(path), None, "no such file or folder")
    paragraphs = []
    for file in text_files(path):
        blocks = read_text_file(file).split("\n\n")
        paragraphs.extend(block.strip() for block in blocks if block.strip())
    return paragraphs
