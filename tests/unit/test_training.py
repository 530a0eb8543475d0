"""gmsa-train on a tiny random model: both stages, the files they write, kill-and-resume, recipe errors."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from gmsa import GMSA, ConfigError
from gmsa.cli.train import main as train_main
from gmsa.config import GMSAConfig
from gmsa.errors import CheckpointError
from gmsa.training import distill, loop, objective
from gmsa.training.recipe import TrainConfig, load_recipe
from gmsa.training.samples import ae_samples
from gmsa.training.state import STATE_JSON

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France and its largest city.",
    "Group merging averages hidden states in groups of equal size.",
    "Soft tokens are vectors that a language model reads instead of text.",
]


@pytest.fixture
def corpus(tmp_path):
    ae = tmp_path / "ae.jsonl"
    ae.write_text("".join(json.dumps({"text": f"{t} ({copy})"}) + "\n" for copy in range(3) for t in TEXTS))
    qa = tmp_path / "qa.jsonl"
    records = [{"question": f"What is in text {i}?", "answers": [t.split()[1]],
                "documents": [{"title": "T", "text": t}, {"title": "U", "text": TEXTS[(i + 1) % 4]}], "gold": [0]}
               for i, t in enumerate(TEXTS * 2)]
    qa.write_text("".join(json.dumps(r) + "\n" for r in records))
    return ae, qa


def recipe(tmp_path, tiny_base, data, out, **extra):
    lines = {
        "train_data": [str(data)], "out_dir": str(out), "batch_size": 2, "eval_samples": 2, "eval_every": 3,
        "save_every": 3, "log_every": 1, "lr": 5e-3, "max_text_tokens": 24,
        "model": {"base_model": str(tiny_base), "encoder_layers": 2, "lora_rank": 4, "lora_alpha": 8,
                  "rates": [2, 4], "segment_tokens": 16},
    }
    lines.update(extra)
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(json.dumps(lines))  # JSON is YAML
    return path


def losses(out):
    return [r["loss"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]


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


def ae_then_keft(tmp_path, tiny_base, corpus, name, *overrides):
    """A 2-step AE, then a 2-step KEFT from it with `overrides`: both final checkpoint folders."""
    ae, qa = corpus
    out = tmp_path / "ae"
    assert train_main(["ae", "--config", str(recipe(tmp_path, tiny_base, ae, out)), "steps=2"]) == 0
    keft_out = tmp_path / name
    path = recipe(tmp_path, tiny_base, qa, keft_out, stage="keft")
    assert train_main(["keft", "--config", str(path), "--from", str(out / "final"), "steps=2", *overrides]) == 0
    return out / "final", keft_out / "final"


def test_full_rank_keft_updates_only_the_decoder(tmp_path, tiny_base, corpus):
    ae_final, keft_final = ae_then_keft(tmp_path, tiny_base, corpus, "full", "model.keft_mode=full")
    tuned = GMSA.from_pretrained(keft_final)
    assert tuned.config.keft_mode == "full"
    a = next(p for n, p in tuned.trained_parameters().items() if n.startswith("decoder.") and "lora_A" in n)
    assert a.shape[0] == 64  # rank = hidden size: a full-rank update
    before = GMSA.from_pretrained(ae_final)
    torch.testing.assert_close(tuned.compress(TEXTS, 2)[0], before.compress(TEXTS, 2)[0], rtol=0, atol=0)


def test_ae_decoder_trains_the_decoder_adapter_that_keft_continues(tmp_path, tiny_base, corpus):
    ae, qa = corpus
    out = tmp_path / "ae"
    path = recipe(tmp_path, tiny_base, ae, out, ae_decoder=True)
    assert train_main(["ae", "--config", str(path), "steps=3", "model.keft_mode=lora", "model.keft_lora_rank=2"]) == 0
    model = GMSA.from_pretrained(out / "final")
    decoder = {n: p for n, p in model.trained_parameters().items() if n.startswith("decoder.")}
    assert decoder and any(p.abs().sum() > 0 for n, p in decoder.items() if "lora_B" in n)  # B starts at zero

    keft_out = tmp_path / "keft"
    keft = recipe(tmp_path, tiny_base, qa, keft_out, stage="keft")
    # the recipe's decoder adapter must be the one the AE trained, or the run says which key differs
    with pytest.raises(ConfigError, match="keft_lora_rank=4 does not match"):
        loop.setup(load_recipe(keft, ["steps=2", "model.keft_mode=lora", "model.keft_lora_rank=4"],
                               stage="keft", init_from=str(out / "final")))
    assert train_main(["keft", "--config", str(keft), "--from", str(out / "final"), "steps=2",
                       "model.keft_mode=lora", "model.keft_lora_rank=2"]) == 0
    tuned = GMSA.from_pretrained(keft_out / "final")
    for name, param in model.trained_parameters().items():
        same = torch.equal(tuned.trained_parameters()[name], param)
        assert same != name.startswith("decoder."), name  # KEFT moved the decoder only


def test_keft_encoder_trains_the_compressor_end_to_end(tmp_path, tiny_base, corpus):
    ae_final, keft_final = ae_then_keft(tmp_path, tiny_base, corpus, "keft-enc", "model.keft_mode=lora",
                                        "model.keft_lora_rank=2", "keft_encoder=true")
    before, tuned = GMSA.from_pretrained(ae_final), GMSA.from_pretrained(keft_final)
    for name, param in before.trained_parameters().items():
        assert not torch.equal(tuned.trained_parameters()[name], param), name  # encoder LoRA and LSA
    assert not torch.equal(tuned.compress(TEXTS, 2)[0], before.compress(TEXTS, 2)[0])  # soft tokens moved
    assert tuned.compressor_fingerprint() != before.compressor_fingerprint()  # so caches of the old ones miss


def test_restate_fraction_mixes_restating_into_keft_batches(tmp_path, tiny_base, corpus):
    ae, qa = corpus
    out = tmp_path / "ae"
    assert train_main(["ae", "--config", str(recipe(tmp_path, tiny_base, ae, out)), "steps=2"]) == 0
    path = recipe(tmp_path, tiny_base, qa, tmp_path / "mix", stage="keft")
    run = loop.setup(load_recipe(path, ["batch_size=4", "restate_fraction=0.5", "model.keft_mode=lora"],
                                 init_from=str(out / "final")))
    tokenizer = run.model.tokenizer
    # the pool is the training documents, each once, cut to max_text_tokens (24), restated in full
    documents = {tuple(ids[:24]) for sample in run.train for ids in sample.contexts}
    pool = [tuple(s.contexts[0]) for s in run.restate]
    assert len(pool) == len(set(pool)) == len(documents) < sum(len(s.contexts) for s in run.train)
    assert set(pool) == documents
    assert all(s.target == [*s.contexts[0], tokenizer.eos_token_id] for s in run.restate)
    restate = run.model.config.prompt.restate_instruction
    for step in range(4):
        batch = loop._batch(run, step)
        assert [s.instruction == restate for s in batch] == [True, True, False, False]
        assert all(s.target[-1] == tokenizer.eos_token_id for s in batch)
    assert loop._batch(run, 3) == loop._batch(run, 3)  # resuming draws the same batch
    # each task counts by its share of the samples (here half), not by its share of the target tokens
    batch, rates = loop._batch(run, 0), [2, 2, 2, 2]
    run.model.eval()
    with torch.no_grad():
        mixed, tokens = objective.mixed_task_loss(run.model, batch, rates, 2, train_encoder=True)
        restating, restating_tokens = objective.batch_loss(run.model, batch[:2], rates[:2], True)
        answering, answering_tokens = objective.batch_loss(run.model, batch[2:], rates[2:], True)
        by_tokens, _ = objective.batch_loss(run.model, batch, rates, True)
    assert restating_tokens > 2 * answering_tokens and tokens == restating_tokens + answering_tokens
    assert mixed.item() == pytest.approx((restating.item() + answering.item()) / 2, rel=1e-5)
    assert by_tokens.item() != pytest.approx(mixed.item(), rel=1e-3)
    run.model.train()
    final = loop.fit(run)
    assert GMSA.from_pretrained(final).config.keft_mode == "lora"


def test_each_trained_part_gets_its_own_learning_rate(tmp_path, tiny_base, corpus):
    ae, qa = corpus
    out = tmp_path / "ae"
    assert train_main(["ae", "--config", str(recipe(tmp_path, tiny_base, ae, out)), "steps=2"]) == 0
    path = recipe(tmp_path, tiny_base, qa, tmp_path / "lrs", stage="keft")
    run = loop.setup(load_recipe(path, ["lr=1e-3", "encoder_lr=5e-3", "lsa_lr=2e-4", "keft_encoder=true",
                                        "model.keft_mode=lora"], init_from=str(out / "final")))
    owner = {id(p): n.split(".")[0] for n, p in run.trainable.items()}
    parts = {owner[id(p)]: group["initial_lr"] for group in run.optimizer.param_groups for p in group["params"]}
    assert parts == {"decoder": 1e-3, "encoder": 5e-3, "lsa": 2e-4}
    assert sum(len(g["params"]) for g in run.optimizer.param_groups) == len(run.trainable)


@pytest.mark.parametrize("extra, message", [
    ({"ae_decoder": True}, "needs model.keft_mode"),
    ({"ae_decoder": True, "stage": "keft", "model": {"keft_mode": "lora"}}, "invalid for stage 'keft'"),
    ({"ae_decoder": "yes"}, "ae_decoder='yes' is invalid"),
    ({"encoder_lr": 0}, "encoder_lr=0 is invalid"),
    ({"keft_encoder": True}, "only valid for stage 'keft'"),
    ({"keft_encoder": True, "stage": "keft", "compression": "none", "model": {"keft_mode": "lora"}},
     "only valid for stage 'keft' with compression 'gmsa'"),
    ({"keft_encoder": 1, "stage": "keft", "model": {"keft_mode": "lora"}}, "keft_encoder=1 is invalid"),
    ({"restate_fraction": 0.25}, "only valid for stage 'keft'"),
    ({"restate_fraction": 1.0, "stage": "keft", "model": {"keft_mode": "lora"}}, "a number in \\[0, 1\\)"),
    ({"restate_fraction": 0.01, "stage": "keft", "model": {"keft_mode": "lora"}}, "at least one restating"),
    ({"distill_logits": 1.0, "stage": "keft", "model": {"keft_mode": "lora"}}, "needs a teacher checkpoint"),
    ({"teacher": "runs/t", "distill_logits": 1.0}, "only valid for stage 'keft'"),
    ({"teacher": "runs/t", "stage": "keft", "model": {"keft_mode": "lora"}}, "is unused"),
    ({"teacher": "runs/t", "distill_hidden": -1, "stage": "keft", "model": {"keft_mode": "lora"}},
     "distill_hidden=-1 is invalid: a weight >= 0"),
])
def test_recipe_rejects_a_bad_stage_option(extra, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**extra)


def test_uncompressed_baseline_mode(tmp_path, tiny_base, corpus):
    _, qa = corpus
    out = tmp_path / "base"
    path = recipe(tmp_path, tiny_base, qa, out, stage="keft", compression="none")
    assert train_main(["keft", "--config", str(path), "steps=3", "model.keft_mode=lora"]) == 0
    tuned = GMSA.from_pretrained(out / "final")
    assert any(n.startswith("decoder.") for n in tuned.trained_parameters())
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any("eval_loss_rnone" in r for r in records)


def test_keft_distils_from_a_teacher_reading_the_documents(tmp_path, tiny_base, corpus):
    ae, qa = corpus
    out = tmp_path / "ae"
    assert train_main(["ae", "--config", str(recipe(tmp_path, tiny_base, ae, out)), "steps=2"]) == 0
    teacher = tmp_path / "teacher"
    path = recipe(tmp_path, tiny_base, qa, teacher, stage="keft", compression="none")
    assert train_main(["keft", "--config", str(path), "steps=2", "model.keft_mode=lora"]) == 0
    path = recipe(tmp_path, tiny_base, qa, tmp_path / "student", stage="keft")
    overrides = ["steps=2", "model.keft_mode=lora", f"teacher={teacher / 'final'}", "distill_logits=0.5",
                 "distill_hidden=2.0"]
    run = loop.setup(load_recipe(path, overrides, init_from=str(out / "final")))
    samples, rates = run.train[:2], [2, 4]
    run.model.eval()
    with torch.no_grad():
        contexts = objective.compress_contexts(run.model, samples, rates)
        # the two prompts differ up to the last document and share every token after it
        soft = objective.decoder_batch(run.model, samples, contexts)
        text = objective.decoder_batch(run.distillation.teacher, samples, objective.text_contexts(samples))
        assert torch.equal(soft.tails, text.tails) and soft.embeds.shape[1] < text.embeds.shape[1]
        shared = int(soft.tails.min())
        assert shared > max(len(s.target) for s in samples)  # the question is in the shared tail too
        torch.testing.assert_close(soft.embeds[:, -shared:], text.embeds[:, -shared:])
        student = objective.decoder_pass(run.model, samples, contexts, hidden_states=True)
        taught = run.distillation.teacher_pass(samples)
        assert len(student.hidden) == len(taught.hidden) == run.model.base.config.num_hidden_layers
        assert student.hidden[0].shape == taught.hidden[0].shape == (2, shared, run.model.hidden_size)
        # each term is a divergence: zero against the student itself, positive against the teacher
        kl = distill.logit_kl(student.logits, taught.logits, student.targets)
        states = distill.hidden_match(student.hidden, taught.hidden)
        assert distill.logit_kl(student.logits, student.logits, student.targets).item() == pytest.approx(0, abs=1e-6)
        assert distill.hidden_match(student.hidden, student.hidden).item() == 0
        assert kl.item() > 0 and states.item() > 0
        loss, tokens = objective.batch_loss(run.model, samples, rates, False, run.distillation)
        answer_loss, answer_tokens = objective.batch_loss(run.model, samples, rates, False)
    torch.testing.assert_close(loss, answer_loss + 0.5 * kl + 2.0 * states)
    assert tokens == answer_tokens
    run.model.train()
    before = {n: p.detach().clone() for n, p in run.distillation.teacher.trained_parameters().items()}
    loop.fit(run)
    for name, param in run.distillation.teacher.trained_parameters().items():
        assert torch.equal(param, before[name]), name  # the teacher stays frozen
    # a teacher that lays out prompts differently would put the answers elsewhere
    other = recipe(tmp_path, tiny_base, qa, tmp_path / "other", stage="keft", compression="none")
    assert train_main(["keft", "--config", str(other), "steps=1", "model.keft_mode=lora",
                       'model.prompt.question_template="Q: {question}"']) == 0
    with pytest.raises(ConfigError, match="lays out prompts differently"):
        loop.setup(load_recipe(path, [*overrides, f"teacher={tmp_path / 'other' / 'final'}"],
                               init_from=str(out / "final")))


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
    embeds, mask, positions, labels, _ = objective.decoder_batch(run.model, samples, contexts)
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

    def dies_at_step_5(run, step):
        if step == 4:
            raise KeyboardInterrupt("killed")
        return original(run, step)

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
    assert curve[4:] == pytest.approx(expected[3:], rel=1e-5)


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


def test_two_processes_train_together(tmp_path, tiny_base, corpus):
    """`accelerate launch --num_processes 2 --cpu`: each process takes half of every batch."""
    import os
    import subprocess
    import sys

    ae, _ = corpus
    out = tmp_path / "ddp"
    path = recipe(tmp_path, tiny_base, ae, out)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "gmsa.cli.train", "ae", "--config", str(path), "steps=3", "device=cpu"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "final" / "gmsa_weights.safetensors").is_file()
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len([r for r in records if "loss" in r]) == 3  # one log per step, from the main process only
    GMSA.from_pretrained(out / "final")


@pytest.mark.parametrize("name, overrides", [
    ("default-ae.yaml", []),
    ("default-ae-decoder.yaml", []),
    ("default-keft.yaml", []),
    # the baseline, as train-default.sh runs it
    ("default-keft.yaml", ["compression=none", "keft_encoder=false", "rate_curriculum=[]"]),
])
def test_the_repository_recipes_are_valid(name, overrides):
    recipes = Path(__file__).resolve().parents[2] / "recipes"
    config = load_recipe(recipes / name, overrides)
    assert config.stage == name.split("-")[1].removesuffix(".yaml")


def test_restate_fraction_without_documents_is_an_error(tmp_path, tiny_base):
    closed_book = tmp_path / "closed.jsonl"
    closed_book.write_text("".join(json.dumps({"question": f"q{i}?", "answers": ["a"], "documents": []}) + "\n"
                                   for i in range(6)))
    path = recipe(tmp_path, tiny_base, closed_book, tmp_path / "cb", stage="keft")
    with pytest.raises(ConfigError, match="needs documents to restate"):
        loop.setup(load_recipe(path, ["batch_size=4", "restate_fraction=0.5", "model.keft_mode=lora"]))
