"""gmsa-eval on a tiny checkpoint: reconstruction and QA results, JSON + Markdown, table merging."""

import json
import math
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark

from gmsa.cli.eval import main as eval_main
from gmsa.data import read_qa
from gmsa.evaluation.compare import compare_table, paired_difference, select_system
from gmsa.evaluation.qa import System, select_documents
from gmsa.evaluation.reconstruction import score_reconstruction


def test_scores_of_a_perfect_and_an_empty_restatement():
    text = "the quick brown fox jumps over the lazy dog"
    perfect = score_reconstruction([text], [text], semantic=False)
    assert perfect == {"bleu4": pytest.approx(1.0), "rouge_l": 1.0, "prefix_em": 1.0}
    assert score_reconstruction([""], [text], semantic=False) == {"bleu4": 0.0, "rouge_l": 0.0, "prefix_em": 0.0}


def test_systems_parse_and_reject_nonsense():
    assert [System.parse(s).name for s in ("gmsa@8", "uncompressed", "closed-book")] == [
        "gmsa@8", "uncompressed", "closed-book"]
    assert System.parse("gmsa@4+extractive") == System("gmsa", 4, extractive=True)
    assert System.parse("uncompressed+extractive").name == "uncompressed+extractive"
    assert System.parse("budget@0.25") == System("budget", None, fraction=0.25)
    assert System.parse("rerank-text@1+extractive").name == "rerank-text@1+extractive"
    for bad in ("gmsa", "gmsa@+extractive", "closed-book+extractive", "gmsa@4+quote", "budget@0", "budget@1.5",
                "budget@-0.2", "rerank-text@x", "budget"):
        with pytest.raises(ValueError, match="gmsa@RATE"):
            System.parse(bad)


