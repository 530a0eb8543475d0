"""LangChain: the standard unit suite for ChatGMSA, and the compressor in standard chains (tiny model)."""

import asyncio
import json

import pytest
from langchain_core.documents import Document
from langchain_core.load import dumpd, load
from langchain_core.retrievers import BaseRetriever
from langchain_tests.unit_tests import ChatModelUnitTests
from pydantic import ValidationError

from gmsa_integrations.cache import SoftTokenCache
from gmsa_integrations.langchain import ChatGMSA, GMSACompressor, gmsa_qa_prompt
from gmsa_integrations.markup import unmark
from gmsa_integrations.runtime import _models

DOCS = ["Paris is the capital of France.", "The quick brown fox jumps over the lazy dog.",
        "Soft tokens are vectors."]


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint) -> str:
    return str(tiny_checkpoint)


class TestChatGMSAUnit(ChatModelUnitTests):
    """langchain-tests' standard unit suite; it builds models with the standard parameters."""

    @pytest.fixture(autouse=True)
    def _checkpoint(self, checkpoint):
        self._path = checkpoint

    @property
    def chat_model_class(self):
        return ChatGMSA

    @property
    def chat_model_params(self) -> dict:
        return {"checkpoint": getattr(self, "_path", None), "device": "cpu"}

    @property
    def has_tool_calling(self) -> bool:
        return False  # a local GMSA decoder has no tool-calling head or training

    @property
    def has_structured_output(self) -> bool:
        return True


def test_construction_loads_no_weights(checkpoint):
    before = dict(_models)
    ChatGMSA(checkpoint=checkpoint + "-not-loaded-yet", device="cpu")
    GMSACompressor(checkpoint=checkpoint + "-not-loaded-yet", device="cpu")
    assert _models == before


class ListRetriever(BaseRetriever):
    documents: list[Document]

    def _get_relevant_documents(self, query, *, run_manager=None):
        return list(self.documents)


def test_compressor_in_a_contextual_compression_chain_matches_the_engine(checkpoint):
    from langchain_classic.chains.combine_documents import create_stuff_documents_chain
    from langchain_classic.retrievers import ContextualCompressionRetriever

    cache = SoftTokenCache()
    compressor = GMSACompressor(checkpoint=checkpoint, device="cpu", rate=2, soft_token_cache=cache)
    retriever = ContextualCompressionRetriever(
        base_compressor=compressor, base_retriever=ListRetriever(documents=[Document(d) for d in DOCS]))
    documents = retriever.invoke("capital of France?")
    assert [unmark(d.page_content) for d in documents] == DOCS
    assert {d.metadata["gmsa_rate"] for d in documents} == {2}
    json.dumps([d.metadata for d in documents])  # strings and numbers only
    llm = ChatGMSA(checkpoint=checkpoint, device="cpu", max_tokens=8, soft_token_cache=cache)
    chain = create_stuff_documents_chain(llm, gmsa_qa_prompt(), document_separator="\n")
    answer = chain.invoke({"context": documents, "question": "capital of France?"})
    model = compressor.runtime.model
    engine = model.answer("capital of France?", DOCS, rate=2, max_new_tokens=8).text
    assert answer == engine
    # Serialised and loaded back (e.g. through a queue to another process), they still read the same.
    restored = load(dumpd(documents), allowed_objects="all")
    cache.clear()
    assert chain.invoke({"context": restored, "question": "capital of France?"}) == engine



def test_compressor_async_and_relevance_filtering(checkpoint):
    compressor = GMSACompressor(checkpoint=checkpoint, device="cpu", rate=4, top_n=1)
    documents = asyncio.run(compressor.acompress_documents([Document(d) for d in DOCS], "fox and dog"))
    assert len(documents) == 1 and "fox" in documents[0].page_content
    assert 0 < documents[0].metadata["gmsa_relevance"] <= 1
    ranked = GMSACompressor(checkpoint=checkpoint, device="cpu", rate=4, top_n=2, reorder="last")
    documents = ranked.compress_documents([Document(d) for d in DOCS], "fox and dog")
    assert "fox" in documents[-1].page_content and "fox" not in documents[0].page_content
    with pytest.raises(ValidationError):
        GMSACompressor(reorder="middle")


