"""`gmsa rag`: a real RAG question answered through GMSA in a standard LangChain chain.

The shipped documentation (or your folder) is split into passages, embedded with all-MiniLM-L6-v2
into an in-memory vector store, retrieved, compressed by GMSACompressor and answered by ChatGMSA;
the same chain without compression answers beside it, so the tokens saved and the time are
measured side by side.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from gmsa.cli.arguments import budget_argument, positive_int
from gmsa.config import BASE_DTYPES
from gmsa.errors import GMSAError

DEFAULT_DOCUMENTS = Path(__file__).resolve().parents[1] / "gmsa" / "examples" / "docs"


def passages(folder: Path, chunk_chars: int = 400) -> list:
    """LangChain Documents of at most `chunk_chars` characters (whole sentences where they fit), each within one
    paragraph of a .md/.txt file, with its source. Short chunks let a budget send the relevant one whole."""
    from langchain_core.documents import Document
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from gmsa.data import TEXT_SUFFIXES, read_text_file, text_files
    from gmsa.errors import DataError

    if not folder.exists():
        raise DataError(str(folder), None, "no such file or folder (give --documents a folder of .md/.txt files)")
    splitter = RecursiveCharacterTextSplitter(chunk_size=chunk_chars, chunk_overlap=0, keep_separator="end",
                                              separators=[". ", "; ", ", ", " "])
    documents = []
    for file in text_files(folder):
        if file.suffix.lower() not in TEXT_SUFFIXES:
            raise DataError(str(file), None, f"gmsa rag reads {'/'.join(TEXT_SUFFIXES)} files (one passage per "
                            "paragraph); for a QA JSONL file use gmsa ask --record")
        blocks = [b.strip() for b in read_text_file(file).split("\n\n")]
        title = blocks[0].lstrip("# ") if blocks and blocks[0].startswith("#") else file.stem
        for block in blocks:
            if block and not block.startswith("#"):
                documents.extend(Document(f"{title}: {chunk.strip()}", metadata={"source": file.name})
                                 for chunk in splitter.split_text(" ".join(block.split())))
    if not documents:
        raise DataError(str(folder), None, "no passages (paragraphs other than '#' headings) to retrieve from")
    return documents


def build_chain(retriever, llm):
    """LCEL: {context, question} | prompt | chat model | text."""
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.runnables import RunnablePassthrough

    from gmsa_integrations.langchain import gmsa_qa_prompt

    def join(documents) -> str:
        return "\n".join(d.page_content for d in documents)

    return {"context": retriever | join, "question": RunnablePassthrough()} | gmsa_qa_prompt() | llm | StrOutputParser()


def timed_stream(chain, question: str) -> tuple[str, float, float]:
    """The chain's answer, the seconds to its first chunk, and to its end."""
    start, first, chunks = time.perf_counter(), None, []
    for chunk in chain.stream(question):
        first = first if first is not None or not chunk else time.perf_counter() - start
        chunks.append(chunk)
    total = time.perf_counter() - start
    return "".join(chunks).strip(), first if first is not None else total, total


def _sent(compressor, retrieved: list, documents: list) -> str:
    """How the passages were sent: tokens as text, soft tokens at which rates, passages left out."""
    total = sum(compressor.runtime.count_tokens([d.page_content for d in retrieved]))
    text = [d for d in documents if d.metadata["gmsa_form"] in ("text", "prefix")]
    soft = [d for d in documents if d.metadata["gmsa_form"] == "soft"]
    rates = ", ".join(str(r) for r in sorted({d.metadata["gmsa_rate"] for d in soft}))
    sent = sum(d.metadata["gmsa_positions"] for d in documents)
    return (f"{total} document tokens -> {sum(d.metadata['gmsa_positions'] for d in text)} as text ({len(text)} "
            f"passages) + {sum(d.metadata['gmsa_soft_tokens'] for d in soft)} soft tokens ({len(soft)} passages"
            f"{', rate ' + rates if rates else ''}), {len(retrieved) - len(documents)} left out; "
            f"{sent} decoder positions, {total - sent} saved")


def run(args: argparse.Namespace) -> int:
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_core.vectorstores import InMemoryVectorStore

    from gmsa_integrations.langchain import ChatGMSA, GMSACompressor, MiniLMEmbeddings

    if not args.question.strip():
        raise GMSAError("--question is empty")
    start = time.perf_counter()
    store = InMemoryVectorStore(MiniLMEmbeddings())
    store.add_documents(passages(args.documents, args.chunk_chars))
    retriever = store.as_retriever(search_kwargs={"k": args.top_k})
    compressor = GMSACompressor(checkpoint=args.checkpoint, device=args.device, dtype=args.dtype,
                                rate=args.rate, budget=args.budget)
    llm = ChatGMSA(checkpoint=args.checkpoint, device=args.device, dtype=args.dtype,
                   max_tokens=args.max_new_tokens)
    compressed = build_chain(ContextualCompressionRetriever(base_compressor=compressor, base_retriever=retriever), llm)
    uncompressed = build_chain(retriever, llm)
    llm.invoke("Hello")  # load the model once, outside the timings
    ready = time.perf_counter() - start

    answer, gmsa_first, gmsa_seconds = timed_stream(compressed, args.question)
    plain_answer, plain_first, plain_seconds = timed_stream(uncompressed, args.question)

    retrieved = retriever.invoke(args.question)
    documents = compressor.compress_documents(retrieved, args.question)
    print(f"question:     {args.question}")
    print(f"answer:       {answer}")
    print(f"uncompressed: {plain_answer}")
    print(f"retrieved:    {len(retrieved)} passages from {args.documents} "
          f"({', '.join(sorted({d.metadata['source'] for d in retrieved}))})")
    print(f"tokens:       {_sent(compressor, retrieved, documents)}")
    print(f"first token:  GMSA chain {gmsa_first:.2f} s vs uncompressed chain {plain_first:.2f} s "
          f"({plain_first / gmsa_first:.2f}x faster; retrieval and compression included, same model and passages)")
    print(f"whole answer: GMSA chain {gmsa_seconds:.2f} s vs uncompressed chain {plain_seconds:.2f} s "
          f"(answers of different lengths take different times)")
    print(f"set-up:       {ready:.1f} s (load model and embedder, index {len(store.store)} passages)")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    """Add `gmsa rag` to the `gmsa` command (entry point group "gmsa.commands"); frameworks load in `run`."""
    parser = commands.add_parser("rag", help="a RAG chain (LangChain, MiniLM vector store) with GMSA vs uncompressed")
    add_arguments(parser)
    parser.set_defaults(run=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--question", required=True)
    parser.add_argument("--documents", type=Path, default=DEFAULT_DOCUMENTS,
                        help="folder of .md/.txt files (default: GMSA's own documentation)")
    parser.add_argument("--chunk-chars", type=positive_int, default=400,
                        help="passages of at most this many characters, split at sentence ends (default 400)")
    parser.add_argument("--top-k", type=positive_int, default=6, help="passages retrieved")
    parser.add_argument("--budget", type=budget_argument, metavar="B", default=None,
                        help="decoder positions the passages may take: a fraction of their tokens, a number, or "
                             "'auto' (the default): the most relevant whole, the rest as soft tokens")
    parser.add_argument("--rate", type=positive_int, help="compress every passage at this one rate instead of a budget")
    parser.add_argument("--checkpoint", help="a GMSA checkpoint folder (default: the bundled default model)")
    parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    parser.add_argument("--dtype", choices=BASE_DTYPES, help="the base model's weights (default: bfloat16 on CUDA, "
                                                             "float32 on the CPU)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=64)
