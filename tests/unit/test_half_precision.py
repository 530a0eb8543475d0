"""Every public path with the base model in bf16 and fp16, on the CPU (CI's stand-in for CUDA, where bf16 is the
default): compress, generate, stream, answer, reconstruct, checkpoints across dtypes, gmsa-train, gmsa-eval."""

import json

import pytest
import torch
from safetensors.torch import load_file
from training_recipes import recipe

from gmsa import GMSA, GMSAError
from gmsa.cli.eval import main as eval_main
from gmsa.cli.train import main as train_main

HALF = ["bfloat16", "float16"]
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Paris is the capital of France and its largest city."]


@pytest.fixture(scope="module", params=HALF)
def half(request, tiny_checkpoint) -> GMSA:
    return GMSA.from_pretrained(tiny_checkpoint, device="cpu", dtype=request.param)


@pytest.fixture(scope="module")
def full(tiny_checkpoint) -> GMSA:
    return GMSA.from_pretrained(tiny_checkpoint, device="cpu")


def test_half_base_keeps_trained_weights_in_fp32(half):
    assert half.base.get_input_embeddings().weight.dtype in (torch.bfloat16, torch.float16)
    assert {p.dtype for p in half.trained_parameters().values()} == {torch.float32}
    frozen = [p for n, p in half.base.named_parameters() if "gmsa_" not in n]
    assert {p.dtype for p in frozen} == {half.base.dtype}


def test_soft_tokens_come_in_the_decoders_dtype_and_match_fp32(half, full):
    soft, reference = half.compress(TEXTS, rate=2), full.compress(TEXTS, rate=2)
    for s, r in zip(soft, reference):
        assert s.dtype == half.base.dtype and s.shape == r.shape and torch.isfinite(s.float()).all()
        error = (s.float() - r).norm() / r.norm()
        assert error < 0.05, f"{half.base.dtype}: relative error {error:.3f} against fp32"
    assert half.compress([""], rate=2)[0].dtype == half.base.dtype


def test_generate_stream_answer_and_reconstruct(half):
    soft = half.compress(TEXTS, rate=2)
    prompt = half.format_question("Where is Paris?")
    [text] = half.generate([prompt], [soft], max_new_tokens=6)
    assert "".join(half.stream(prompt, soft, max_new_tokens=6)).strip() == text
    batch = half.generate([prompt, prompt], [soft, soft[:1]], max_new_tokens=6)
    assert batch[0] == text
    answer = half.answer("Where is Paris?", TEXTS, rate=4, extractive=True, max_new_tokens=6)
    quote = " ".join(answer.text.lower().split())
    assert quote and any(quote in t.lower() for t in TEXTS)
    assert all(isinstance(r, str) for r in half.reconstruct(soft, max_new_tokens=8))


def test_a_checkpoint_loads_in_any_dtype_and_saves_fp32(half, full, tmp_path):
    for name, param in half.trained_parameters().items():
        torch.testing.assert_close(param, full.trained_parameters()[name], rtol=0, atol=0)
    assert half.base_fingerprint == full.base_fingerprint
    assert half.compressor_fingerprint() != full.compressor_fingerprint(), "soft tokens of one dtype stay apart"
    saved = half.save_pretrained(tmp_path / "from-half")
    assert {t.dtype for t in load_file(saved / "gmsa_weights.safetensors").values()} == {torch.float32}
    again = GMSA.from_pretrained(saved, device="cpu")
    for name, param in again.trained_parameters().items():
        torch.testing.assert_close(param, full.trained_parameters()[name], rtol=0, atol=0)
    shipped = full.save_pretrained(tmp_path / "bf16", dtype=torch.bfloat16)  # a checkpoint stored in bf16
    loaded = GMSA.from_pretrained(shipped, device="cpu", dtype=str(half.base.dtype).removeprefix("torch."))
    assert torch.isfinite(loaded.compress(TEXTS, rate=4)[0].float()).all()