def test_chat_model_usage_counts_soft_tokens_and_streams_the_same_text(checkpoint):
    compressor = GMSACompressor(checkpoint=checkpoint, device="cpu", rate=2)
    context = "\n".join(d.page_content for d in compressor.compress_documents([Document(d) for d in DOCS], ""))
    llm = ChatGMSA(checkpoint=checkpoint, device="cpu", max_tokens=6)
    message = llm.invoke(context + "\nWhat?")
    soft = sum(d.metadata["gmsa_soft_tokens"] for d in compressor.compress_documents([Document(d) for d in DOCS], ""))
    assert message.response_metadata["soft_tokens"] == soft
    assert message.usage_metadata["input_tokens"] > soft
    streamed = list(llm.stream(context + "\nWhat?"))
    assert "".join(c.text for c in streamed).strip() == message.text
    assert streamed[-1].usage_metadata == message.usage_metadata


def test_chat_model_rejects_what_it_cannot_read(checkpoint):
    from langchain_core.messages import HumanMessage, ToolMessage

    llm = ChatGMSA(checkpoint=checkpoint, device="cpu", max_tokens=4)
    with pytest.raises(ValueError, match="tool calling"):
        llm.invoke([ToolMessage("result", tool_call_id="1")])
    with pytest.raises(ValueError, match="text only"):
        llm.invoke([HumanMessage([{"type": "image_url", "image_url": {"url": "data:,"}}])])


def test_an_extractive_chat_model_quotes_the_compressed_documents(checkpoint):
    from langchain_classic.chains.combine_documents import create_stuff_documents_chain

    question = "capital of France?"
    compressor = GMSACompressor(checkpoint=checkpoint, device="cpu", rate=2)
    documents = compressor.compress_documents([Document(d) for d in DOCS], question)
    llm = ChatGMSA(checkpoint=checkpoint, device="cpu", max_tokens=8, extractive=True)
    chain = create_stuff_documents_chain(llm, gmsa_qa_prompt(llm), document_separator="\n")
    answer = chain.invoke({"context": documents, "question": question})
    model = llm.runtime.model
    engine = model.answer_questions([question], [model.compress(DOCS, 2)], quote_from=[DOCS], max_new_tokens=8)[0]
    quote = " ".join(answer.lower().split())  # quotes match in any case and spacing
    assert answer == engine and quote and any(quote in d.lower() for d in DOCS)
    free = ChatGMSA(checkpoint=checkpoint, device="cpu", max_tokens=8)
    assert create_stuff_documents_chain(free, gmsa_qa_prompt(free), document_separator="\n").invoke(
        {"context": documents, "question": question}) != answer, "the random model quotes by itself: no test"
    message = "\n".join(d.page_content for d in documents) + "\nWhat?"
    assert "".join(c.text for c in llm.stream(message)).strip() == llm.invoke(message).text
    assert free.invoke(message, extractive=True).text == llm.invoke(message).text  # also per call


def test_a_budgeted_chain_reads_text_and_soft_documents_as_the_engine_does(checkpoint):
    from langchain_classic.chains.combine_documents import create_stuff_documents_chain

    from gmsa_integrations.markup import split_marked

    question, scores = "capital of France?", [0.9, 0.2, 0.5]
    retrieved = [Document(d, metadata={"relevance_score": s}) for d, s in zip(DOCS, scores)]
    compressor = GMSACompressor(checkpoint=checkpoint, device="cpu", budget=0.6, relevance="retriever")
    documents = compressor.compress_documents(retrieved, question)
    model = compressor.runtime.model
    chosen = model.plan(question, DOCS, 0.6, scores)
    assert [d.metadata["gmsa_form"] for d in documents] == [p.form for p in chosen.sent]
    assert documents[-1].page_content == DOCS[0] and documents[-1].metadata["gmsa_form"] == "text"
    assert sum(d.metadata["gmsa_positions"] for d in documents) == chosen.positions <= chosen.budget
    assert [unmark(d.page_content) for d in documents] == [DOCS[p.index] for p in chosen.sent]  # text for others
    llm = ChatGMSA(checkpoint=checkpoint, device="cpu", max_tokens=8)
    chain = create_stuff_documents_chain(llm, gmsa_qa_prompt(llm), document_separator="\n")
    engine = model.answer(question, DOCS, budget=0.6, relevance=scores, max_new_tokens=8)
    assert chain.invoke({"context": documents, "question": question}) == engine.text
    prompt = gmsa_qa_prompt(llm).invoke({"context": "\n".join(d.page_content for d in documents),
                                         "question": question}).to_messages()[0].content
    assert sum(not isinstance(p, str) for p in split_marked(prompt)) == sum(p.form == "soft" for p in chosen.sent)
    with pytest.raises(ValidationError, match="not both"):
        GMSACompressor(rate=2, budget=0.5)
    with pytest.raises(ValidationError, match="budget=1.5 is invalid"):
        GMSACompressor(budget=1.5)


