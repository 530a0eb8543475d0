"""GMSA over a tiny random Llama: structure and compression (test_decoding.py, test_checkpoint.py: the rest)."""

import math

import pytest
import torch
from tiny_gmsa import TEXTS, tiny_config, tiny_fields

from gmsa import GMSA, GMSAConfig
from gmsa.backbone.layers import decoder_core
from gmsa.compress.compressor import soft_tokens
from gmsa.compress.encode import encode
from gmsa.compress.merge import group_merge
from gmsa.compress.segment import right_pad
from gmsa.training.calibration import calibrate_alignment
from gmsa.training.objective import compress_contexts
from gmsa.training.samples import Sample


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
