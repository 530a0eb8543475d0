"""gmsa-train's options beyond the paper's recipe, on a tiny random model: a decoder that learns in the AE,
end-to-end and full-rank KEFT, a restating mix, learning rates per part, distillation from a teacher."""

import json

import pytest
import torch
from benchmark_scripts import load_benchmark
from training_recipes import TEXTS, ae_then_keft, recipe

from gmsa import GMSA, ConfigError
from gmsa.cli.train import main as train_main
from gmsa.training import distill, loop, objective
from gmsa.training.recipe import TrainConfig, load_recipe


def test_full_rank_keft_updates_only_the_decoder(tmp_path, tiny_base, corpus):
    ae_final, keft_final = ae_then_keft(tmp_path, tiny_base, corpus, "full", "model.keft_mode=full")
    tuned = GMSA.from_pretrained(keft_final)
    assert tuned.config.keft_mode == "full"
    a = next(p for n, p in tuned.trained_parameters().items() if n.startswith("decoder.") and "lora_A" in n)
    assert a.shape[0] == 64  # rank = hidden size: a full-rank update
    before = GMSA.from_pretrained(ae_final)
    torch.testing.assert_close(tuned.compress(TEXTS, 2)[0], before.compress(TEXTS, 2)[0], rtol=0, atol=0)


@pytest.mark.parametrize("targets", [[], ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]])
def test_a_lora_reader_widens_to_full_rank_with_the_same_function(tmp_path, tiny_base, corpus, monkeypatch, targets):
    _, lora_final = ae_then_keft(tmp_path, tiny_base, corpus, "lora", "model.keft_mode=lora", "model.keft_lora_rank=2",
                                 "model.keft_lora_alpha=4")
    widen_reader = load_benchmark("widen_reader")
    widened = tmp_path / "widened"
    argv = ["widen_reader", "--checkpoint", str(lora_final), "--out", str(widened)]
    argv += ["--targets", *targets] if targets else []
    monkeypatch.setattr("sys.argv", argv)
    widen_reader.main()  # exits with an error if the logits differ

    model = GMSA.from_pretrained(widened)
    assert model.config.keft_mode == "full"
    assert list(model.config.keft_targets) == (targets or ["q_proj", "k_proj", "v_proj"])
    reference = widen_reader.next_token_logits(GMSA.from_pretrained(lora_final))
    torch.testing.assert_close(widen_reader.next_token_logits(model), reference, rtol=0, atol=1e-5)
    b = {n: p for n, p in model.trained_parameters().items() if n.startswith("decoder.") and "lora_B" in n}
    assert len(b) == 4 * len(model.config.keft_targets)  # every target of the tiny model's 4 layers
    assert all(p.shape[1] == 64 and p[:, 2:].abs().sum() == 0 for p in b.values())  # rank 2 -> hidden size 64

    keft_out = tmp_path / "continued"
    path = recipe(tmp_path, tiny_base, corpus[1], keft_out, stage="keft")
    overrides = ["model.keft_mode=full", f"model.keft_targets={json.dumps(list(model.config.keft_targets))}"]
    assert train_main(["keft", "--config", str(path), "--from", str(widened), "steps=2", *overrides]) == 0
    trained = GMSA.from_pretrained(keft_out / "final").trained_parameters()
    assert all(trained[n][:, 2:].abs().sum() > 0 for n in b)  # the new directions train (their A rows are not zero)


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


def test_slot_maps_join_a_trained_model_as_the_mean_and_train_with_the_compressor(tmp_path, tiny_base, corpus):
    ae, _ = corpus
    first = recipe(tmp_path, tiny_base, ae, tmp_path / "mean")
    assert train_main(["ae", "--config", str(first), "steps=2"]) == 0
    mean = GMSA.from_pretrained(tmp_path / "mean" / "final")
    run = loop.setup(load_recipe(first, ["steps=2", "model.group_merge=slot", f"out_dir={tmp_path / 'slot'}"],
                                 stage="ae", init_from=str(tmp_path / "mean" / "final")))
    assert {n for n in run.trainable if n.startswith("merge.")} == {"merge.down.2", "merge.down.4", "merge.up.2",
                                                                     "merge.up.4"}
    torch.testing.assert_close(run.model.compress(TEXTS, 4), mean.compress(TEXTS, 4), rtol=0, atol=0)
    assert run.model.compressor_fingerprint() != mean.compressor_fingerprint()
    loop.fit(run)
    slot = GMSA.from_pretrained(tmp_path / "slot" / "final")
    assert slot.config.group_merge == "slot" and slot.trained_parameters()["merge.up.4"].abs().sum() > 0
    trained_maps = slot.compress(TEXTS, 4)[0]
    with torch.no_grad():
        slot.slot_maps.up["4"].zero_()  # the trained maps, and only they, undone
    assert not torch.equal(trained_maps, slot.compress(TEXTS, 4)[0])  # inference goes through them
    # continuing it with the mean would drop trained weights; a rate it has no maps for cannot be trained
    trained = str(tmp_path / "slot" / "final")
    with pytest.raises(ConfigError, match="set model.group_merge=slot"):
        loop.setup(load_recipe(first, ["steps=2"], stage="ae", init_from=trained))
    with pytest.raises(ConfigError, match="slot maps for rates"):
        loop.setup(load_recipe(first, ["steps=2", "model.group_merge=slot", "model.rates=[2,4,8]"], stage="ae",
                               init_from=trained))


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
        batch, _, restating_count = loop._batch(run, step, None)
        assert [s.instruction == restate for s in batch] == [True, True, False, False] and restating_count == 2
        assert all(s.target[-1] == tokenizer.eos_token_id for s in batch)
    assert loop._batch(run, 3, None) == loop._batch(run, 3, None)  # resuming draws the same batch
    # each task counts by its share of the samples (here half), not by its share of the target tokens
    (batch, _, _), rates = loop._batch(run, 0, None), [2, 2, 2, 2]
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


def test_restate_fraction_without_documents_is_an_error(tmp_path, tiny_base):
    closed_book = tmp_path / "closed.jsonl"
    closed_book.write_text("".join(json.dumps({"question": f"q{i}?", "answers": ["a"], "documents": []}) + "\n"
                                   for i in range(6)))
    path = recipe(tmp_path, tiny_base, closed_book, tmp_path / "cb", stage="keft")
    with pytest.raises(ConfigError, match="needs documents to restate"):
        loop.setup(load_recipe(path, ["batch_size=4", "restate_fraction=0.5", "model.keft_mode=lora"]))
