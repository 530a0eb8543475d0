"""GMSA over a tiny random Llama: structure, compression, decoding, checkpoints."""

import math
import warnings

import pytest
import torch

from gmsa import GMSA, CheckpointError, GMSAConfig
from gmsa.backbone.layers import decoder_core
from gmsa.compress.compressor import soft_tokens
from gmsa.compress.encode import encode
from gmsa.compress.merge import group_merge
from gmsa.compress.segment import right_pad
from gmsa.decode.prompt import embed_parts, question_message, render_chat, render_parts
from gmsa.training.calibration import calibrate_alignment
from gmsa.training.objective import compress_contexts, decoder_batch
from gmsa.training.samples import Sample, qa_samples

TEXTS = [
    "The quick brown fox jumps over the lazy dog. Paris is the capital of France and its largest city.",
    "Soft tokens are vectors.",
    "Group merging averages hidden states in groups of equal size.",
]


def tiny_fields(base, **overrides) -> dict:
    """Sizes for the tiny base; every layout field keeps its default: the shipped layout."""
    return {"base_model": str(base), "encoder_layers": 2, "lsa_layers": 1, "lora_rank": 4, "lora_alpha": 8,
            "rates": (2, 4), "segment_tokens": 16, **overrides}


def tiny_config(base, **overrides) -> GMSAConfig:
    return GMSAConfig(**tiny_fields(base, **overrides))


@pytest.fixture
def model(tiny_base) -> GMSA:
    torch.manual_seed(0)
    gmsa = GMSA.from_base(str(tiny_base), tiny_config(tiny_base), device="cpu")
    # Give the zero-initialised LoRA B matrices values, so adapters visibly matter in tests.
    with torch.no_grad():
        for name, param in gmsa.trained_parameters().items():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    return gmsa


def test_lsa_starts_as_a_copy_of_the_lowest_base_layers(tiny_base):
    gmsa = GMSA.from_base(str(tiny_base), tiny_config(tiny_base, lsa_layers=2))
    layers = decoder_core(gmsa.base).layers
    for block, layer in zip(gmsa.lsa.blocks, layers[:2]):
        base_weights = {k.replace(".base_layer", ""): v for k, v in layer.state_dict().items() if "lora" not in k}
        assert set(block.state_dict()) == set(base_weights)
        for name, value in block.state_dict().items():
            torch.testing.assert_close(value, base_weights[name], rtol=0, atol=0)
        assert block.self_attn.q_proj.weight.data_ptr() != layer.self_attn.q_proj.base_layer.weight.data_ptr()


def test_base_weights_are_in_memory_once(model):
    base_params = sum(p.numel() for n, p in model.base.named_parameters() if "lora_" not in n)
    trained = sum(p.numel() for p in model.trained_parameters().values())
    everything = sum(p.numel() for p in model.parameters())
    assert everything == base_params + trained
    # LoRA only on the first k layers of the encoder
    encoder = [n for n in model.trained_parameters() if n.startswith("encoder.")]
    lora_layers = {int(n.split("layers.")[1].split(".")[0]) for n in encoder}
    assert lora_layers == {0, 1}


def test_the_papers_lsa_ends_in_the_bases_frozen_final_norm(tiny_base):
    paper = GMSA.from_base(str(tiny_base), GMSAConfig.paper(**tiny_fields(tiny_base)), device="cpu")
    assert paper.config.keft_mode == "full" and paper.config.encoder_final_norm
    assert "lsa.output_norm.norm.weight" not in paper.trained_parameters()  # frozen: not trained, not saved
    assert "lsa.block_gate" not in paper.trained_parameters()
    soft = paper.compress(TEXTS, rate=2)[1]  # (m, H) after the final norm: RMS ~ the norm's weight
    torch.testing.assert_close(soft.pow(2).mean(-1).sqrt(), torch.ones(soft.shape[0]), atol=0.05, rtol=0.05)
    shipped = GMSA.from_base(str(tiny_base), tiny_config(tiny_base), device="cpu")
    assert {"lsa.output_norm.weight", "lsa.block_gate"} <= set(shipped.trained_parameters())


