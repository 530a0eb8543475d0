"""The integrations on the real default model: chains answer like the engine, concurrency is safe."""

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from langchain_core.documents import Document

from gmsa.data import read_qa
from gmsa_integrations.langchain import ChatGMSA, GMSACompressor, gmsa_qa_prompt

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def questions(shared_data):
    return read_qa(shared_data / "qa" / "nq_dev.jsonl", limit=16)


def test_a_stuff_chain_answers_exactly_like_the_engine(questions):
    from langchain_classic.chains.combine_documents import create_stuff_documents_chain

    compressor = GMSACompressor(device="cpu", rate=8)
    llm = ChatGMSA(device="cpu", max_tokens=16)
    chain = create_stuff_documents_chain(llm, gmsa_qa_prompt(), document_separator="\n")
    model = compressor.runtime.model
    for example in questions[:2]:
        documents = compressor.compress_documents([Document(d) for d in example.documents[:5]], example.question)
        answer = chain.invoke({"context": documents, "question": example.question})
        assert answer == model.answer(example.question, example.documents[:5], rate=8, max_new_tokens=16).text


def test_sixteen_concurrent_requests_answer_like_sequential_ones(questions):
    compressor = GMSACompressor(device="cpu", rate=16)
    llm = ChatGMSA(device="cpu", max_tokens=8)
    prompts = []
    for example in questions:
        documents = compressor.compress_documents([Document(d) for d in example.documents[:3]], example.question)
        prompts.append(gmsa_qa_prompt().invoke({"context": "\n".join(d.page_content for d in documents),
                                                "question": example.question}))
    sequential = [llm.invoke(p).text for p in prompts]
    with ThreadPoolExecutor(max_workers=16) as pool:
        threaded = list(pool.map(lambda p: llm.invoke(p).text, prompts))

    async def gather():
        return [m.text for m in await asyncio.gather(*(llm.ainvoke(p) for p in prompts))]

    assert threaded == sequential
    assert asyncio.run(gather()) == sequential


def test_the_demo_answers_its_question_through_the_budgeted_chain(capsys):
    from gmsa.cli.ask import main

    assert main(["rag", "--question", "Which parts of GMSA does the autoencoder stage train?", "--device", "cpu"]) == 0
    lines = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines() if ":" in line)
    assert "the encoder's LoRA adapter and the alignment block" in lines["answer"]  # make demo: answered right
    text, soft = re.search(r"as text \((\d+) passages\) \+ \d+ soft tokens \((\d+) passages", lines["tokens"]).groups()
    assert int(text) >= 1 and int(soft) >= 1  # the budget sent both forms
