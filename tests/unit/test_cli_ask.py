import json

import pytest
import torch

from gmsa import GMSA, GMSAConfig
from gmsa.cli.ask import main


def test_ask_prints_answer_compression_and_time(tiny_base, tmp_path, capsys):
    config = GMSAConfig(base_model=str(tiny_base), encoder_layers=2, lora_rank=4, rates=(2, 4), segment_tokens=16,
                        generation={"max_new_tokens": 4})
    torch.manual_seed(0)
    GMSA.from_base(str(tiny_base), config).save_pretrained(tmp_path / "ckpt")
    record = {"question": "Who?", "answers": ["fox"], "documents": [{"title": "Fox", "text": "The quick brown fox."}]}
    (tmp_path / "qa.jsonl").write_text(json.dumps(record) + "\n")
    code = main(["ask", "--documents", str(tmp_path / "qa.jsonl"), "--record", "1", "--rate", "2",
                 "--checkpoint", str(tmp_path / "ckpt"), "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    assert "question: Who?" in out and "expected: fox" in out
    assert "soft tokens (rate 2" in out and "time:" in out
    assert main(["ask", "--documents", str(tmp_path / "qa.jsonl"), "--record", "1", "--rate", "2", "--extractive",
                 "--checkpoint", str(tmp_path / "ckpt"), "--device", "cpu"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("answer:"))
    answer = " ".join(line[len("answer:"):].lower().split())  # quotes match in any case and spacing
    assert answer and answer in "fox the quick brown fox."  # a quote of the document ("Fox\nThe quick ...")


def test_ask_reports_bad_file_with_line(tmp_path, capsys):
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"broken": \n')
    code = main(["ask", "--documents", str(tmp_path / "bad.jsonl"), "--question", "q"])
    assert code == 2
    assert "bad.jsonl:2: invalid JSON" in capsys.readouterr().err


def test_rag_reports_a_missing_documents_folder(tmp_path, capsys):
    code = main(["rag", "--question", "q", "--documents", str(tmp_path / "missing")])
    assert code == 2
    assert "missing: no such file or folder" in capsys.readouterr().err


def test_ask_reads_only_the_documents_closest_to_the_question(tiny_checkpoint, tmp_path, capsys):
    record = {"question": "What is the capital of France?", "answers": ["Paris"], "documents": [
        {"title": "Foxes", "text": "The quick brown fox jumps over the lazy dog."},
        {"title": "Paris", "text": "Paris is the capital and largest city of France."},
        {"title": "Soft tokens", "text": "Soft tokens are vectors that a decoder reads."}]}
    (tmp_path / "qa.jsonl").write_text(json.dumps(record) + "\n")
    args = ["ask", "--documents", str(tmp_path / "qa.jsonl"), "--record", "1", "--checkpoint", str(tiny_checkpoint),
            "--device", "cpu", "--max-new-tokens", "6", "--extractive"]
    assert main(args + ["--top-n", "1"]) == 0
    out = capsys.readouterr().out
    assert "context:  1 of 3 documents (MiniLM top 1)" in out
    answer = next(line for line in out.splitlines() if line.startswith("answer:"))[len("answer:"):].strip()
    assert answer and " ".join(answer.split()) in "Paris Paris is the capital and largest city of France."
    with pytest.raises(SystemExit):
        main(args + ["--top-n", "0"])
    assert "'0' is not an integer >= 1" in capsys.readouterr().err


def test_rag_passages_are_sentence_chunks_within_one_paragraph(tmp_path):
    from gmsa_integrations.demo import passages

    sentence = "Soft tokens are vectors that a decoder reads instead of text."  # 62 characters
    (tmp_path / "a.md").write_text(f"# Title A\n\n{' '.join([sentence] * 5)}\n\nA short second paragraph.\n")
    documents = passages(tmp_path, chunk_chars=150)
    texts = [d.page_content.removeprefix("Title A: ") for d in documents]
    assert texts == [f"{sentence} {sentence}", f"{sentence} {sentence}", sentence, "A short second paragraph."]
    assert {d.metadata["source"] for d in documents} == {"a.md"}