def test_calibration_matches_block_inputs_to_the_embedding_statistics(tiny_base):
    torch.manual_seed(0)
    # One rate and texts within one segment, so calibration sees exactly what compress reads below.
    gmsa = GMSA.from_base(str(tiny_base), tiny_config(tiny_base, rates=(2,), segment_tokens=64), device="cpu")
    texts = TEXTS[1:]
    assert max(len(ids) for ids in gmsa.tokenize_contexts(texts)) <= gmsa.config.segment_tokens
    calibrate_alignment(gmsa, gmsa.tokenize_contexts(texts))
    ids, mask = right_pad(gmsa.tokenize_contexts(texts), gmsa.tokenizer.pad_token_id, gmsa.device)
    with torch.no_grad():
        merged, merged_mask = group_merge(encode(gmsa.base, ids, mask, 2, final_norm=False), mask, 2)
        inputs = gmsa.lsa.input_affine(merged)[merged_mask]  # (N, H), what the blocks read
    table = gmsa.base.get_input_embeddings().weight.float()  # (V, H)
    torch.testing.assert_close(inputs.mean(dim=0), table.mean(dim=0), atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(inputs.std(dim=0), table.std(dim=0), atol=1e-4, rtol=1e-3)
    with pytest.raises(ValueError, match="non-empty"):
        calibrate_alignment(gmsa, [[]])


def test_readout_maps_rate_one_states_back_to_their_own_tokens(tiny_base):
    torch.manual_seed(0)
    gmsa = GMSA.from_base(str(tiny_base), tiny_config(tiny_base), device="cpu")
    token_ids = [torch.randint(0, len(gmsa.tokenizer), (16,)).tolist() for _ in range(48)]
    ids, mask = right_pad(token_ids, gmsa.tokenizer.pad_token_id, gmsa.device)
    own = gmsa.base.get_input_embeddings().weight[ids].detach()  # (N, T, H): each token's embedding
    best_constant = (own - own.mean(dim=(0, 1))).pow(2).mean()
    calibrate_alignment(gmsa, token_ids)
    with torch.no_grad():
        soft, _ = soft_tokens(gmsa, ids, mask, rate=1)  # (N, T, H): one soft token per token
    assert (soft - own).pow(2).mean() < 0.5 * best_constant  # 0.21 here; no better than a constant: 1.0


def test_gated_lsa_starts_without_its_blocks(tiny_base):
    torch.manual_seed(0)
    gmsa = GMSA.from_base(str(tiny_base), tiny_config(tiny_base, lsa_gate=True), device="cpu")
    assert "lsa.block_gate" in gmsa.trained_parameters()
    before = gmsa.compress(TEXTS, rate=2)
    with torch.no_grad():
        for param in gmsa.lsa.blocks.parameters():
            param.normal_()
    for a, b in zip(before, gmsa.compress(TEXTS, rate=2)):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        gmsa.lsa.block_gate.fill_(1.0)
    assert not torch.allclose(before[0], gmsa.compress(TEXTS, rate=2)[0])


def test_encoder_reads_before_or_after_the_final_norm(tiny_base):
    prenorm = GMSA.from_base(str(tiny_base), tiny_config(tiny_base, encoder_final_norm=False), device="cpu")
    ids, mask = right_pad(prenorm.tokenize_contexts(TEXTS), prenorm.tokenizer.pad_token_id, prenorm.device)
    with torch.no_grad():
        raw = encode(prenorm.base, ids, mask, 2, final_norm=False)  # (B, T, H)
        normed = encode(prenorm.base, ids, mask, 2)  # (B, T, H)
    torch.testing.assert_close(decoder_core(prenorm.base).norm(raw), normed)
    assert prenorm.compressor_fingerprint() != GMSA.from_base(
        str(tiny_base), tiny_config(tiny_base, encoder_final_norm=True), device="cpu").compressor_fingerprint()


def test_compress_shapes(model):
    counts = [len(ids) for ids in model.tokenize_contexts(TEXTS)]
    assert counts[0] > model.config.segment_tokens, "the first text must span several segments"
    for rate in (2, 4):
        soft = model.compress(TEXTS, rate=rate)
        assert [tuple(s.shape) for s in soft] == [(math.ceil(n / rate), model.hidden_size) for n in counts]


def test_long_text_is_compressed_segment_by_segment(model):
    ids = model.tokenize_contexts(TEXTS[:1])[0]
    whole = model.compress(TEXTS[:1], rate=4)[0]
    first = model.tokenizer.decode(ids[:16])
    assert model.tokenize_contexts([first])[0] == ids[:16]
    torch.testing.assert_close(whole[:4], model.compress([first], rate=4)[0])


def test_batch_compression_equals_one_by_one(model):
    together = model.compress(TEXTS, rate=2)
    for text, soft in zip(TEXTS, together):
        torch.testing.assert_close(soft, model.compress([text], rate=2)[0], rtol=1e-4, atol=1e-5)


def test_training_compresses_each_context_as_inference_does(model):
    # training batches every context of a step by length, sample i at its own rate; each context's soft
    # tokens must be what compress() gives that text alone, and gradients must reach the encoder LoRA
    ids = model.tokenize_contexts(TEXTS)
    samples = [Sample([ids[0], ids[1]], "", [], []), Sample([ids[2]], "", [], []), Sample([ids[1], ids[0]], "", [], [])]
    rates = [4, 2, 2]
    lora = next(p for n, p in model.trained_parameters().items() if n.startswith("encoder.") and "lora_A" in n)
    lora.requires_grad_(True)
    contexts = compress_contexts(model, samples, rates)
    for sample, rate, soft in zip(samples, rates, contexts):
        assert len(soft) == len(sample.contexts)
        for context, row in zip(sample.contexts, soft):
            alone = model.compress([model.tokenizer.decode(context)], rate=rate)[0]
            torch.testing.assert_close(row.detach(), alone, rtol=1e-4, atol=1e-5)
    sum(row.pow(2).sum() for soft in contexts for row in soft).backward()
    assert lora.grad is not None and lora.grad.abs().sum() > 0


def test_empty_text_gives_empty_soft_tokens(model):
    soft = model.compress(["", "   \n", TEXTS[1]], rate=2)
    assert soft[0].shape == (0, model.hidden_size) and soft[1].shape == (0, model.hidden_size)
    assert soft[2].shape[0] > 0


def test_unsupported_rate_is_an_error(model):
    with pytest.raises(ValueError, match="rate=3"):
        model.compress(TEXTS, rate=3)


def test_encoder_adapter_changes_soft_tokens_but_not_decoder(model):
    before = model.compress(TEXTS[1:2], rate=2)[0]
    prompt = ["Question: who wrote the book?"]
    plain = model.generate(prompt, max_new_tokens=6)
    with torch.no_grad():
        for name, param in model.trained_parameters().items():
            if "lora_B" in name:
                param.mul_(3)
    assert not torch.allclose(before, model.compress(TEXTS[1:2], rate=2)[0])
    assert model.generate(prompt, max_new_tokens=6) == plain  # the decoder never sees the encoder LoRA


def test_batched_generation_equals_one_by_one(model):
    soft = model.compress(TEXTS, rate=2)
    prompts = ["Question: who wrote the book?", "Answer the question.", "Restate the aforementioned Text."]
    contexts = [[soft[0]], [soft[1], "plain text context"], [soft[2], soft[1]]]
    together = model.generate(prompts, contexts, max_new_tokens=8, repetition_penalty=1.0)
    alone = [model.generate([p], [c], max_new_tokens=8, repetition_penalty=1.0)[0] for p, c in zip(prompts, contexts)]
    assert together == alone


def test_stream_yields_the_generated_text(model):
    soft = model.compress(TEXTS[:1], rate=4)
    full = model.generate(["Question: who?"], [soft], max_new_tokens=8)[0]
    assert "".join(model.stream("Question: who?", soft, max_new_tokens=8)).strip() == full


def test_crafted_marker_in_prompt_stays_text(model):
    soft = model.compress(TEXTS[:2], rate=4)
    crafted = "<gmsa-context-0> what? <gmsa-context-1>"
    parts = render_parts(model.tokenizer, model.config.prompt, [soft[0]], crafted)
    soft_parts = [p for p in parts if p.is_floating_point()]
    assert len(soft_parts) == 1 and soft_parts[0] is soft[0]
    text = model.tokenizer.decode(torch.cat([p for p in parts if not p.is_floating_point()]))
    assert crafted in text


def test_chat_places_soft_tokens_where_they_appear(model):
    soft = model.compress(TEXTS[:2], rate=4)
    conversation = [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": ["Read: ", soft[1], " then ", soft[0], "\nWhat?"]}]
    parts = render_chat(model.tokenizer, model.config.prompt, conversation)
    soft_parts = [p for p in parts if p.is_floating_point()]
    assert [p is s for p, s in zip(soft_parts, (soft[1], soft[0]))] == [True, True]
    text = model.tokenizer.decode(torch.cat([p for p in parts if not p.is_floating_point()]))
    assert "Be brief." in text and "Read: " in text and "then" in text
    # The question helper is the same conversation the engine trains on.
    assert model.generate(["What?"], [soft], max_new_tokens=6) == model.generate_chat(
        [[question_message(model.config.prompt, soft, "What?")]], max_new_tokens=6)


def test_answering_and_training_lay_out_a_question_alike(model, corpus):
    # the decoder must read at inference what KEFT trained it on: the documents in order, then the question
    fmt = model.config.prompt
    soft = model.compress(TEXTS[:2], rate=4)
    expected = [[question_message(fmt, soft, model.format_question("who?"))]]
    seen = []  # what answer() hands the decoder (the tiny model's answers may be empty text)
    generate_chat = model.generate_chat
    model.generate_chat = lambda conversations, *args, **kwargs: seen.extend(conversations) or generate_chat(
        conversations, *args, **kwargs)
    answer = model.answer("who?", TEXTS[:2], rate=4, max_new_tokens=6)
    torch.testing.assert_close(model.decoder_inputs(seen)[0], model.decoder_inputs(expected)[0])
    assert answer.text == generate_chat(expected, max_new_tokens=6)[0]

    tokenizer = model.tokenizer
    sample = qa_samples([str(corpus[1])], tokenizer, model.config, max_documents=2, max_answer_tokens=8)[0]
    contexts = compress_contexts(model, [sample], [4])
    batch = decoder_batch(model, [sample], contexts)
    rendered = render_parts(tokenizer, fmt, contexts[0], sample.instruction)
    assert rendered[1] is contexts[0][0] and "What is in text 0?" in tokenizer.decode(rendered[-1])
    embedding = model.base.get_input_embeddings()
    expected_embeds = torch.cat([embed_parts(embedding, rendered), embedding(torch.tensor(sample.target))])
    torch.testing.assert_close(batch.embeds[0], expected_embeds)


def test_decoder_inputs_are_left_padded_whole(model):
    conversations = model.question_conversations(["short", "a much longer prompt than the other"], None)
    embeds, mask, positions = model.decoder_inputs(conversations)
    assert mask[0, 0] == 0 and mask[0, -1] == 1 and mask[1].all()
    assert positions[0, mask[0].argmax()] == 0 and positions[1, -1] == mask.shape[1] - 1


def test_save_and_load_round_trip(model, tmp_path):
    model.save_pretrained(tmp_path / "ckpt")
    loaded = GMSA.from_pretrained(tmp_path / "ckpt", device="cpu")
    assert loaded.config == model.config
    for name, param in model.trained_parameters().items():
        torch.testing.assert_close(loaded.trained_parameters()[name], param, rtol=0, atol=0)
    torch.testing.assert_close(loaded.compress(TEXTS, rate=4)[0], model.compress(TEXTS, rate=4)[0])
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["gmsa_config.json", "gmsa_weights.safetensors"]
    # a shareable folder, not the 0700/0600 modes of its temporary staging folder
    assert (tmp_path / "ckpt").stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "ckpt").iterdir()} == {0o644}