def test_budgeted_systems_read_within_their_budget(tiny_checkpoint, tmp_path):
    from gmsa import GMSA
    from gmsa.evaluation.token_budget import rerank_text

    model = GMSA.from_pretrained(tiny_checkpoint, device="cpu")
    texts = ["Paris is the capital of France.", "The quick brown fox jumps over the lazy dog.", "Soft tokens."]
    counts = [len(ids) for ids in model.tokenize_contexts(texts)]
    kept = rerank_text(model, texts, [0.5, 0.9, 0.1], 0.6)
    assert kept[-1] == texts[1] and texts[0].startswith(kept[0]) and len(kept) == 2  # most relevant last
    assert sum(len(ids) for ids in model.tokenize_contexts(kept)) <= math.ceil(0.6 * sum(counts)) + 1
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": f"Where is {c}?", "answers": [c], "documents": [
        {"title": c, "text": f"{c} is in France, a country of Europe."}, {"title": "x", "text": texts[1]}],
        "gold": [0]}) + "\n" for c in ("Paris", "Lyon")))
    assert eval_main(["qa", "--checkpoint", str(tiny_checkpoint), "--data", str(qa), "--documents", "2", "--systems",
                      "budget@0.5", "rerank-text@0.5", "uncompressed", "--device", "cpu", "--max-new-tokens", "4",
                      "--out", str(tmp_path / "q")]) == 0
    systems = json.loads((tmp_path / "q" / "result.json").read_text())["systems"]
    whole = systems["uncompressed"]["document_positions_per_question"]
    for name in ("budget@0.5", "rerank-text@0.5"):
        assert 0 < systems[name]["document_positions_per_question"] <= math.ceil(0.5 * whole) + 1, name
    curve = load_benchmark("budget_curve")
    result_json = tmp_path / "q" / "result.json"
    assert curve.main(["--reference", f"{result_json}:uncompressed", "--results", str(result_json),
                       "--out", str(tmp_path / "curve")]) == 0
    written = json.loads((tmp_path / "curve" / "budget_curve.json").read_text())
    assert [s["label"].split(": ")[1] for s in written["series"]] == ["budget", "rerank-text"]
    for series in written["series"]:
        run = series["runs"][0]
        name = f"{series['label'].split(': ')[1]}@0.5"
        assert run["f1"] == pytest.approx(systems[name]["f1"]) and run["budget"] == 0.5
        assert run["f1_difference"] == pytest.approx(systems[name]["f1"] - systems["uncompressed"]["f1"])
    assert (tmp_path / "curve" / "budget_curve.png").stat().st_size > 10_000


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
                      "--systems", "gmsa@2", "uncompressed", "closed-book", "gmsa@2+extractive", "--device", "cpu",
                      "--max-new-tokens", "4", "--label", "tiny", "--out", str(tmp_path / "q")]) == 0
    result = json.loads((tmp_path / "q" / "result.json").read_text())
    assert list(result["systems"]) == ["gmsa@2", "uncompressed", "closed-book", "gmsa@2+extractive"]
    documents = [f"{c} {c} is in france." for c in ("paris", "lyon")]
    for answer, document in zip(result["per_question"]["gmsa@2+extractive"]["answer"], documents):
        quote = " ".join(answer.lower().split())  # quotes match in any case and spacing
        assert quote and quote in document  # a quote of its document (a random model would not quote)
    assert all(set(s) == {"em", "f1", "accuracy", "seconds_per_question", "document_positions_per_question"}
               for s in result["systems"].values())
    capsys.readouterr()
    assert eval_main(["table", str(tmp_path / "q" / "result.json"), str(tmp_path / "q" / "result.json")]) == 0
    assert capsys.readouterr().out.count("tiny: gmsa@2 |") == 2
    # reconstruction and QA results together (as recipes/eval-default.sh passes them): one table each
    assert eval_main(["table", str(tmp_path / "r" / "result.json"), str(tmp_path / "q" / "result.json")]) == 0
    tables = capsys.readouterr().out.split("\n\n")
    assert len(tables) == 2 and "tiny: gmsa@2" in tables[0] and "bleu" in tables[1].lower()
    assert not list(tmp_path.glob("*/*.partial"))

    # every question's answer and scores are kept, keyed by file:line, so runs can be paired
    per_question = result["per_question"]
    assert per_question["where"] == [f"{qa}:1", f"{qa}:2"]
    # --skip leaves out the first questions (a tuning split apart from the reported ones), and says when none is left
    assert eval_main(["qa", "--checkpoint", str(tiny_checkpoint), "--data", str(qa), "--documents", "1", "--skip", "1",
                      "--systems", "closed-book", "--device", "cpu", "--max-new-tokens", "2",
                      "--out", str(tmp_path / "skip")]) == 0
    assert json.loads((tmp_path / "skip" / "result.json").read_text())["per_question"]["where"] == [f"{qa}:2"]
    assert eval_main(["qa", "--checkpoint", str(tiny_checkpoint), "--data", str(qa), "--skip", "2",
                      "--out", str(tmp_path / "none")]) == 2
    assert "no questions after the first --skip 2" in capsys.readouterr().err
    for name, summary in result["systems"].items():
        assert len(per_question[name]["answer"]) == 2
        assert summary["f1"] == pytest.approx(sum(per_question[name]["f1"]) / 2)
    closed, uncompressed = per_question["closed-book"]["f1"], per_question["uncompressed"]["f1"]
    assert eval_main(["compare", f"{tmp_path / 'q' / 'result.json'}:closed-book",
                      f"{tmp_path / 'q' / 'result.json'}:uncompressed"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("| tiny: closed-book | 2 |") and "(reference)" in lines[2]
    mean, se = paired_difference(closed, uncompressed)
    assert lines[3].startswith("| tiny: uncompressed | 2 |") and f"{mean:+.3f} ± {se:.3f}" in lines[3]
    # a file with several systems needs one named
    assert eval_main(["compare", str(tmp_path / "q" / "result.json"), str(tmp_path / "q" / "result.json")]) == 2
    assert "name one as" in capsys.readouterr().err


def test_rerank_reads_and_quotes_only_the_documents_closest_to_the_question(tiny_checkpoint, tmp_path, capsys):
    documents = [{"title": "Soft tokens", "text": "Soft tokens are vectors that a decoder reads."},
                 {"title": "Paris", "text": "Paris is the capital and largest city of France."},
                 {"title": "Foxes", "text": "The quick brown fox jumps over the lazy dog."}]
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "What is the capital of France?", "answers": ["Paris"],
                              "documents": documents, "gold": [1]}) + "\n")
    example = read_qa(qa)[0]
    assert select_documents(example, 3, None, "cpu") == example.documents
    assert select_documents(example, 3, 2, "cpu")[-1] == example.documents[1]  # most relevant next to the question
    assert select_documents(example, 3, 2, "cpu", "first")[0] == example.documents[1]
    assert eval_main(["qa", "--checkpoint", str(tiny_checkpoint), "--data", str(qa), "--documents", "3",
                      "--rerank", "1", "--systems", "uncompressed+extractive", "uncompressed", "--device", "cpu",
                      "--max-new-tokens", "6", "--out", str(tmp_path / "q")]) == 0
    result = json.loads((tmp_path / "q" / "result.json").read_text())
    assert result["rerank"] == 1 and "| 3, top 1 (best last) |" in (tmp_path / "q" / "table.md").read_text()
    quote = " ".join(result["per_question"]["uncompressed+extractive"]["answer"][0].lower().split())
    free = result["per_question"]["uncompressed"]["answer"][0]
    assert quote and quote != free.lower() and quote in example.documents[1].lower()  # quotes only the kept one
    capsys.readouterr()
    assert eval_main(["qa", "--checkpoint", str(tiny_checkpoint), "--data", str(qa), "--documents", "2",
                      "--rerank", "3", "--out", str(tmp_path / "bad")]) == 2
    assert "rerank=3 is invalid" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_paired_difference_and_its_standard_error():
    mean, se = paired_difference([0.0, 0.5, 1.0, 0.0], [1.0, 0.5, 1.0, 1.0])
    # differences 1, 0, 0, 1: mean 0.5, sample variance 1/3, se sqrt(1/3 / 4)
    assert mean == pytest.approx(0.5) and se == pytest.approx((1 / 12) ** 0.5)
    assert paired_difference([0.2], [0.7]) == (pytest.approx(0.5), 0.0)
    with pytest.raises(ValueError, match="equal, non-empty"):
        paired_difference([0.1, 0.2], [0.3])


