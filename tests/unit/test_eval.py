"""gmsa-eval on a tiny checkpoint: reconstruction and QA results, JSON + Markdown, table merging."""

import json

import pytest

from gmsa.cli.eval import main as eval_main
from gmsa.evaluation.qa import System
from gmsa.evaluation.reconstruction import score_reconstruction


def test_scores_of_a_perfect_and_an_empty_restatement():
    text = "the quick brown fox jumps over the lazy dog"
    perfect = score_reconstruction([text], [text], semantic=False)
    assert perfect == {"bleu4": pytest.approx(1.0), "rouge_l": 1.0, "prefix_em": 1.0}
    assert score_reconstruction([""], [text], semantic=False) == {"bleu4": 0.0, "rouge_l": 0.0, "prefix_em": 0.0}


def test_systems_parse_and_reject_nonsense():
    assert [System.parse(s).name for s in ("gmsa@8", "uncompressed", "closed-book")] == [
        "gmsa@8", "uncompressed", "closed-book"]
    with pytest.raises(ValueError, match="gmsa@RATE"):
        System.parse("gmsa")


def test_reconstruction_and_qa_write_json_and_markdown(tiny_checkpoint, tmp_path, capsys):
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": t}) + "\n" for t in
                             ["Paris is the capital of France.", "Soft tokens are vectors.", "The fox jumps."]))
    assert eval_main(["reconstruction", "--checkpoint", str(tiny_checkpoint), "--texts", str(texts), "--last", "2",
                      "--rates", "2", "4", "--no-similarity", "--device", "cpu", "--out", str(tmp_path / "r")]) == 0
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert result["task"] == "reconstruction" and result["texts"] == 2
    assert set(result["rates"]) == {"2", "4"} and 0 <= result["rates"]["2"]["bleu4"] <= 1
    assert "| 2 |" in (tmp_path / "r" / "table.md").read_text()

    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": f"Where is {c}?", "answers": [c], "documents": [
        {"title": c, "text": f"{c} is in France."}, {"title": "x", "text": "Soft tokens are vectors."}], "gold": [0]})
        + "\n" for c in ("Paris", "Lyon")))
    assert eval_main(["qa", "--checkpoint", str(tiny_checkpoint), "--data", str(qa), "--documents", "1",
                      "--systems", "gmsa@2", "uncompressed", "closed-book", "--device", "cpu",
                      "--max-new-tokens", "4", "--label", "tiny", "--out", str(tmp_path / "q")]) == 0
    result = json.loads((tmp_path / "q" / "result.json").read_text())
    assert list(result["systems"]) == ["gmsa@2", "uncompressed", "closed-book"]
    assert all(set(s) == {"em", "f1", "accuracy", "seconds_per_question"} for s in result["systems"].values())
    capsys.readouterr()
    assert eval_main(["table", str(tmp_path / "q" / "result.json"), str(tmp_path / "q" / "result.json")]) == 0
    assert capsys.readouterr().out.count("tiny: gmsa@2") == 2
    # reconstruction and QA results together (as recipes/eval-default.sh passes them): one table each
    assert eval_main(["table", str(tmp_path / "r" / "result.json"), str(tmp_path / "q" / "result.json")]) == 0
    tables = capsys.readouterr().out.split("\n\n")
    assert len(tables) == 2 and "tiny: gmsa@2" in tables[0] and "bleu" in tables[1].lower()
    assert not list(tmp_path.glob("*/*.partial"))


def test_a_bad_system_is_a_clear_error(tiny_checkpoint, tmp_path, capsys):
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "q?", "answers": ["a"], "documents": [{"title": "t", "text": "a"}]}) + "\n")
    assert eval_main(["qa", "--checkpoint", str(tiny_checkpoint), "--data", str(qa), "--systems", "gmsa@x",
                      "--out", str(tmp_path / "o")]) == 2
    assert "gmsa@RATE" in capsys.readouterr().err


@pytest.mark.parametrize("content, problem", [
    (None, "cannot read it"),
    ('{"task": "qa",\n "systems": ', "invalid JSON"),
    ('{"rates": {}}', "not a gmsa-eval result"),
])
def test_table_names_a_file_that_is_not_a_result(tmp_path, capsys, content, problem):
    path = tmp_path / "result.json"
    if content is not None:
        path.write_text(content)
    assert eval_main(["table", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and problem in err and "gmsa-eval run" in err