def test_concurrent_invokes_batch_and_abatch_share_generate_calls_with_the_sequential_answers(checkpoint):
    from gmsa_integrations.runtime import shared_model

    compressor = GMSACompressor(checkpoint=checkpoint, device="cpu", rate=2)
    llm = ChatGMSA(checkpoint=checkpoint, device="cpu", max_tokens=6)
    prompts = [d.page_content + f"\nQuestion {i}?" for i, d in
               enumerate(compressor.compress_documents([Document(d) for d in DOCS * 3], ""))]
    sequential = [llm.invoke(p).text for p in prompts]
    batcher = shared_model(checkpoint, "cpu", None)[2]
    batcher.window, before = 0.2, len(batcher.batch_sizes)
    try:
        assert [m.text for m in llm.batch(prompts, config={"max_concurrency": len(prompts)})] == sequential
        threaded = batcher.batch_sizes[before:]
        before = len(batcher.batch_sizes)
        assert [m.text for m in asyncio.run(llm.abatch(prompts))] == sequential
        awaited = batcher.batch_sizes[before:]
    finally:
        batcher.window = 0.01
    assert sum(threaded) == sum(awaited) == len(prompts)
    assert max(threaded) > 1 and max(awaited) > 1, (threaded, awaited)


def test_structured_output_is_decoded_under_the_schema_in_every_form(checkpoint):
    from typing import Literal

    from pydantic import BaseModel

    class City(BaseModel):
        city: Literal["Paris", "Rome"]  # bounded values: the random model would write a free string until the limit
        capital: bool

    llm = ChatGMSA(checkpoint=checkpoint, device="cpu", max_tokens=60)
    plain = llm.invoke("Which city?").text
    with pytest.raises(json.JSONDecodeError):
        json.loads(plain)  # the random model does not write JSON by itself
    structured = llm.with_structured_output(City)
    answer = structured.invoke("Which city?")
    assert isinstance(answer, City)
    as_dict = llm.with_structured_output(City.model_json_schema()).invoke("Which city?")
    assert as_dict == answer.model_dump()
    raw = llm.with_structured_output(City, include_raw=True).invoke("Which city?")
    assert raw["parsed"] == answer and raw["parsing_error"] is None and json.loads(raw["raw"].content) == as_dict
    assert list(structured.stream("Which city?"))[-1] == answer
    assert asyncio.run(structured.abatch(["Which city?"] * 3)) == [answer] * 3
    assert llm.with_structured_output(City, method="json_mode").invoke("Which city?") == answer
    assert isinstance(llm.with_structured_output(None, method="json_mode").invoke("Which city?"), dict)
    cut = ChatGMSA(checkpoint=checkpoint, device="cpu", max_tokens=5).with_structured_output(City, include_raw=True)
    assert cut.invoke("Which city?")["parsing_error"] is not None  # JSON cut by max_tokens is reported, not raised
    with pytest.raises(ValueError, match="method='tools' is not one ChatGMSA supports"):
        llm.with_structured_output(City, method="tools")
    with pytest.raises(ValueError, match="needs a schema"):
        llm.with_structured_output(None)
