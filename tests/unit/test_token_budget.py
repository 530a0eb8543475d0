"""Plain-text baselines at GMSA's budget: how many tokens they keep, which ones, and what the scorer says."""

import json
import math

import pytest
import torch

from gmsa import GMSA
from gmsa.backbone.adapters import ENCODER_ADAPTER, use_adapter
from gmsa.cli.eval import main as eval_main
from gmsa.evaluation.qa import System
from gmsa.evaluation.token_budget import keep_most_surprising, shorten_documents, surprisal, token_budget

TEXTS = ["Paris is the capital of France and its largest city.", "The fox jumps.", ""]


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return GMSA.from_pretrained(tiny_checkpoint, device="cpu")


def test_budget_is_the_soft_token_count_of_gmsa(model):
    for text in TEXTS[:2]:
        n = len(model.tokenize_contexts([text])[0])
        for rate in (2, 4):
            assert token_budget(n, rate) == math.ceil(n / rate) == model.compress([text], rate)[0].shape[0]


def test_surprisal_is_the_base_models_next_token_loss_one_text_at_a_time(model):
    token_ids = model.tokenize_contexts(TEXTS)
    batched = surprisal(model, token_ids)  # right-padded together
    assert batched[2].shape == (0,)
    bos = model.tokenizer.bos_token_id
    with torch.no_grad():
        for ids, scores in zip(token_ids[:2], batched[:2]):
            with use_adapter(model.base, None):
                logits = model.base(input_ids=torch.tensor([[bos, *ids]])).logits[0, :-1]  # (1 + n, V) -> (n, V)
            expected = torch.nn.functional.cross_entropy(logits, torch.tensor(ids), reduction="none")  # (n,)
            torch.testing.assert_close(scores, expected, atol=1e-4, rtol=1e-4)
        # an active adapter (here the encoder LoRA; KEFT's in a trained checkpoint) scores otherwise
        ids = token_ids[0]
        with use_adapter(model.base, ENCODER_ADAPTER):
            logits = model.base(input_ids=torch.tensor([[bos, *ids]])).logits[0, :-1]  # (1 + n, V) -> (n, V)
        with_adapter = torch.nn.functional.cross_entropy(logits, torch.tensor(ids), reduction="none")  # (n,)
        assert not torch.allclose(with_adapter, batched[0], atol=1e-3)


def test_the_most_surprising_tokens_are_kept_in_document_order():
    scores = torch.tensor([0.5, 3.0, 1.0, 3.0, 2.0])
    assert keep_most_surprising(scores, 3) == [1, 3, 4]
    assert keep_most_surprising(scores, 0) == [] and keep_most_surprising(scores, 9) == [0, 1, 2, 3, 4]


def test_documents_shortened_to_the_budget(model):
    token_ids = model.tokenize_contexts(TEXTS)
    truncated = shorten_documents(model, TEXTS, 4, "truncated")
    assert truncated == [model.tokenizer.decode(ids[: math.ceil(len(ids) / 4)]) for ids in token_ids]
    assert TEXTS[0].startswith(truncated[0]) and truncated[2] == ""
    selective = shorten_documents(model, TEXTS, 2, "selective")
    for ids, scores, text in zip(token_ids, surprisal(model, token_ids), selective):
        keep = math.ceil(len(ids) / 2)
        threshold = sorted(scores.tolist(), reverse=True)[keep - 1] if keep else math.inf
        kept = [ids[i] for i in range(len(ids)) if scores[i] >= threshold][:keep]
        assert text == model.tokenizer.decode(kept)
    assert shorten_documents(model, TEXTS, 1, "selective") == shorten_documents(model, TEXTS, 1, "truncated")
    with pytest.raises(ValueError, match="how='random' is invalid"):
        shorten_documents(model, TEXTS, 2, "random")


def test_budget_systems_parse_and_run_in_gmsa_eval(tiny_checkpoint, model, tmp_path):
    assert System.parse("truncated@4") == System("truncated", 4)
    assert System.parse("selective@8+extractive").name == "selective@8+extractive"
    for bad in ("truncated", "selective@0", "truncated@x"):
        with pytest.raises(ValueError, match="truncated@RATE"):
            System.parse(bad)
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "What is the capital of France?", "answers": ["Paris"], "documents": [
        {"title": "Paris", "text": TEXTS[0]}, {"title": "Fox", "text": TEXTS[1]}], "gold": [0]}) + "\n")
    assert eval_main(["qa", "--checkpoint", str(tiny_checkpoint), "--data", str(qa), "--documents", "2",
                      "--systems", "uncompressed", "gmsa@4", "truncated@4", "selective@4", "--device", "cpu",
                      "--max-new-tokens", "3", "--out", str(tmp_path / "q")]) == 0
    result = json.loads((tmp_path / "q" / "result.json").read_text())
    positions = {name: s["document_positions_per_question"] for name, s in result["systems"].items()}
    full = positions["uncompressed"]
    assert full > positions["truncated@4"] and positions["gmsa@4"] < full
    # the first quarter of each document, as the decoder reads it: GMSA's soft-token count, re-tokenised
    assert positions["truncated@4"] == pytest.approx(positions["gmsa@4"], abs=2)
    assert "document tokens / question" in (tmp_path / "q" / "table.md").read_text()
