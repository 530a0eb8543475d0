"""Bad values at every entry point (API, CLIs, recipes, data files): one clear error naming what and where,
never a traceback, a silent fallback or a Python slice that reads other data. Grows with each entry point."""

import json

import pytest
import torch
from training_recipes import recipe

from gmsa.cli.ask import main as ask_main
from gmsa.cli.eval import main as eval_main
from gmsa.cli.train import main as train_main
from gmsa.errors import ConfigError, DataError, GMSAError
from gmsa.training.recipe import load_recipe

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def _doc(tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("Paris is the capital of France.")
    return doc


def _cli_cases(tmp_path, qa, checkpoint):
    doc = _doc(tmp_path)
    ask = ["ask", "--checkpoint", str(checkpoint), "--question", "Where?", "--documents", str(doc)]
    rag = ["rag", "--checkpoint", str(checkpoint), "--question", "Where?", "--documents", str(tmp_path)]
    qa_eval = ["qa", "--checkpoint", str(checkpoint), "--data", str(qa), "--out", str(tmp_path / "out")]
    recon = ["reconstruction", "--checkpoint", str(checkpoint), "--texts", str(qa), "--out", str(tmp_path / "out")]
    return [
        (ask_main, [*ask, "--top-n", "0"], "argument --top-n: '0' is not an integer >= 1"),
        (ask_main, [*ask, "--rate", "-4"], "argument --rate: '-4' is not an integer >= 1"),
        (ask_main, [*ask, "--max-new-tokens", "0"], "argument --max-new-tokens: '0' is not an integer >= 1"),
        (ask_main, [*ask, "--record", "-1"], "argument --record: '-1' is not an integer >= 1"),
        (ask_main, [*ask, "--budget", "0"], "argument --budget"),
        (ask_main, [*ask, "--budget", "-0.5"], "argument --budget"),
        (ask_main, [*rag, "--top-k", "-1"], "argument --top-k: '-1' is not an integer >= 1"),
        (ask_main, [*rag, "--top-k", "two"], "argument --top-k: 'two' is not an integer >= 1"),
        (eval_main, [*qa_eval, "--limit", "-5"], "argument --limit: '-5' is not an integer >= 1"),
        (eval_main, [*qa_eval, "--batch-size", "0"], "argument --batch-size: '0' is not an integer >= 1"),
        (eval_main, [*qa_eval, "--documents", "0"], "argument --documents: '0' is not an integer >= 1"),
        (eval_main, [*recon, "--last", "-3"], "argument --last: '-3' is not an integer >= 1"),
        (eval_main, [*recon, "--max-text-tokens", "-1"], "argument --max-text-tokens: '-1' is not an integer >= 0"),
    ]


def test_every_cli_count_is_checked_where_it_is_read(tmp_path, corpus, tiny_checkpoint, capsys):
    _, qa = corpus
    for main, argv, message in _cli_cases(tmp_path, qa, tiny_checkpoint):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and message in err, (argv, err)
    assert not (tmp_path / "out").exists()


def _one_line_error(capsys, message: str) -> None:
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and message in err[0], err


def test_bytes_that_are_not_utf8_name_the_file_and_line(tmp_path, tiny_checkpoint, tiny_base, capsys):
    data = tmp_path / "qa.jsonl"
    record = json.dumps({"question": "q?", "answers": ["a"], "documents": ["d"]})
    data.write_bytes(f"{record}\n{record}\n".encode() + b'{"question": "caf\xe9?"}\n')
    assert eval_main(["qa", "--checkpoint", str(tiny_checkpoint), "--data", str(data), "--documents", "1",
                      "--out", str(tmp_path / "out")]) == 2
    _one_line_error(capsys, f"{data}:3: not UTF-8 text (byte 0xe9 at column 18)")
    text = tmp_path / "notes.txt"
    text.write_bytes(b"first line\nsecond \xff line\n")
    assert ask_main(["ask", "--checkpoint", str(tiny_checkpoint), "--question", "q?", "--documents", str(text)]) == 2
    _one_line_error(capsys, f"{text}:2: not UTF-8 text (byte 0xff at column 8)")
    yaml = tmp_path / "recipe.yaml"
    yaml.write_bytes(b"stage: ae\nout_dir: caf\xe9\n")
    assert train_main(["ae", "--config", str(yaml)]) == 2
    _one_line_error(capsys, "not UTF-8 text (byte 0xe9")


def test_empty_data_is_a_data_error(tmp_path, tiny_base, corpus, capsys):
    ae, _ = corpus
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    for stage, extra in [("ae", []), ("keft", ["model.keft_mode=lora", "model.keft_lora_rank=2"])]:
        path = recipe(tmp_path, tiny_base, empty, tmp_path / f"run-{stage}")
        assert train_main([stage, "--config", str(path), "steps=1", *extra]) == 2
        _one_line_error(capsys, "empty.jsonl: no records")
    path = recipe(tmp_path, tiny_base, ae, tmp_path / "none", train_data=[])
    assert train_main(["ae", "--config", str(path), "steps=1"]) == 2
    _one_line_error(capsys, "train_data is empty")
    blank = tmp_path / "blank.jsonl"
    blank.write_text(json.dumps({"question": "q?", "answers": ["  "], "documents": ["d"]}) + "\n")
    with pytest.raises(DataError, match=r"blank.jsonl:1: field 'answers' must be a list of non-empty strings"):
        from gmsa.data import read_qa
        read_qa(blank)


@pytest.mark.parametrize("override, message", [
    ("grad_clip=-1", "grad_clip=-1 is invalid: a gradient norm > 0"),
    ("weight_decay=-0.1", "weight_decay=-0.1 is invalid"),
    ("warmup_ratio=abc", "warmup_ratio='abc' is invalid: a finite number"),
    ("seed='1'", "seed='1' is invalid: an integer"),
    ("seed=-1", "seed=-1 is invalid"),
    ("lr=.nan", "lr=nan is invalid: a finite number"),
    ("model.lora_dropout=x", "lora_dropout='x' is invalid: a finite number"),
    ("model.generation.temperature=hot", "generation.temperature='hot' is invalid: a finite number"),
    ("model.prompt.system_prompt=3", "prompt.system_prompt=3 is invalid: a string or null"),
    ("train_data=[3]", "train_data=[3] is invalid: a list of strings"),
    ("model.rates=[4, x]", "rates=[4, 'x'] is invalid: a list of integers"),
])
def test_a_recipe_value_of_the_wrong_type_names_its_field(tmp_path, tiny_base, corpus, override, message):
    path = recipe(tmp_path, tiny_base, corpus[0], tmp_path / "run")
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_recipe(path, [override])


def test_yaml_numbers_without_a_dot_are_numbers(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("stage: ae\ntrain_data: [x.jsonl]\nlr: 1e-3\nlsa_lr: 5e-5\nbudgets: []\n")
    config = load_recipe(path)
    assert config.lr == 0.001 and config.lsa_lr == 5e-5


@NO_CUDA
def test_a_device_this_machine_lacks_is_one_line(tmp_path, tiny_base, corpus, tiny_checkpoint, capsys):
    path = recipe(tmp_path, tiny_base, corpus[0], tmp_path / "run", device="cuda")
    assert train_main(["ae", "--config", str(path), "steps=1"]) == 2
    _one_line_error(capsys, "device='cuda' is not available")
    assert ask_main(["ask", "--checkpoint", str(tiny_checkpoint), "--question", "q?", "--documents",
                     str(_doc(tmp_path)), "--device", "cuda"]) == 2
    _one_line_error(capsys, "device='cuda' is not available")


def test_answer_rejects_what_is_not_a_question_over_documents(model):
    with pytest.raises(ConfigError, match="must be a list of texts, not str"):
        model.answer("Where?", "Paris is in France.")
    with pytest.raises(ConfigError, match="question=None is invalid"):
        model.answer(None, ["Paris is in France."])
    with pytest.raises(ConfigError, match=r"texts\[1\] is int, not str"):
        model.answer("Where?", ["Paris is in France.", 3], rate=2)
    with pytest.raises(ConfigError, match="not one string"):
        model.compress("Paris is in France.", 2)


def test_a_prompt_past_the_decoders_positions_is_an_error_not_a_silent_cut(model):
    long_text = " ".join(["word"] * 2100)  # 6300 tokens; the tiny decoder reads 2048 positions
    with pytest.raises(GMSAError, match="past the 2048 this decoder reads"):
        model.generate(["Where?"], [[long_text]], max_new_tokens=4)
    soft = model.compress([long_text], 2)[0]  # 3150 soft tokens
    with pytest.raises(GMSAError, match="past the 2048 this decoder reads"):
        model.generate(["Where?"], [[soft]], max_new_tokens=4)
    with pytest.raises(GMSAError, match="past the 2048"):
        list(model.stream("Where?", [soft], max_new_tokens=4))
    # the budget keeps the documents within what the decoder reads
    answer = model.answer("Where?", [long_text], budget=0.25, relevance="order", max_new_tokens=2)
    assert answer.plan.positions == 1575 and answer.text_tokens == 1575  # its first quarter, as text


def _result(tmp_path, name, em, where):
    path = tmp_path / f"{name}.json"
    per_question = {"where": where, "gmsa@4": {"em": em, "f1": [0.5] * len(em), "accuracy": [0.0] * len(em)}}
    path.write_text(json.dumps({"task": "qa", "systems": {"gmsa@4": {"em": 0.5, "f1": 0.5}},
                                "per_question": per_question}))
    return str(path)


def test_a_damaged_result_file_is_one_line_in_table_and_compare(tmp_path, capsys):
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps({"task": "qa"}))
    good = _result(tmp_path, "good", [1.0, 0.0], ["qa.jsonl:1", "qa.jsonl:2"])
    cases = [(["table", str(bare)], "is incomplete: 'systems' needs em, f1"),
             (["compare", good, _result(tmp_path, "text", ["x", 0.0], ["qa.jsonl:1", "qa.jsonl:2"])], "not numbers"),
             (["compare", good, _result(tmp_path, "null", [1.0, 0.0], [None, None])], "not 'file:line' strings"),
             (["compare", good, _result(tmp_path, "twice", [1.0, 0.0], ["qa.jsonl:1", "qa.jsonl:1"])],
              "names a question twice")]
    for argv, message in cases:
        assert eval_main(argv) == 2
        _one_line_error(capsys, message)


def test_data_that_cannot_be_scored_or_retrieved_is_named(tmp_path, tiny_checkpoint, capsys):
    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"question": "q?", "answers": ["a"], "documents": ["d", "e"], "gold": [True]}) + "\n")
    with pytest.raises(DataError, match="qa.jsonl:1: field 'gold' must list indices"):
        from gmsa.data import read_qa
        read_qa(data)
    data.write_text(json.dumps({"question": "q?", "answers": [], "documents": ["d"]}) + "\n")
    assert eval_main(["qa", "--checkpoint", str(tiny_checkpoint), "--data", str(data), "--documents", "1",
                      "--out", str(tmp_path / "out")]) == 2
    _one_line_error(capsys, "qa.jsonl:1: no reference answers to score against")
    headings = tmp_path / "headings"
    headings.mkdir()
    (headings / "a.md").write_text("# Title\n\n## Another\n")
    rag = ["rag", "--checkpoint", str(tiny_checkpoint), "--question"]
    for argv, message in [([*rag, "Where?", "--documents", str(headings)], "no passages"),
                          ([*rag, "Where?", "--documents", str(data)], "gmsa rag reads .txt/.md files"),
                          ([*rag, " ", "--documents", str(headings)], "--question is empty")]:
        assert ask_main(argv) == 2
        _one_line_error(capsys, message)


def test_a_named_pipe_and_a_repeated_system_are_refused(tmp_path, tiny_checkpoint, corpus, capsys):
    import os

    pipe = tmp_path / "pipe.txt"
    os.mkfifo(pipe)
    assert ask_main(["ask", "--checkpoint", str(tiny_checkpoint), "--question", "q?", "--documents", str(pipe)]) == 2
    _one_line_error(capsys, "pipe.txt: not a regular file")  # instead of blocking on the read
    assert eval_main(["qa", "--checkpoint", str(tiny_checkpoint), "--data", str(corpus[1]), "--systems", "gmsa@2",
                      "gmsa@02", "--out", str(tmp_path / "out")]) == 2
    _one_line_error(capsys, "names a system twice: ['gmsa@2']")
