"""Bad inputs that used to lose data: writes never destroy what gmsa did not write, a run never mixes with
another or writes over its own --from, --resume checks the recipe, results have a place before the work."""

import json

import pytest
from training_recipes import losses, recipe

from gmsa import GMSA
from gmsa.cli.eval import main as eval_main
from gmsa.cli.train import main as train_main
from gmsa.errors import CheckpointError, ConfigError
from gmsa.training import loop
from gmsa.training.recipe import load_recipe
from gmsa.training.state import latest_checkpoint


def test_save_pretrained_never_deletes_a_folder_it_did_not_write(model, tmp_path):
    folder = tmp_path / "my-project"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    with pytest.raises(CheckpointError, match="not a GMSA checkpoint .* nothing was written"):
        model.save_pretrained(folder)
    assert [p.name for p in folder.iterdir()] == ["notes.txt"] and (folder / "notes.txt").read_text() == "precious"
    file = tmp_path / "weights.bin"
    file.write_text("precious")
    with pytest.raises(CheckpointError, match="is a file, not a folder"):
        model.save_pretrained(file)
    assert file.read_text() == "precious"


def test_save_pretrained_replaces_a_checkpoint_and_keeps_the_users_files_in_it(model, tmp_path):
    folder = model.save_pretrained(tmp_path / "ckpt")
    (folder / "README.md").write_text("my model card")
    model.save_pretrained(folder)  # over a GMSA checkpoint: allowed
    assert (folder / "README.md").read_text() == "my model card"
    assert GMSA.from_pretrained(folder).config == model.config
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left beside it


def _ae(tmp_path, tiny_base, corpus, name="run", **extra):
    ae, _ = corpus
    return recipe(tmp_path, tiny_base, ae, tmp_path / name, **extra)


def test_training_refuses_an_existing_run_without_resume_or_overwrite(tmp_path, tiny_base, corpus, capsys):
    path = _ae(tmp_path, tiny_base, corpus)
    assert train_main(["ae", "--config", str(path), "steps=2"]) == 0
    before = (tmp_path / "run" / "log.jsonl").read_text()
    capsys.readouterr()
    assert train_main(["ae", "--config", str(path), "steps=2"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err and len(err.splitlines()) == 1
    assert (tmp_path / "run" / "log.jsonl").read_text() == before  # nothing mixed in
    # --overwrite replaces it: one run's log, not two
    assert train_main(["ae", "--config", str(path), "steps=2", "--overwrite"]) == 0
    assert len(losses(tmp_path / "run")) == 2


def test_a_run_never_writes_over_the_checkpoint_it_starts_from(tmp_path, tiny_base, corpus, capsys):
    _, qa = corpus
    path = _ae(tmp_path, tiny_base, corpus)
    assert train_main(["ae", "--config", str(path), "steps=2"]) == 0
    final = tmp_path / "run" / "final"
    weights = (final / "gmsa_weights.safetensors").read_bytes()
    capsys.readouterr()
    keft = recipe(tmp_path, tiny_base, qa, tmp_path / "run", stage="keft")
    assert train_main(["keft", "--config", str(keft), "--from", str(final), "--overwrite", "steps=2",
                       "model.keft_mode=lora", "model.keft_lora_rank=2"]) == 2
    assert "lies inside out_dir" in capsys.readouterr().err
    assert (final / "gmsa_weights.safetensors").read_bytes() == weights


def test_resume_refuses_a_changed_recipe_and_names_the_fields(tmp_path, tiny_base, corpus):
    path = _ae(tmp_path, tiny_base, corpus)
    assert train_main(["ae", "--config", str(path), "steps=3"]) == 0
    with pytest.raises(ConfigError, match=r"differs .* 2 field\(s\): lr: 0.005 -> 0.001; model.lora_rank: 4 -> 8"):
        loop.setup(load_recipe(path, ["steps=3", "lr=1e-3", "model.lora_rank=8"]), resume=True)
    # what does not change the weights may change: how often it logs, validates and saves, how it generates
    run = loop.setup(load_recipe(path, ["steps=3", "log_every=5", "save_every=7",
                                        "model.generation.repetition_penalty=1.3"]), resume=True)
    assert run.step == 3


def test_resume_accepts_a_run_recorded_before_a_field_existed(tmp_path, tiny_base, corpus):
    path = _ae(tmp_path, tiny_base, corpus)
    assert train_main(["ae", "--config", str(path), "steps=3"]) == 0
    run_json = tmp_path / "run" / "run.json"
    started = json.loads(run_json.read_text())
    for later in ("text_layouts", "weight_decay"):  # as if these fields came later: the run had their defaults
        del started[later]
    run_json.write_text(json.dumps(started))
    assert loop.setup(load_recipe(path, ["steps=3"]), resume=True).step == 3
    with pytest.raises(ConfigError, match=r"1 field\(s\): weight_decay: 0.01 -> 0.5"):
        loop.setup(load_recipe(path, ["steps=3", "weight_decay=0.5"]), resume=True)


def test_the_latest_pointer_stays_inside_the_run(tmp_path, tiny_base, corpus):
    path = _ae(tmp_path, tiny_base, corpus)
    assert train_main(["ae", "--config", str(path), "steps=3"]) == 0
    out = tmp_path / "run"
    elsewhere = tmp_path / "elsewhere"
    (out / "step-000003").rename(elsewhere)
    for target in ("../elsewhere", str(elsewhere), "step-000003/../../elsewhere"):
        (out / "latest").write_text(target + "\n")
        with pytest.raises(CheckpointError, match="not a step-NNNNNN folder"):
            latest_checkpoint(out)
    (out / "step-000003").symlink_to(elsewhere)
    (out / "latest").write_text("step-000003\n")
    with pytest.raises(CheckpointError, match="leads outside"):
        latest_checkpoint(out)


def test_killed_writes_leave_nothing_behind_the_next_run_start(tmp_path, tiny_base, corpus):
    path = _ae(tmp_path, tiny_base, corpus)
    assert train_main(["ae", "--config", str(path), "steps=2"]) == 0
    out = tmp_path / "run"
    for leftover in (".staging-abc123", ".step-000002.old-1234abcd", ".final.tmp-xyz"):
        (out / leftover).mkdir()
        (out / leftover / "gmsa_weights.safetensors").write_bytes(b"half")
    (out / ".latest.tmp").write_text("step-000002")
    assert train_main(["ae", "--config", str(path), "steps=2", "--resume"]) == 0
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]


def test_eval_checks_where_results_go_before_the_work(tiny_checkpoint, corpus, tmp_path, capsys):
    _, qa = corpus
    taken = tmp_path / "results.txt"
    taken.write_text("my earlier results")
    capsys.readouterr()
    assert eval_main(["qa", "--checkpoint", str(tiny_checkpoint), "--data", str(qa), "--documents", "2",
                      "--systems", "gmsa@2", "--out", str(taken)]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and "Loading" not in err and taken.read_text() == "my earlier results"


def test_a_run_folder_records_its_recipe(tmp_path, tiny_base, corpus):
    path = _ae(tmp_path, tiny_base, corpus)
    assert train_main(["ae", "--config", str(path), "steps=2"]) == 0
    started = json.loads((tmp_path / "run" / "run.json").read_text())
    assert started["steps"] == 2 and started["model"]["lora_rank"] == 4
