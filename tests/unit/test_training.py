"""gmsa-train on a tiny random model: both stages, the files they write, kill-and-resume, recipe errors."""

import json
from pathlib import Path

import pytest
import torch
from training_recipes import TEXTS, ae_then_keft, losses, recipe
from transformers import AutoTokenizer

from gmsa import GMSA, ConfigError
from gmsa.backbone.adapters import DECODER_ADAPTER, use_adapter
from gmsa.cli.train import main as train_main
from gmsa.config import GMSAConfig
from gmsa.errors import CheckpointError
from gmsa.training import loop, objective
from gmsa.training.recipe import load_recipe
from gmsa.training.samples import ae_samples
from gmsa.training.setup import check_batch_split
from gmsa.training.state import STATE_JSON


def test_ae_samples_hold_each_distinct_text_once(tiny_base, corpus):
    # the QA fixture repeats each text as a context of two questions: 16 contexts, 8 distinct
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    ae, qa = corpus
    samples = ae_samples([str(qa), str(ae), str(qa)], tokenizer, GMSAConfig(base_model=str(tiny_base)), max_tokens=256)
    restated = [tokenizer.decode(s.target[:-1]) for s in samples]
    assert len(restated) == len(set(restated)) == 8 + 12


def test_ae_then_keft_write_checkpoints(tmp_path, tiny_base, corpus):
    ae, qa = corpus
    out = tmp_path / "ae"
    assert train_main(["ae", "--config", str(recipe(tmp_path, tiny_base, ae, out)), "steps=12"]) == 0
    assert (out / "final" / "gmsa_weights.safetensors").is_file()
    assert (out / "latest").read_text().strip() == "step-000012"
    curve = losses(out)
    assert len(curve) == 12 and sum(curve[-3:]) / 3 < sum(curve[:3]) / 3, curve
    model = GMSA.from_pretrained(out / "final")
    assert not any(n.startswith("decoder.") for n in model.trained_parameters())

    keft_out = tmp_path / "keft"
    path = recipe(tmp_path, tiny_base, qa, keft_out, stage="keft")
    assert train_main(["keft", "--config", str(path), "--from", str(out / "final"), "steps=3",
                       "model.keft_mode=lora", "model.keft_lora_rank=2"]) == 0
    tuned = GMSA.from_pretrained(keft_out / "final")
    assert tuned.config.keft_mode == "lora"
    assert any(n.startswith("decoder.") for n in tuned.trained_parameters())
    # KEFT leaves the encoder and LSA exactly as AE trained them
    for name, param in model.trained_parameters().items():
        torch.testing.assert_close(tuned.trained_parameters()[name], param, rtol=0, atol=0)
    records = [json.loads(line) for line in (keft_out / "log.jsonl").read_text().splitlines()]
    assert any("eval_em" in r for r in records)


def test_uncompressed_baseline_mode(tmp_path, tiny_base, corpus):
    _, qa = corpus
    out = tmp_path / "base"
    path = recipe(tmp_path, tiny_base, qa, out, stage="keft", compression="none")
    assert train_main(["keft", "--config", str(path), "steps=3", "model.keft_mode=lora"]) == 0
    tuned = GMSA.from_pretrained(out / "final")
    assert any(n.startswith("decoder.") for n in tuned.trained_parameters())
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any("eval_loss_rnone" in r for r in records)


def test_gradient_checkpointing_keeps_the_loss_curve(tmp_path, tiny_base, corpus):
    _, qa = corpus
    curves = {}
    for flag in (False, True):
        out = tmp_path / f"checkpointing-{flag}"
        overrides = ["steps=4", "model.keft_mode=lora", f"gradient_checkpointing={str(flag).lower()}"]
        run = loop.setup(load_recipe(recipe(tmp_path, tiny_base, qa, out, stage="keft", compression="none"), overrides))
        assert run.model.base.is_activation_checkpointing == flag
        loop.fit(run)
        curves[flag] = losses(out)
    assert curves[True] == pytest.approx(curves[False], rel=1e-4)
    assert curves[True][-1] != curves[True][0]  # it trained


@pytest.mark.parametrize("rates", [None, [2, 4, 2, 4]])
def test_loss_scores_only_the_target_positions(tmp_path, tiny_base, corpus, rates):
    # batch_loss asks the model for the logits of the last positions only; the loss must be the full one's.
    _, qa = corpus
    run = loop.setup(load_recipe(recipe(tmp_path, tiny_base, qa, tmp_path / "trim", stage="keft"),
                                 ["model.keft_mode=lora"]))
    samples = run.train[:4]
    trimmed, tokens = objective.batch_loss(run.model, samples, rates, train_encoder=False)
    contexts = ([[torch.tensor(ids) for ids in s.contexts] for s in samples] if rates is None
                else objective.compress_contexts(run.model, samples, rates))
    embeds, mask, positions, labels = objective.decoder_batch(run.model, samples, contexts)
    with use_adapter(run.model.base, DECODER_ADAPTER):
        logits = run.model.base(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits
    full = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                             ignore_index=objective.IGNORE)
    assert tokens == int((labels != objective.IGNORE).sum()) > len(samples)
    torch.testing.assert_close(trimmed, full, rtol=1e-5, atol=1e-5)


