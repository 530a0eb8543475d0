"""gmsa-train's options beyond the paper's recipe, on a tiny random model: a decoder that learns in the AE,
end-to-end and full-rank KEFT, learning rates per part."""

import json
import math

import pytest
import torch
from benchmark_scripts import load_benchmark
from training_recipes import TEXTS, ae_then_keft, recipe

from gmsa import GMSA, ConfigError
from gmsa.cli.train import main as train_main
from gmsa.training import loop
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
    ({"gradient_checkpointing": True}, "only valid where the encoder does not train"),
    ({"gradient_checkpointing": True, "stage": "keft", "keft_encoder": True, "model": {"keft_mode": "lora"}},
     "only valid where the encoder does not train"),
])
def test_recipe_rejects_a_bad_stage_option(extra, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**extra)


def test_a_mixed_reader_trains_on_the_planners_layouts(tmp_path, tiny_base, corpus):
    from gmsa.training.layouts import mixed_layouts

    ae, qa = corpus
    out = tmp_path / "ae"
    assert train_main(["ae", "--config", str(recipe(tmp_path, tiny_base, ae, out)), "steps=2"]) == 0
    path = recipe(tmp_path, tiny_base, qa, tmp_path / "mixed", stage="keft")
    overrides = ["steps=3", "model.keft_mode=lora", "budgets=[0.2,0.6]", "random_layouts=0.5", "text_layouts=0.25"]
    run = loop.setup(load_recipe(path, overrides, init_from=str(out / "final")))
    assert all(s.relevance is not None and len(s.relevance) == len(s.contexts) for s in run.train)
    layouts = [layout for step in range(40)
               for layout in mixed_layouts(run.train[:4], (2, 4), [0.2, 0.6], 0.5, 0, step)]
    forms = {rate for layout in layouts for _, rate, _ in layout}
    assert forms == {None, 2, 4}, forms  # text and every rate occur
    gold_soft = sum(1 for layout in layouts if any(d == 0 and rate is not None for d, rate, _ in layout))
    assert gold_soft > 0, "the gold document (index 0 in this data) is sometimes soft"
    assert mixed_layouts(run.train[:4], (2, 4), [0.2, 0.6], 0.5, 0, 7) == mixed_layouts(
        run.train[:4], (2, 4), [0.2, 0.6], 0.5, 0, 7)  # a function of (seed, step): resumable
    loop.fit(run)
    records = [json.loads(line) for line in (tmp_path / "mixed" / "log.jsonl").read_text().splitlines()]
    assert any("eval_loss_b0.2" in r and "eval_loss_b0.6" in r and "eval_loss_t0.6" in r for r in records)
    assert all(math.isfinite(r["loss"]) for r in records if "loss" in r)
    with pytest.raises(ConfigError, match="budgets=\\[1.5\\] is invalid"):
        load_recipe(path, ["model.keft_mode=lora", "budgets=[1.5]"])
    with pytest.raises(ConfigError, match="needs budgets"):
        load_recipe(path, ["model.keft_mode=lora", "random_layouts=0.2"])
    with pytest.raises(ConfigError, match="text_layouts=0.2 needs budgets"):
        load_recipe(path, ["model.keft_mode=lora", "text_layouts=0.2"])
    with pytest.raises(ConfigError, match="is more than 1"):
        load_recipe(path, ["model.keft_mode=lora", "budgets=[0.5]", "random_layouts=0.6", "text_layouts=0.5"])


def test_text_layouts_cut_the_text_as_rerank_text_does():
    from gmsa.training.layouts import mixed_layouts
    from gmsa.training.samples import Sample

    def sample(lengths, relevance):
        return Sample([list(range(n)) for n in lengths], "q", [1], ["a"], relevance=relevance)

    # 200 tokens, budget 0.5 -> 100 positions: the most relevant (index 2, 60 tokens) whole, then 40 of index 0's 80
    samples = [sample([80, 0, 60, 60], [0.5, 0.9, 0.9, 0.1])]
    assert mixed_layouts(samples, (4, 8), [0.5], 0.0, 0, 0, text_share=1.0) == [[(0, None, 40), (2, None, None)]]
    # a budget that holds every document: all whole, the least relevant first
    assert mixed_layouts(samples, (4, 8), [1.0], 0.0, 0, 0, text_share=1.0) == [
        [(3, None, None), (0, None, None), (2, None, None)]]
    # at 0.5 the planner always sends something soft here, and random forms are all text 1 time in 27: so the
    # text-only share is text_share + 0.2 / 27
    mix = [layout for step in range(100)
           for layout in mixed_layouts(samples * 4, (4, 8), [0.5], 0.2, 1, step, text_share=0.4)]
    text_only = sum(all(rate is None for _, rate, _ in layout) for layout in mix) / len(mix)
    assert abs(text_only - (0.4 + 0.2 / 27)) < 0.06, text_only


def test_mixed_layouts_without_text_layouts_draw_as_before():
    """text_share=0 makes the same generator calls as before the field existed: a resumed run draws the same."""
    from gmsa.training.layouts import mixed_layouts
    from gmsa.training.samples import Sample

    samples = [Sample([list(range(n)) for n in lengths], "q", [1], ["a"], relevance=relevance)
               for lengths, relevance in [([80, 0, 60, 60], [0.5, 0.9, 0.9, 0.1]), ([30, 120, 50], [0.2, 0.7, 0.4]),
                                          ([40, 40], None)]]
    # the layouts the previous code (commit b9a106b) drew for this seed and step: a random one, then planned ones
    assert mixed_layouts(samples, (4, 8), [0.25, 0.5], 0.3, 5, 3) == [
        [(3, 4, None), (0, None, None), (2, 8, None)], [(1, None, 50)], [(1, None, None), (0, 8, None)]]