def test_unsupported_dtype_and_missing_device_are_clear_errors(tiny_checkpoint):
    with pytest.raises(GMSAError, match="not supported for the base model"):
        GMSA.from_pretrained(tiny_checkpoint, device="cpu", dtype="int8")
    with pytest.raises(GMSAError, match="not a torch device"):
        GMSA.from_pretrained(tiny_checkpoint, device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(GMSAError, match="not available: this machine has 0 CUDA"):
            GMSA.from_pretrained(tiny_checkpoint, device="cuda")


def test_training_with_a_bf16_base(tmp_path, tiny_base, corpus):
    ae, qa = corpus
    out = tmp_path / "ae"
    assert train_main(["ae", "--config", str(recipe(tmp_path, tiny_base, ae, out)), "steps=3", "precision=bf16"]) == 0
    keft = tmp_path / "keft"
    assert train_main(["keft", "--config", str(recipe(tmp_path, tiny_base, qa, keft, stage="keft")), "--from",
                       str(out / "final"), "steps=3", "precision=bf16", "model.keft_mode=lora",
                       "model.keft_lora_rank=2"]) == 0
    records = [json.loads(line) for line in (keft / "log.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records if "loss" in r)
    tensors = load_file(keft / "final" / "gmsa_weights.safetensors")
    assert {t.dtype for t in tensors.values()} == {torch.float32}
    assert any(name.startswith("decoder.") and t.abs().sum() > 0 for name, t in tensors.items() if "lora_B" in name)
    assert GMSA.from_pretrained(keft / "final", device="cpu").answer("What?", TEXTS, max_new_tokens=4).text is not None


@pytest.mark.parametrize("dtype", HALF)
def test_gmsa_eval_in_half_precision(tiny_checkpoint, tmp_path, dtype):
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": f"Where is {c}?", "answers": [c], "documents": [
        {"title": c, "text": f"{c} is in France."}, {"title": "x", "text": "Soft tokens are vectors."}], "gold": [0]})
        + "\n" for c in ("Paris", "Lyon")))
    assert eval_main(["qa", "--checkpoint", str(tiny_checkpoint), "--data", str(qa), "--documents", "2", "--systems",
                      "gmsa@2", "gmsa@4+extractive", "uncompressed", "truncated@2", "selective@2", "--device", "cpu",
                      "--dtype", dtype, "--max-new-tokens", "4", "--out", str(tmp_path / "q")]) == 0
    result = json.loads((tmp_path / "q" / "result.json").read_text())
    assert len(result["systems"]) == 5
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    assert eval_main(["reconstruction", "--checkpoint", str(tiny_checkpoint), "--texts", str(texts), "--rates", "2",
                      "--no-similarity", "--device", "cpu", "--dtype", dtype, "--out", str(tmp_path / "r")]) == 0


def test_integrations_in_bf16(tiny_checkpoint):
    from langchain_classic.chains.combine_documents import create_stuff_documents_chain
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from gmsa_integrations.langchain import ChatGMSA, GMSACompressor, gmsa_qa_prompt
    from gmsa_integrations.llama_index import GMSALLM, GMSANodePostprocessor

    options = {"checkpoint": str(tiny_checkpoint), "device": "cpu", "dtype": "bfloat16"}
    question = "capital of France?"
    documents = GMSACompressor(rate=2, **options).compress_documents([Document(t) for t in TEXTS], question)
    llm = ChatGMSA(max_tokens=6, **options)
    chain = create_stuff_documents_chain(llm, gmsa_qa_prompt(llm), document_separator="\n")
    answer = chain.invoke({"context": documents, "question": question})
    model = llm.runtime.model
    assert model.base.dtype == torch.bfloat16
    assert answer == model.answer(question, TEXTS, rate=2, max_new_tokens=6).text
    nodes = [NodeWithScore(node=TextNode(text=t, id_=f"n{i}"), score=1.0) for i, t in enumerate(TEXTS)]
    compressed = GMSANodePostprocessor(rate=2, **options).postprocess_nodes(nodes, QueryBundle(question))
    assert len(compressed) == 2
    assert isinstance(GMSALLM(max_new_tokens=4, **options).complete("Where is Paris?").text, str)
