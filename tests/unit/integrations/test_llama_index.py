"""LlamaIndex: node postprocessor, LLM (sync, streaming, async), and whole-node synthesis (tiny model)."""

import asyncio

import pytest
import torch
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode

from gmsa.answering import planned_contexts
from gmsa_integrations.llama_index import GMSALLM, GMSANodePostprocessor, gmsa_query_engine
from gmsa_integrations.markup import split_marked, unmark

DOCS = ["Paris is the capital of France.", "The quick brown fox jumps over the lazy dog.",
        "Soft tokens are vectors."]


@pytest.fixture(scope="module")
def llm(tiny_checkpoint) -> GMSALLM:
    return GMSALLM(checkpoint=str(tiny_checkpoint), device="cpu", max_new_tokens=6)


def nodes(texts) -> list[NodeWithScore]:
    return [NodeWithScore(node=TextNode(text=t, id_=f"n{i}", metadata={"title": f"doc {i}"}), score=1 - i / 100)
            for i, t in enumerate(texts)]


def test_postprocessor_keeps_ids_and_scores_and_hides_its_metadata(tiny_checkpoint):
    post = GMSANodePostprocessor(checkpoint=str(tiny_checkpoint), device="cpu", rate=2)
    given = nodes(DOCS)
    out = post.postprocess_nodes(given, QueryBundle("capital?"))
    assert [n.node.node_id for n in out] == ["n0", "n1", "n2"]
    assert [n.score for n in out] == [n.score for n in given]
    assert [unmark(n.node.get_content(metadata_mode=MetadataMode.NONE)) for n in out] == DOCS
    llm_text = out[0].node.get_content(metadata_mode=MetadataMode.LLM)
    embed_text = out[0].node.get_content(metadata_mode=MetadataMode.EMBED)
    assert "gmsa_" not in llm_text and "gmsa_" not in embed_text and "title: doc 0" in llm_text
    assert given[0].node.get_content() == DOCS[0], "the retrieved nodes themselves are not modified"


def test_llm_complete_chat_stream_and_async_agree(llm):
    prompt = "Where is Paris?"
    text = llm.complete(prompt).text
    assert "".join(r.delta for r in llm.stream_complete(prompt)).strip() == text
    assert llm.chat([ChatMessage(role=MessageRole.USER, content=prompt)]).message.content == text

    async def run_async():
        completed = await llm.acomplete(prompt)
        chatted = await llm.achat([ChatMessage(role=MessageRole.USER, content=prompt)])
        streamed = "".join([r.delta async for r in await llm.astream_complete(prompt)])
        chat_streamed = [r async for r in await llm.astream_chat([ChatMessage(role=MessageRole.USER, content=prompt)])]
        return completed.text, chatted.message.content, streamed.strip(), chat_streamed[-1].message.content

    assert asyncio.run(run_async()) == (text, text, text, text)


def test_async_generation_does_not_block_the_event_loop(llm):
    async def run():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        task = asyncio.create_task(ticker())
        await llm.acomplete("Tell me about foxes.", max_new_tokens=24)
        task.cancel()
        return ticks

    assert asyncio.run(run()) > 0


class ListRetriever(BaseRetriever):
    def __init__(self, given):
        super().__init__()
        self._given = given

    def _retrieve(self, query_bundle):
        return self._given


class RecordingLLM(GMSALLM):
    """A real GMSALLM that also keeps the prompts it was given."""

    def _complete(self, messages, kwargs):
        self.__dict__.setdefault("_prompts", []).extend(text for _, text in messages)
        return super()._complete(messages, kwargs)