def test_bf16_checkpoint_loads_into_an_fp32_model(model, tmp_path):
    model.save_pretrained(tmp_path / "ckpt", dtype=torch.bfloat16)  # how the bundled default ships
    loaded = GMSA.from_pretrained(tmp_path / "ckpt", device="cpu")
    for name, param in model.trained_parameters().items():
        assert loaded.trained_parameters()[name].dtype == torch.float32
        torch.testing.assert_close(loaded.trained_parameters()[name], param.to(torch.bfloat16).float(), rtol=0, atol=0)


def test_loading_onto_another_base_model_fails(model, tmp_path, other_tiny_base):
    model.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="fingerprint"):
        GMSA.from_pretrained(tmp_path / "ckpt", base_model=str(other_tiny_base))


def test_incomplete_checkpoint_fails_loudly(model, tmp_path):
    from safetensors.torch import load_file, save_file

    model.save_pretrained(tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "gmsa_weights.safetensors"
    tensors = load_file(weights)
    tensors.pop(sorted(tensors)[0])
    tensors["lsa.extra"] = torch.zeros(1)
    save_file(tensors, weights)
    with pytest.raises(CheckpointError, match="1 missing.*1 unexpected"):
        GMSA.from_pretrained(tmp_path / "ckpt")


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="gmsa_config.json is missing"):
        GMSA.from_pretrained(tmp_path)


def test_saving_over_a_checkpoint_replaces_it_whole(model, tmp_path):
    model.save_pretrained(tmp_path / "ckpt")
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_keft_lora_adapter_is_saved_and_used_only_by_the_decoder(tiny_base, tmp_path):
    gmsa = GMSA.from_base(str(tiny_base), tiny_config(tiny_base, keft_mode="lora", keft_lora_rank=2))
    names = list(gmsa.trained_parameters())
    assert any(n.startswith("decoder.") and "q_proj" in n for n in names)
    soft = gmsa.compress(TEXTS[:1], rate=4)
    with torch.no_grad():
        for name, param in gmsa.trained_parameters().items():
            if name.startswith("decoder.") and "lora_B" in name:
                param.normal_(0, 0.5)
    torch.testing.assert_close(gmsa.compress(TEXTS[:1], rate=4)[0], soft[0])  # encoder unaffected
    gmsa.save_pretrained(tmp_path / "k")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = GMSA.from_pretrained(tmp_path / "k")
    assert not [w for w in caught if "peft_config" in str(w.message)]  # two adapters are the design: no warning
    assert loaded.generate(["Hi"], max_new_tokens=5) == gmsa.generate(["Hi"], max_new_tokens=5)
