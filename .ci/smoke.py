"""Smoke test of an installed gmsa (run from outside the repository, in a fresh venv): load the bundled default,
answer one question, run one LangChain chain and one LlamaIndex query engine over the bundled example docs."""

import gmsa
from gmsa import GMSA
from gmsa_integrations.demo import DEFAULT_DOCUMENTS, passages

assert "site-packages" in gmsa.__file__, f"gmsa imported from {gmsa.__file__}, not from the installed wheel"
model = GMSA.from_pretrained(device="cpu")
documents = ["Paris is the capital and largest city of France.", "Berlin is the capital of Germany."]
answer = model.answer("What is the capital of France?", documents)
print(f"answer: {answer.text!r} ({answer.plan.summary()})")
assert "Paris" in answer.text

from langchain_classic.retrievers import ContextualCompressionRetriever  # noqa: E402
from langchain_core.vectorstores import InMemoryVectorStore  # noqa: E402

from gmsa_integrations.demo import build_chain  # noqa: E402
from gmsa_integrations.langchain import ChatGMSA, GMSACompressor, MiniLMEmbeddings  # noqa: E402

store = InMemoryVectorStore(MiniLMEmbeddings())
store.add_documents(passages(DEFAULT_DOCUMENTS))
retriever = ContextualCompressionRetriever(base_compressor=GMSACompressor(device="cpu"),
                                           base_retriever=store.as_retriever(search_kwargs={"k": 4}))
reply = build_chain(retriever, ChatGMSA(device="cpu", max_tokens=48)).invoke("What does GMSA compress?")
print(f"langchain: {reply!r}")
assert reply.strip()
capital = {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Berlin"]}},
           "required": ["city"]}
parsed = ChatGMSA(device="cpu", max_tokens=24).with_structured_output(capital).invoke(
    "Paris is the capital of France.\nWhich city is the capital of France?")
print(f"structured: {parsed!r}")
assert parsed["city"] in {"Paris", "Berlin"}

from llama_index.core import Document, VectorStoreIndex  # noqa: E402

from gmsa_integrations.llama_index import GMSALLM, MiniLMEmbedding, gmsa_query_engine  # noqa: E402

nodes = [Document(text=d.page_content, metadata=d.metadata) for d in passages(DEFAULT_DOCUMENTS)]
index = VectorStoreIndex.from_documents(nodes, embed_model=MiniLMEmbedding())
engine = gmsa_query_engine(index.as_retriever(similarity_top_k=4), llm=GMSALLM(device="cpu", max_new_tokens=48))
response = engine.query("What does GMSA compress?")
print(f"llama-index: {str(response)!r}")
assert str(response).strip()
print("smoke test passed")