def test_forty_nodes_reach_the_llm_whole_in_one_prompt(tiny_checkpoint):
    texts = [f"Document number {i}: the fox {i} jumps over the dog {i}." for i in range(40)]
    llm = RecordingLLM(checkpoint=str(tiny_checkpoint), device="cpu", max_new_tokens=4, context_window=256)
    engine = gmsa_query_engine(ListRetriever(nodes(texts)), llm=llm, rate=4)
    response = engine.query("Which fox?")
    prompts = llm.__dict__["_prompts"]
    assert len(prompts) == 1, "one LLM call, however small the context window"
    documents = [p for p in split_marked(prompts[0]) if not isinstance(p, str)]
    assert [d.text for d in documents] == texts
    assert [n.node.node_id for n in response.source_nodes] == [f"n{i}" for i in range(40)]



def test_an_extractive_llm_quotes_the_compressed_nodes(tiny_checkpoint):
    post = GMSANodePostprocessor(checkpoint=str(tiny_checkpoint), device="cpu", rate=2)
    prompt = "\n".join(n.node.get_content() for n in post.postprocess_nodes(nodes(DOCS), QueryBundle("?"))) + "\nWhat?"
    llm = GMSALLM(checkpoint=str(tiny_checkpoint), device="cpu", max_new_tokens=8, extractive=True)
    text = llm.complete(prompt).text
    quote = " ".join(text.lower().split())  # quotes match in any case and spacing
    assert quote and any(quote in d.lower() for d in DOCS)
    assert "".join(r.delta for r in llm.stream_complete(prompt)).strip() == text
    free = GMSALLM(checkpoint=str(tiny_checkpoint), device="cpu", max_new_tokens=8)
    assert free.complete(prompt).text != text, "the random model quotes by itself: no test"


def test_a_budgeted_query_engine_reads_text_and_soft_nodes_as_the_engine_does(tiny_checkpoint):
    question = "capital of France?"
    # no metadata, so the LLM reads exactly the documents' texts, as the engine does
    given = [NodeWithScore(node=TextNode(text=t, id_=f"n{i}"), score=1 - i / 100) for i, t in enumerate(DOCS)]
    post = GMSANodePostprocessor(checkpoint=str(tiny_checkpoint), device="cpu", budget=0.6, relevance="retriever")
    out = post.postprocess_nodes(given, QueryBundle(question))
    model = post.runtime.model
    chosen = model.plan(question, DOCS, 0.6, [n.score for n in given])
    assert [n.node.node_id for n in out] == [f"n{p.index}" for p in chosen.sent]
    assert [n.node.metadata["gmsa_form"] for n in out] == [p.form for p in chosen.sent]
    assert out[-1].node.get_content(metadata_mode=MetadataMode.NONE) == DOCS[0]
    llm = RecordingLLM(checkpoint=str(tiny_checkpoint), device="cpu", max_new_tokens=8)
    response = gmsa_query_engine(ListRetriever(given), llm=llm, postprocessor=post).query(question)
    engine = model.answer(question, DOCS, budget=0.6, relevance=[n.score for n in given], max_new_tokens=8)
    assert (response.response or "") == engine.text
    # the LLM's prompt is the engine's, soft and text documents alike
    conversation, usage = llm.runtime.conversation([("user", llm.__dict__["_prompts"][0])])
    expected = model.question_conversations([model.format_question(question)],
                                            [planned_contexts(model, DOCS, chosen)])
    torch.testing.assert_close(model.decoder_inputs([conversation])[0], model.decoder_inputs(expected)[0])
    assert usage.soft_tokens == chosen.soft_tokens


def test_concurrent_async_completions_share_generate_calls_with_the_sequential_answers(llm):
    from gmsa_integrations.runtime import shared_model

    prompts = [f"Where is {place}?" for place in ("Paris", "Rome", "the fox", "a soft token", "Berlin", "the dog")]
    sequential = [llm.complete(p).text for p in prompts]
    batcher = shared_model(llm.checkpoint, "cpu", None)[2]
    batcher.window, before = 0.2, len(batcher.batch_sizes)

    async def run():
        return await asyncio.gather(*[llm.acomplete(p) for p in prompts])

    try:
        assert [r.text for r in asyncio.run(run())] == sequential
    finally:
        batcher.window = 0.01
    assert max(batcher.batch_sizes[before:]) > 1, batcher.batch_sizes[before:]
