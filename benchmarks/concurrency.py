"""Throughput under load: N requests to one ChatGMSA sent one after another, then all at once, side by side.

Each request is a nq_dev question over its documents, sent by a LangChain chain (GMSACompressor within a budget,
then gmsa_qa_prompt and ChatGMSA), the documents' soft tokens already in the cache (compress at ingest) so the
decoder is what is measured. Modes, in one run on one loaded model:
  - sequential: `chain.invoke` for each request in turn;
  - threads:    the N invokes from N threads at once (a server's worker threads);
  - abatch:     `chain.abatch(inputs)` on an asyncio loop.
Concurrent requests are gathered into batched generate calls (`gmsa.decode.batching`). Reports requests/s,
p50/p95 latency (submission to answer) per mode, how many answers equal the sequential ones, and the batch sizes.

    python benchmarks/concurrency.py --requests 16 --out benchmarks/results/concurrency
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from gmsa.cli.arguments import budget_argument, positive_int
from gmsa.errors import GMSAError

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "qa" / "nq_dev.jsonl"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(latencies: list[float], wall: float, answers: list[str], reference: list[str] | None) -> dict:
    entry = {"wall_seconds": wall, "requests_per_second": len(latencies) / wall,
             "p50_seconds": percentile(latencies, .5), "p95_seconds": percentile(latencies, .95),
             "latencies": latencies, "answers": answers}
    if reference is not None:
        entry["identical_to_sequential"] = sum(a == b for a, b in zip(answers, reference))
    return entry


def measure(args: argparse.Namespace) -> dict:
    from langchain_classic.chains.combine_documents import create_stuff_documents_chain
    from langchain_core.documents import Document
    from langchain_core.runnables import RunnableLambda

    from gmsa.data import read_qa
    from gmsa_integrations.langchain import ChatGMSA, GMSACompressor, gmsa_qa_prompt
    from gmsa_integrations.runtime import shared_model

    examples = read_qa(args.data, limit=args.requests)
    compressor = GMSACompressor(checkpoint=args.checkpoint, device=args.device, budget=args.budget,
                                relevance=args.relevance)
    llm = ChatGMSA(checkpoint=args.checkpoint, device=args.device, max_tokens=args.max_new_tokens)
    answer_chain = create_stuff_documents_chain(llm, gmsa_qa_prompt(), document_separator="\n")

    def ask(example) -> str:
        documents = compressor.compress_documents([Document(d) for d in example.documents[: args.documents]],
                                                  example.question)
        return answer_chain.invoke({"context": documents, "question": example.question})

    async def aask(example) -> str:
        documents = await compressor.acompress_documents(
            [Document(d) for d in example.documents[: args.documents]], example.question)
        return await answer_chain.ainvoke({"context": documents, "question": example.question})

    for example in examples:  # ingest: every document's soft tokens into the cache, outside the timings
        ask_documents = [Document(d) for d in example.documents[: args.documents]]
        compressor.compress_documents(ask_documents, example.question)
    llm.invoke("Hello")
    batcher = shared_model(args.checkpoint, args.device, None)[2]
    result: dict = {"source": str(args.data), "requests": len(examples), "documents": args.documents,
                    "budget": str(args.budget), "relevance": args.relevance, "max_new_tokens": args.max_new_tokens,
                    "device": str(batcher.model.device), "machine": platform.processor() or platform.machine(),
                    "torch_threads": torch.get_num_threads(), "modes": {}}

    def timed(example) -> tuple[str, float]:
        answer = ask(example)
        return answer, time.perf_counter() - start

    start, latencies, answers = time.perf_counter(), [], []
    for example in examples:
        start = time.perf_counter()
        answer, seconds = timed(example)
        answers.append(answer)
        latencies.append(seconds)
    sequential = answers
    result["modes"]["sequential"] = summary(latencies, sum(latencies), answers, None)

    before = len(batcher.batch_sizes)
    start = time.perf_counter()
    with ThreadPoolExecutor(len(examples)) as pool:
        done = list(pool.map(timed, examples))
    result["modes"]["threads"] = summary([s for _, s in done], time.perf_counter() - start, [a for a, _ in done],
                                         sequential)
    result["modes"]["threads"]["batch_sizes"] = batcher.batch_sizes[before:]

    async def atimed(example) -> tuple[str, float]:
        answer = await aask(example)
        return answer, time.perf_counter() - start

    runnable = RunnableLambda(timed, afunc=atimed)  # abatch runs atimed: the chain's async path
    before = len(batcher.batch_sizes)
    start = time.perf_counter()
    done = asyncio.run(runnable.abatch(examples, config={"max_concurrency": len(examples)}))
    result["modes"]["abatch"] = summary([s for _, s in done], time.perf_counter() - start, [a for a, _ in done],
                                        sequential)
    result["modes"]["abatch"]["batch_sizes"] = batcher.batch_sizes[before:]
    result["prefill"] = prefill_share(args, compressor, examples, batcher.model)
    return result


def prefill_share(args, compressor, examples, model) -> dict:
    """The decoder's work on the same prompts, one by one and as one batch: whole answers, and prefill alone
    (one new token). Prefill is compute-bound, so on a CPU batching saves only the decode steps: this bounds
    the ratio the modes above can reach."""
    from langchain_core.documents import Document

    from gmsa_integrations.langchain import _role_and_text, gmsa_qa_prompt
    from gmsa_integrations.runtime import GMSARuntime

    runtime = GMSARuntime(args.checkpoint, args.device, None, compressor.runtime.cache)
    chats = []
    for example in examples:
        documents = compressor.compress_documents([Document(d) for d in example.documents[: args.documents]],
                                                  example.question)
        prompt = gmsa_qa_prompt().invoke({"context": "\n".join(d.page_content for d in documents),
                                          "question": example.question})
        chats.append(runtime.conversation([_role_and_text(m) for m in prompt.to_messages()])[0])
    entry = {}
    for name, tokens in (("whole answers", args.max_new_tokens), ("prefill only", 1)):
        start = time.perf_counter()
        for chat in chats:
            model.generate_chat([chat], max_new_tokens=tokens)
        one_by_one = time.perf_counter() - start
        start = time.perf_counter()
        model.generate_chat(chats, max_new_tokens=tokens)
        entry[name] = {"one_by_one_seconds": one_by_one, "batched_seconds": time.perf_counter() - start}
    whole, prefill = entry["whole answers"], entry["prefill only"]
    entry["prefill_share_of_one_by_one"] = prefill["one_by_one_seconds"] / whole["one_by_one_seconds"]
    entry["bound"] = whole["one_by_one_seconds"] / whole["batched_seconds"]
    return entry


def report(result: dict) -> str:
    lines = [f"{result['requests']} requests (nq_dev, {result['documents']} documents, budget {result['budget']}, "
             f"relevance {result.get('relevance', 'minilm')}, "
             f"up to {result['max_new_tokens']} answer tokens), {result['device']}, {result['torch_threads']} threads",
             "| mode | requests/s (x sequential) | p50 s | p95 s | answers = sequential | batch sizes |",
             "|---|---:|---:|---:|---:|---|"]
    base = result["modes"]["sequential"]["requests_per_second"]
    for mode, entry in result["modes"].items():
        same = entry.get("identical_to_sequential", "-")
        same = same if same == "-" else f"{same} / {result['requests']}"
        lines.append(f"| {mode} | {entry['requests_per_second']:.2f} ({entry['requests_per_second'] / base:.2f}x) "
                     f"| {entry['p50_seconds']:.1f} | {entry['p95_seconds']:.1f} | {same} "
                     f"| {entry.get('batch_sizes', '-')} |")
    prefill = result["prefill"]
    lines.append(f"decoder alone on the same {result['requests']} prompts: one by one "
                 f"{prefill['whole answers']['one_by_one_seconds']:.1f} s, one batch "
                 f"{prefill['whole answers']['batched_seconds']:.1f} s ({prefill['bound']:.2f}x); prefill (1 token) "
                 f"{prefill['prefill only']['one_by_one_seconds']:.1f} s vs "
                 f"{prefill['prefill only']['batched_seconds']:.1f} s = "
                 f"{prefill['prefill_share_of_one_by_one']:.0%} of the one-by-one time")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(result["modes"])
    entries = [result["modes"][m] for m in modes]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].bar(modes, [e["requests_per_second"] for e in entries], color="tab:blue")
    axes[0].set_title("requests / s (higher is better)")
    axes[1].boxplot([e["latencies"] for e in entries], tick_labels=modes, whis=(5, 95))
    axes[1].set_title("latency per request, s (whiskers: p5-p95)")
    fig.suptitle(f"{result['requests']} concurrent vs sequential requests to one ChatGMSA ({result['device']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="QA JSONL (default: nq_dev)")
    parser.add_argument("--requests", type=positive_int, default=16, help="first N questions, one request each")
    parser.add_argument("--documents", type=positive_int, default=5, help="documents per question")
    parser.add_argument("--budget", type=budget_argument, default=0.25, help="GMSACompressor's budget")
    parser.add_argument("--relevance", choices=("minilm", "order"), default="minilm",
                        help="GMSACompressor's relevance: MiniLM per request, or the documents' order (a retriever's "
                             "ranking, no MiniLM call)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=32)
    parser.add_argument("--checkpoint", help="default: the bundled default")
    parser.add_argument("--device", help="default: cuda when available")
    parser.add_argument("--out", type=Path, required=True, help="folder for concurrency.json and concurrency.png")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} exists and is not a folder")
    try:
        result = measure(args)
    except GMSAError as error:
        print(f"concurrency.py: error: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "concurrency.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out / "concurrency.png")
    print(report(result))
    print(f"wrote {args.out / 'concurrency.json'} and {args.out / 'concurrency.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
