"""GMSA inside LangChain and LlamaIndex pipelines, measured side by side in one run.

The documents of the first N nq_dev questions go into one vector store (all-MiniLM-L6-v2). For
every question and framework it runs, on the same retrieved documents:
  - the GMSA pipeline (LangChain: ContextualCompressionRetriever + GMSACompressor + stuff chain
    + ChatGMSA; LlamaIndex: gmsa_query_engine),
  - the GMSA engine called directly (`GMSA.answer`) on the documents that pipeline retrieved,
  - the same pipeline with an ordinary uncompressed local LLM over the same base model
    (LangChain: ChatHuggingFace over a transformers pipeline; LlamaIndex: HuggingFaceLLM),
and reports EM of each, how often the pipeline's answer equals the engine's, and the time.

    python benchmarks/integrations.py --questions 20 --top-k 20 --rate 8 --out results/integrations
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from tqdm import tqdm

from gmsa.backbone.loading import resolve_base_path
from gmsa.cli.arguments import positive_int
from gmsa.config import EMBEDDED_BASE, GenerationSettings
from gmsa.data import read_qa
from gmsa.evaluation.metrics import exact_match

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "qa" / "nq_dev.jsonl"
PENALTY = GenerationSettings().repetition_penalty  # the plain pipelines generate as the GMSA decoder does


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def plain_base(max_new_tokens: int):
    """The base model through transformers' own text-generation pipeline: an ordinary local LLM."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline

    path = resolve_base_path(EMBEDDED_BASE)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    generator = pipeline("text-generation", model=model, tokenizer=tokenizer, max_new_tokens=max_new_tokens,
                         do_sample=False, repetition_penalty=PENALTY, return_full_text=False)
    return path, model, tokenizer, generator


def langchain_pipelines(args, texts, base):
    from langchain_classic.chains.combine_documents import create_stuff_documents_chain
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_core.documents import Document
    from langchain_core.vectorstores import InMemoryVectorStore
    from langchain_huggingface import ChatHuggingFace, HuggingFacePipeline

    from gmsa_integrations.langchain import ChatGMSA, GMSACompressor, MiniLMEmbeddings, gmsa_qa_prompt
    from gmsa_integrations.markup import unmark

    store = InMemoryVectorStore(MiniLMEmbeddings())
    store.add_documents([Document(t) for t in texts])
    retriever = store.as_retriever(search_kwargs={"k": args.top_k})
    compressing = ContextualCompressionRetriever(base_compressor=GMSACompressor(rate=args.rate, device=args.device),
                                                 base_retriever=retriever)
    gmsa_chain = create_stuff_documents_chain(ChatGMSA(device=args.device, max_tokens=args.max_new_tokens),
                                              gmsa_qa_prompt(), document_separator="\n")
    path, _, _, generator = base
    plain_llm = ChatHuggingFace(llm=HuggingFacePipeline(pipeline=generator, model_id=path))
    plain_chain = create_stuff_documents_chain(plain_llm, gmsa_qa_prompt(), document_separator="\n")

    def gmsa(question):
        documents = compressing.invoke(question)
        answer = gmsa_chain.invoke({"context": documents, "question": question})
        return answer, [unmark(d.page_content) for d in documents]

    def plain(question):
        return plain_chain.invoke({"context": retriever.invoke(question), "question": question}).strip()

    return gmsa, plain


def llama_index_pipelines(args, texts, base):
    from llama_index.core import PromptTemplate, VectorStoreIndex
    from llama_index.core.query_engine import RetrieverQueryEngine
    from llama_index.core.schema import MetadataMode, TextNode
    from llama_index.llms.huggingface import HuggingFaceLLM

    from gmsa.config import PromptFormat
    from gmsa_integrations.llama_index import GMSALLM, MiniLMEmbedding, gmsa_query_engine
    from gmsa_integrations.markup import unmark

    index = VectorStoreIndex([TextNode(text=t) for t in texts], embed_model=MiniLMEmbedding())
    retriever = index.as_retriever(similarity_top_k=args.top_k)
    gmsa_engine = gmsa_query_engine(retriever, llm=GMSALLM(device=args.device, max_new_tokens=args.max_new_tokens),
                                    rate=args.rate)
    _, model, tokenizer, _ = base
    plain_llm = HuggingFaceLLM(model=model, tokenizer=tokenizer, max_new_tokens=args.max_new_tokens,
                               generate_kwargs={"do_sample": False, "repetition_penalty": PENALTY},
                               is_chat_model=True, context_window=8192)
    template = PromptTemplate("{context_str}\n" + PromptFormat().question_template.replace("{question}", "{query_str}"))
    plain_engine = RetrieverQueryEngine.from_args(retriever, llm=plain_llm, text_qa_template=template,
                                                  response_mode="compact")

    def gmsa(question):
        response = gmsa_engine.query(question)
        return str(response).strip(), [unmark(n.node.get_content(metadata_mode=MetadataMode.NONE))
                                       for n in response.source_nodes]

    def plain(question):
        return str(plain_engine.query(question)).strip()

    return gmsa, plain


