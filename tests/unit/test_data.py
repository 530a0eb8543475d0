import json

import pytest

from gmsa import DataError
from gmsa.data import read_documents, read_qa, read_texts


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_qa_schema(tmp_path):
    record = {"question": "q?", "answers": ["a"], "documents": [{"title": "T", "text": "body"}], "gold": [0]}
    [example] = read_qa(write_lines(tmp_path / "qa.jsonl", [json.dumps(record)]))
    assert example.documents == ["T\nbody"]
    assert example.answers == ["a"]


def test_reference_schema(tmp_path):
    record = {"input": "context", "prompt": "q?", "answer": "a"}
    [example] = read_qa(write_lines(tmp_path / "ref.jsonl", [json.dumps(record)]))
    assert (example.question, example.answers, example.documents) == ("q?", ["a"], ["context"])


def test_bad_json_names_file_and_line(tmp_path):
    path = write_lines(tmp_path / "bad.jsonl", [json.dumps({"text": "ok"}), "", "{not json"])
    with pytest.raises(DataError, match=r"bad.jsonl:3: invalid JSON"):
        read_documents(path)


def test_wrong_field_type_names_line_and_field(tmp_path):
    record = {"question": "q", "answers": "not a list", "documents": []}
    with pytest.raises(DataError, match=r"qa.jsonl:1: field 'answers'"):
        read_qa(write_lines(tmp_path / "qa.jsonl", [json.dumps(record)]))


def test_gold_index_out_of_range(tmp_path):
    record = {"question": "q", "answers": ["a"], "documents": ["d"], "gold": [3]}
    with pytest.raises(DataError, match="gold"):
        read_qa(write_lines(tmp_path / "qa.jsonl", [json.dumps(record)]))


def test_text_folder_and_paragraphs(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("first paragraph\n\nsecond paragraph\n")
    (tmp_path / "docs" / "b.txt").write_text("third")
    assert read_documents(tmp_path / "docs") == ["first paragraph\n\nsecond paragraph\n", "third"]
    assert read_texts(tmp_path / "docs") == ["first paragraph", "second paragraph", "third"]


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_documents(tmp_path / "nope.jsonl")