def test_killed_run_resumes_on_the_same_curve(tmp_path, tiny_base, corpus, monkeypatch):
    ae, _ = corpus
    straight = tmp_path / "straight"
    run = loop.setup(load_recipe(recipe(tmp_path, tiny_base, ae, straight), ["steps=6"]))
    loop.fit(run)
    expected = losses(straight)

    killed = tmp_path / "killed"
    config = load_recipe(recipe(tmp_path, tiny_base, ae, killed), ["steps=6"])
    original = loop._batch

    def dies_at_step_5(run, step, rates):
        if step == 4:
            raise KeyboardInterrupt("killed")
        return original(run, step, rates)

    monkeypatch.setattr(loop, "_batch", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        loop.fit(loop.setup(config))
    assert (killed / "latest").read_text().strip() == "step-000003"
    monkeypatch.setattr(loop, "_batch", original)
    resumed = loop.setup(config, resume=True)
    assert resumed.step == 3
    loop.fit(resumed)
    curve = losses(killed)
    # the log holds steps 1-4 of the killed run, then 4-6 of the resumed one
    assert curve[:4] == expected[:4]
    assert curve[4:] == expected[3:]  # bit-identical: the resumed run draws the same batches from the same state


def test_resuming_an_older_optimizer_layout_is_a_clear_error(tmp_path, tiny_base, corpus):
    ae, _ = corpus
    out = tmp_path / "ae"
    path = recipe(tmp_path, tiny_base, ae, out, ae_decoder=True)
    overrides = ["steps=4", "model.keft_mode=lora", "model.keft_lora_rank=2"]
    assert train_main(["ae", "--config", str(path), "steps=2", *overrides[1:]]) == 0
    # rewrite the checkpoint as versions before encoder_lr wrote it: encoder and decoder in one group
    state = out / "step-000002" / STATE_JSON
    meta = json.loads(state.read_text())
    decoder, encoder, lsa = meta["optimizer"]["param_groups"]
    meta["optimizer"]["param_groups"] = [{**encoder, "params": decoder["params"] + encoder["params"]}, lsa]
    state.write_text(json.dumps(meta))
    (out / "run.json").unlink()  # nor did those versions record the recipe (then steps=4 could not resume steps=2)
    with pytest.raises(CheckpointError, match="cannot resume this run"):
        loop.setup(load_recipe(path, overrides), resume=True)
    assert (out / "latest").read_text().strip() == "step-000002"  # the checkpoint is left as it was


def test_rate_curriculum_fixes_the_first_steps_rates(tmp_path, tiny_base, corpus):
    ae, _ = corpus
    out = tmp_path / "curriculum"
    model = {"base_model": str(tiny_base), "encoder_layers": 2, "lora_rank": 4, "lora_alpha": 8, "rates": [2, 4],
             "segment_tokens": 16, "encoder_final_norm": False, "lsa_output_norm": "readout", "lsa_gate": True}
    path = recipe(tmp_path, tiny_base, ae, out, steps=6, rate_curriculum=[[1, 2], [2, 4]], model=model)
    assert train_main(["ae", "--config", str(path)]) == 0
    records = [r for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "rates" in r]
    by_step = {r["step"]: set(r["rates"]) for r in records}  # step n logs the rates of step n - 1
    assert by_step[1] == by_step[2] == {1} and by_step[3] == by_step[4] == {2}
    assert by_step[5] | by_step[6] <= {2, 4}
    assert GMSA.from_pretrained(out / "final").config.lsa_output_norm == "readout"


def test_keft_rate_curriculum_trains_one_rate_and_keeps_serving_all(tmp_path, tiny_base, corpus):
    _, keft_final = ae_then_keft(tmp_path, tiny_base, corpus, "keft-r2", "model.keft_mode=lora",
                                 "model.keft_lora_rank=2", "rate_curriculum=[[2, 2]]")
    records = [r for r in map(json.loads, (keft_final.parent / "log.jsonl").read_text().splitlines()) if "rates" in r]
    assert records and all(set(r["rates"]) == {2} for r in records)
    tuned = GMSA.from_pretrained(keft_final)
    assert tuned.config.rates == (2, 4)
    assert tuned.compress(TEXTS, 4)[0].shape[0] < tuned.compress(TEXTS, 2)[0].shape[0]


@pytest.mark.parametrize("bad, message", [
    ([[1, 5], [2, 3]], "until_step increasing"),
    ([[0, 5]], "integers >= 1"),
    ([[3, 5]], "must divide"),
    ([1, 5], "rate, until_step"),
])
def test_recipe_rejects_a_bad_rate_curriculum(tmp_path, tiny_base, corpus, bad, message):
    ae, _ = corpus
    with pytest.raises(ConfigError, match=message):
        load_recipe(recipe(tmp_path, tiny_base, ae, tmp_path / "x"), [f"rate_curriculum={json.dumps(bad)}"])


def test_rate_curriculum_needs_compression(tmp_path, tiny_base, corpus):
    _, qa = corpus
    path = recipe(tmp_path, tiny_base, qa, tmp_path / "x", stage="keft", compression="none")
    with pytest.raises(ConfigError, match="invalid with compression 'none'"):
        load_recipe(path, ["model.keft_mode=lora", "rate_curriculum=[[4, 3]]"])



def test_recipe_rejects_unknown_keys(tmp_path, tiny_base, corpus):
    ae, _ = corpus
    path = recipe(tmp_path, tiny_base, ae, tmp_path / "x")
    with pytest.raises(ConfigError, match="'model.lora_rnk'"):
        load_recipe(path, ["model.lora_rnk=3"])
    with pytest.raises(ConfigError, match="stepz"):
        load_recipe(path, ["stepz=3"])
    assert train_main(["ae", "--config", str(path), "bogus=1"]) == 2


def test_two_processes_follow_the_one_process_run(tmp_path, tiny_base, corpus):
    """`torchrun --nproc_per_node 2` on CPUs: each process takes half of every batch, and the pair follows
    the one-process run (texts cut to equal lengths, so the two halves weigh the same).

    Not `accelerate launch --cpu`: on a machine without GPUs it starts one process, whatever --num_processes says.
    """
    import os
    import subprocess
    import sys

    ae, _ = corpus
    overrides = ["steps=3", "device=cpu", "batch_size=4", "max_text_tokens=6", "model.lora_dropout=0"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert train_main(["ae", "--config", str(recipe(tmp_path, tiny_base, ae, one)), *overrides]) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "gmsa.cli.train", "ae", "--config", str(recipe(tmp_path, tiny_base, ae, two)), *overrides]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (two / "final" / "gmsa_weights.safetensors").is_file()
    records = [r for r in map(json.loads, (two / "log.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(records) == 3  # one log per step, from the main process only
    assert [len(r["rates"]) for r in records] == [4, 4, 4]  # the whole batch's
    assert losses(two) == pytest.approx(losses(one), rel=1e-5)
    assert losses(one)[0] != losses(one)[-1]  # it trained
    # Adam's steps are about lr whatever the gradient: other samples or rates would move weights by ~1e-3
    trained = {run: GMSA.from_pretrained(run / "final").trained_parameters() for run in (one, two)}
    for name, weight in trained[one].items():
        torch.testing.assert_close(trained[two][name], weight, rtol=0, atol=1e-4)


def test_a_batch_that_does_not_split_over_the_processes_is_refused(tmp_path, tiny_base, corpus):
    ae, _ = corpus
    config = load_recipe(recipe(tmp_path, tiny_base, ae, tmp_path / "x"), ["batch_size=3"])
    check_batch_split(config, 1)
    with pytest.raises(ConfigError, match="batch_size=3 does not split evenly over 2 processes"):
        check_batch_split(config, 2)


@pytest.mark.parametrize("name, overrides", [
    ("default-ae.yaml", []),
    ("default-ae-decoder.yaml", []),
    ("default-keft.yaml", []),
    # the baseline, as train-default.sh runs it
    ("default-keft.yaml", ["compression=none", "keft_encoder=false", "rate_curriculum=[]"]),
    ("default-keft-nq.yaml", []),
    ("default-keft-nq.yaml", ["compression=none", "keft_encoder=false", "rate_curriculum=[]"]),
    ("default-keft-mixed.yaml", []),
    ("default-keft-mixed.yaml", ["compression=none", "budgets=[]", "random_layouts=0", "text_layouts=0",
                                 "gradient_checkpointing=true"]),
])
def test_the_repository_recipes_are_valid(name, overrides):
    recipes = Path(__file__).resolve().parents[2] / "recipes"
    config = load_recipe(recipes / name, overrides)
    assert config.stage == name.split("-")[1].removesuffix(".yaml")


def test_a_run_killed_with_sigkill_mid_run_resumes_bit_identical(tmp_path, tiny_base, corpus):
    import signal
    import subprocess
    import sys
    import time

    ae, _ = corpus
    straight = tmp_path / "straight"
    assert train_main(["ae", "--config", str(recipe(tmp_path, tiny_base, ae, straight)), "steps=8",
                       "save_every=2"]) == 0
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "gmsa.cli.train", "ae", "--config", str(recipe(tmp_path, tiny_base, ae, killed)),
               "steps=8", "save_every=2"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "step-000004").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # wherever it is: mid-step or mid-checkpoint
    process.wait()
    assert process.returncode == -signal.SIGKILL and not (killed / "final").exists()
    subprocess.run([*command, "--resume"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    logged = {r["step"]: r["loss"] for r in map(json.loads, (killed / "log.jsonl").read_text().splitlines())
              if "loss" in r}  # a step logged before the kill and again after it: the later record
    assert [logged[step] for step in sorted(logged)] == losses(straight)