def test_compare_names_a_result_without_per_question_scores(tmp_path, capsys):
    old = tmp_path / "old.json"  # written before gmsa-eval kept per-question scores
    old.write_text(json.dumps({"task": "qa", "questions": 1, "documents": 5, "systems": {"gmsa@4": {"f1": 0.2}}}))
    assert eval_main(["compare", str(old), str(old)]) == 2
    err = capsys.readouterr().err
    assert str(old) in err and "per-question" in err


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


def test_compare_pairs_one_data_file_named_by_two_paths():
    def result(where, f1):
        scores = {"answer": ["x"] * len(f1), "em": f1, "f1": f1, "accuracy": f1}
        return {"task": "qa", "systems": {"gmsa@4": {}}, "per_question": {"where": where, "gmsa@4": scores}}

    relative = select_system(result(["../data/qa.jsonl:1", "../data/qa.jsonl:2"], [0.0, 1.0]), Path("a"), None)
    absolute = select_system(result(["/work/data/qa.jsonl:2", "/work/data/qa.jsonl:3"], [1.0, 0.5]), Path("b"), None)
    table = compare_table([("a", relative[1]), ("b", absolute[1])]).splitlines()
    assert table[3].startswith("| b | 1 | 1.000 | +0.000 ± 0.000")  # only line 2 is shared, and it agrees