def run(args: argparse.Namespace) -> dict:
    from gmsa_integrations.cache import default_cache
    from gmsa_integrations.runtime import GMSARuntime

    examples = read_qa(args.data, limit=args.questions)
    texts = list(dict.fromkeys(d for e in examples for d in e.documents))
    engine = GMSARuntime(device=args.device).model
    cache = default_cache()
    base = plain_base(args.max_new_tokens)
    frameworks = {"langchain": langchain_pipelines(args, texts, base),
                  "llama_index": llama_index_pipelines(args, texts, base)}
    rows = []
    for framework, (gmsa, plain) in frameworks.items():
        gmsa(examples[0].question), plain(examples[0].question)  # warm-up: lazy loading is not timed
        for example in tqdm(examples, desc=framework):
            cache.clear()  # uncached: compression is part of the time
            (answer, documents), gmsa_s = timed(lambda: gmsa(example.question))
            _, cached_s = timed(lambda: gmsa(example.question))  # the same documents again, from the cache
            direct = engine.answer(example.question, documents, args.rate, max_new_tokens=args.max_new_tokens).text
            plain_answer, plain_s = timed(lambda: plain(example.question))
            rows.append({"framework": framework, "question": example.question, "references": example.answers,
                         "gmsa": answer, "engine": direct, "uncompressed": plain_answer,
                         "gmsa_s": gmsa_s, "gmsa_cached_s": cached_s, "uncompressed_s": plain_s,
                         "documents": len(documents),
                         "gmsa_answer_tokens": len(engine.tokenize_contexts([answer])[0]),
                         "uncompressed_answer_tokens": len(engine.tokenize_contexts([plain_answer])[0])})
    summary = {}
    for framework in frameworks:
        mine = [r for r in rows if r["framework"] == framework]
        summary[framework] = {
            "em_pipeline": statistics.fmean(exact_match(r["gmsa"], r["references"]) for r in mine),
            "em_engine": statistics.fmean(exact_match(r["engine"], r["references"]) for r in mine),
            "em_uncompressed": statistics.fmean(exact_match(r["uncompressed"], r["references"]) for r in mine),
            "same_answer_as_engine": statistics.fmean(r["gmsa"] == r["engine"] for r in mine),
            "gmsa_s": statistics.fmean(r["gmsa_s"] for r in mine),
            "gmsa_cached_s": statistics.fmean(r["gmsa_cached_s"] for r in mine),
            "uncompressed_s": statistics.fmean(r["uncompressed_s"] for r in mine),
            "gmsa_answer_tokens": statistics.fmean(r["gmsa_answer_tokens"] for r in mine),
            "uncompressed_answer_tokens": statistics.fmean(r["uncompressed_answer_tokens"] for r in mine),
        }
        mean = summary[framework]
        mean["speedup"] = mean["uncompressed_s"] / mean["gmsa_s"]
        mean["speedup_cached"] = mean["uncompressed_s"] / mean["gmsa_cached_s"]
    return {"machine": {"platform": platform.platform(), "threads": torch.get_num_threads(),
                        "device": str(engine.device)},
            "questions": len(examples), "indexed_documents": len(texts), "top_k": args.top_k, "rate": args.rate,
            "max_new_tokens": args.max_new_tokens, "summary": summary, "rows": rows}


def report(result: dict) -> str:
    lines = [f"{result['questions']} nq_dev questions, {result['indexed_documents']} documents indexed, "
             f"top-{result['top_k']} retrieved, GMSA rate {result['rate']}, device {result['machine']['device']}",
             "framework   | EM pipeline | EM engine | same answer | EM uncompressed | GMSA s/q | uncompressed s/q "
             "| speed-up | cached GMSA s/q (speed-up) | answer tokens GMSA / uncompressed"]
    for framework, s in result["summary"].items():
        lines.append(f"{framework:<11} | {s['em_pipeline']:11.2f} | {s['em_engine']:9.2f} | "
                     f"{100 * s['same_answer_as_engine']:10.0f}% | {s['em_uncompressed']:15.2f} | {s['gmsa_s']:8.2f} | "
                     f"{s['uncompressed_s']:16.2f} | {s['speedup']:7.2f}x | "
                     f"{s['gmsa_cached_s']:.2f} ({s['speedup_cached']:.2f}x) | "
                     f"{s['gmsa_answer_tokens']:.1f} / {s['uncompressed_answer_tokens']:.1f}")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["summary"])
    s = result["summary"]
    fig, ax = plt.subplots(figsize=(7, 4))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], [s[n]["uncompressed_s"] for n in names], 0.4, label="uncompressed local LLM")
    ax.bar([i + 0.2 for i in x], [s[n]["gmsa_s"] for n in names], 0.4,
           label=f"GMSA rate {result['rate']} (compression included)")
    for i, n in enumerate(names):
        ax.annotate(f"{s[n]['speedup']:.2f}x\nEM {s[n]['em_pipeline']:.2f} (engine {s[n]['em_engine']:.2f})",
                    (i + 0.2, s[n]["gmsa_s"]), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(x), names)
    ax.set_ylim(top=1.3 * max(s[n]["uncompressed_s"] for n in names))  # room for the legend
    ax.set_ylabel("seconds per question (retrieval + answer)")
    ax.set_title(f"RAG pipelines, {result['questions']} NQ questions, top-{result['top_k']}, "
                 f"{result['machine']['device']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--questions", type=positive_int, default=20)
    parser.add_argument("--top-k", type=positive_int, default=20)
    parser.add_argument("--rate", type=positive_int, default=8)
    parser.add_argument("--max-new-tokens", type=positive_int, default=32)
    parser.add_argument("--device")
    parser.add_argument("--out", type=Path, default=Path("results/integrations"))
    args = parser.parse_args()
    result = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "integrations.json").write_text(json.dumps(result, indent=2))
    plot(result, args.out / "integrations.png")
    print(report(result))
    print(f"wrote {args.out / 'integrations.json'} and {args.out / 'integrations.png'}")


if __name__ == "__main__":
    main()
