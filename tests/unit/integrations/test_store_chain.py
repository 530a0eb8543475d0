"""A chain over a corpus compressed at ingest (gmsa.store) reads its soft tokens and never runs the encoder."""

import pytest
from langchain_core.documents import Document
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from gmsa import GMSA
from gmsa.store import ingest, texts_of
from gmsa_integrations.cache import SoftTokenCache
from gmsa_integrations.langchain import ChatGMSA, GMSACompressor
from gmsa_integrations.llama_index import GMSALLM, GMSANodePostprocessor

DOCS = ["Paris is the capital and largest city of France.", "The quick brown fox jumps over the lazy dog.",
        "Soft tokens are vectors that a decoder reads instead of text."]


@pytest.fixture(scope="module")
def stores(tiny_checkpoint, tmp_path_factory) -> dict:
    model = GMSA.from_pretrained(tiny_checkpoint, device="cpu")
    folder = tmp_path_factory.mktemp("stores")
    return {dtype: str(ingest(model, texts_of([Document(d) for d in DOCS]), folder / dtype, dtype=dtype,
                              progress=False).path) for dtype in ("float32", "bfloat16")}


def answer_with(checkpoint, store, question="Which city?"):
    cache = SoftTokenCache()  # empty: nothing comes from an earlier test
    compressor = GMSACompressor(checkpoint=checkpoint, device="cpu", rate=2, store=store, soft_token_cache=cache)
    llm = ChatGMSA(checkpoint=checkpoint, device="cpu", max_tokens=8, store=store, soft_token_cache=cache)
    documents = compressor.compress_documents([Document(d) for d in DOCS], question)
    reply = llm.invoke("\n".join(d.page_content for d in documents) + "\n" + question).text
    return reply, compressor.runtime.encoder_texts + llm.runtime.encoder_texts


def test_a_langchain_chain_over_the_store_runs_no_encoder_and_answers_the_same(tiny_checkpoint, stores):
    checkpoint = str(tiny_checkpoint)
    reply, encoded = answer_with(checkpoint, None)
    assert encoded > 0
    assert answer_with(checkpoint, stores["float32"]) == (reply, 0)  # fp32 store: the very soft tokens
    assert answer_with(checkpoint, stores["bfloat16"])[1] == 0
    _, encoded = answer_with(checkpoint, stores["bfloat16"], question="Another question?")
    assert encoded == 0


def test_llama_index_nodes_are_read_from_the_store(tiny_checkpoint, stores):
    nodes = [NodeWithScore(node=TextNode(text=d, metadata={"title": "t"}), score=1.0) for d in DOCS]
    assert texts_of([n.node for n in nodes]) == DOCS
    cache = SoftTokenCache()
    post = GMSANodePostprocessor(checkpoint=str(tiny_checkpoint), device="cpu", rate=2, store=stores["bfloat16"],
                                 soft_token_cache=cache)
    llm = GMSALLM(checkpoint=str(tiny_checkpoint), device="cpu", max_new_tokens=6, store=stores["bfloat16"],
                  soft_token_cache=cache)
    out = post.postprocess_nodes(nodes, QueryBundle("Which city?"))
    llm.complete("\n".join(n.node.get_content() for n in out) + "\nWhich city?")
    assert post.runtime.encoder_texts == llm.runtime.encoder_texts == 0