def test_rate_curve_pairs_every_rate_with_the_reference(tmp_path):
    rate_curve = load_benchmark("rate_curve")

    def write(name, system, f1):
        scores = {"answer": ["x"] * len(f1), "em": f1, "f1": f1, "accuracy": f1}
        where = [f"qa.jsonl:{line}" for line in range(1, len(f1) + 1)]
        path = tmp_path / name / "result.json"
        path.parent.mkdir()
        path.write_text(json.dumps({"task": "qa", "label": name, "systems": {system: {}},
                                    "per_question": {"where": where, system: scores}}))
        return str(path)

    reference = rate_curve.load_run(write("baseline", "uncompressed", [1.0, 1.0, 0.0, 1.0]))
    runs = {4: rate_curve.load_run(write("r4", "gmsa@4", [0.0, 1.0, 0.0, 0.0])),
            2: rate_curve.load_run(write("r2", "gmsa@2", [1.0, 1.0, 0.0, 0.0]))}
    truncated = {4: rate_curve.load_run(write("t4", "truncated@4", [1.0, 0.0, 0.0]))}  # one question fewer
    result = rate_curve.rate_curve(reference, {"GMSA": runs, "first tokens": truncated})
    gmsa, first = result["series"]
    assert result["questions"] == 3 and result["reference"]["f1"] == pytest.approx(2 / 3)  # the shared questions
    assert gmsa["label"] == "GMSA" and [run["rate"] for run in gmsa["runs"]] == [2, 4]
    assert gmsa["runs"][1]["f1"] == pytest.approx(1 / 3) and first["runs"][0]["f1"] == pytest.approx(1 / 3)
    assert (gmsa["runs"][1]["f1_difference"], gmsa["runs"][1]["f1_se"]) == paired_difference(
        [1.0, 1.0, 0.0], [0.0, 1.0, 0.0])
    rate_curve.plot(result, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_training_curve_keeps_a_resumed_runs_later_evaluations(tmp_path):
    training_curve = load_benchmark("training_curve")
    run = tmp_path / "ae-run"
    run.mkdir()
    records = [{"step": 5, "loss": 2.0, "rates": [4]},
               {"step": 10, "eval_loss_r4": 1.5, "eval_bleu4_r4": 0.10},
               {"step": 20, "eval_loss_r4": 1.2, "eval_bleu4_r4": 0.20},   # killed after this, resumed from 10
               {"step": 20, "eval_loss_r4": 1.1, "eval_bleu4_r4": 0.25}]
    (run / "log.jsonl").write_text("\n".join(json.dumps(record) for record in records) + "\n")
    evaluations = training_curve.read_evaluations(run)
    assert evaluations == {10: {"eval_loss_r4": 1.5, "eval_bleu4_r4": 0.10},
                           20: {"eval_loss_r4": 1.1, "eval_bleu4_r4": 0.25}}
    assert list(training_curve.shift_steps(evaluations, 1600)) == [1610, 1620]
    result = training_curve.training_curve({"ae": evaluations}, ["eval_bleu4_r4"])
    assert result["runs"] == [{"label": "ae", "steps": [10, 20], "eval_bleu4_r4": [0.10, 0.25]}]
    with pytest.raises(ValueError, match="eval_bleu4_r8: not logged"):
        training_curve.training_curve({"ae": evaluations}, ["eval_bleu4_r8"])
    training_curve.plot(training_curve.training_curve({"ae": evaluations}, None), tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0

    (run / "log.jsonl").write_text(json.dumps(records[1]) + "\n" + '{"loss": 1.0}\n')
    with pytest.raises(ValueError, match=r"log.jsonl:2: not a gmsa-train log record"):
        training_curve.read_evaluations(run)


def test_restated_qa_scores_restatements_without_a_reader(tmp_path):
    restated_qa = load_benchmark("restated_qa")
    references = [["Paris"], ["1912", "nineteen twelve"]]
    documents = [["Paris is the capital.", "Lyon is not."], ["It sank in April."]]
    assert restated_qa.scores(None, references, documents) == {"answer_in_documents": 0.5}
    answered = restated_qa.scores(["Paris", "in 1912"], references, documents)
    assert answered["answer_in_documents"] == 0.5 and answered["em"] == 0.5 and answered["accuracy"] == 1.0
    result = {"restater": "runs/ae/final", "reader": None, "questions": 2, "documents": 2, "rate": 4,
              "original": {"answer_in_documents": 1.0}, "restated": {"answer_in_documents": 0.5}}
    restated_qa.plot(result, tmp_path / "restated_qa.png")
    assert (tmp_path / "restated_qa.png").stat().st_size > 0


def test_answer_position_places_answers_by_their_share_of_the_gold_document(tiny_base, tmp_path):
    from transformers import AutoTokenizer

    from gmsa.data import QAExample
    from gmsa.evaluation.answer_location import locate_answer

    answer_position = load_benchmark("answer_position")
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    gold = "Paris is the capital of France and its largest city."
    example = QAExample("Which city?", ["largest city", "capital"], ["The fox jumps.", gold], gold=[1], where="q:1")
    located = locate_answer(tokenizer, example, example.documents)
    spans = tokenizer(gold, add_special_tokens=False, return_offsets_mapping=True).offset_mapping
    assert located.document == 1 and located.document_tokens == len(spans)  # the earliest reference: "capital"
    assert tokenizer.decode(tokenizer(gold, add_special_tokens=False).input_ids[
        located.first_token:located.first_token + located.tokens]).strip() == "capital"
    assert locate_answer(tokenizer, QAExample("?", ["Lyon"], [gold], gold=[0]), [gold]) is None
    part = answer_position.place(tokenizer, example, 5, 4)
    assert part == answer_position.part_names(4)[4 * located.first_token // len(spans)]
    places = {"qa.jsonl:1": "0-25%", "qa.jsonl:2": "0-25%", "qa.jsonl:3": "75-100%", "qa.jsonl:4": "0-25%"}
    rows = {f"qa.jsonl:{i}": {"em": s, "f1": s, "accuracy": s} for i, s in ((1, 1.0), (2, 0.0), (3, 1.0))}
    result = answer_position.by_position(places, [("run", rows)], 4)
    assert result["questions"] == {"0-25%": 2, "25-50%": 0, "50-75%": 0, "75-100%": 1}  # question 4: not answered
    assert result["runs"]["run"]["0-25%"]["accuracy"] == {"mean": 0.5, "se": 0.5}
    answer_position.plot(result, tmp_path / "position.png")
    assert (tmp_path / "position.png").stat().st_size > 0
