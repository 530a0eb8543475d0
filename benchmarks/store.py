"""A corpus compressed at ingest (`gmsa index`): its size, its load time, and a chain that reads it, side by side.

Reads a store built by `gmsa index CORPUS --out STORE` and reports bytes per document token (shards on disk over
the corpus's tokens), the time to open the store (shard headers) and to read soft tokens back. Then SQuAD v1.1
dev questions whose paragraphs are in the corpus are answered by one LangChain chain (MiniLM vector store over
the questions' paragraphs and `--distractors` others, GMSACompressor within a budget, gmsa_qa_prompt, ChatGMSA),
once reading the store and once compressing (empty cache), on the same retrieved paragraphs: texts encoded, EM,
answers identical, seconds per question.

    gmsa index ../shared/data/ae/wiki_paragraphs.jsonl --out runs/wiki.gmsa
    python benchmarks/store.py --store runs/wiki.gmsa --out benchmarks/results/store
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from gmsa.cli.arguments import budget_argument, positive_int
from gmsa.errors import GMSAError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def size_and_load(args: argparse.Namespace, texts: list[str]) -> dict:
    from gmsa.model import GMSA
    from gmsa.store import SoftTokenStore

    start = time.perf_counter()
    store = SoftTokenStore(args.store)
    opened = time.perf_counter() - start
    model = GMSA.from_pretrained(args.checkpoint, device=args.device)
    tokens = sum(map(len, model.tokenize_contexts(texts)))
    sample = random.Random(0).sample(texts, min(200, len(texts)))
    start = time.perf_counter()
    found = [store.get(store.fingerprint, rate, text) for text in sample for rate in store.rates]
    read = (time.perf_counter() - start) / len(found)
    shards = sorted(Path(args.store).glob("shard-*.safetensors"))
    size = sum(p.stat().st_size for p in shards)
    return {"texts": len(texts), "document_tokens": tokens, "text_bytes": sum(len(t.encode()) for t in texts),
            "entries": len(store), "rates": store.rates, "dtype": store.manifest["dtype"], "shards": len(shards),
            "store_bytes": size, "bytes_per_document_token": size / tokens, "open_seconds": opened,
            "read_seconds_per_entry": read, "missing_in_sample": sum(f is None for f in found),
            "fingerprint_matches": store.fingerprint == model.compressor_fingerprint(), "device": str(model.device)}


def chain_runs(args: argparse.Namespace, texts: list[str]) -> dict:
    from langchain_classic.chains.combine_documents import create_stuff_documents_chain
    from langchain_core.documents import Document
    from langchain_core.vectorstores import InMemoryVectorStore

    from gmsa.data import iter_jsonl
    from gmsa.evaluation.metrics import exact_match
    from gmsa_integrations.cache import SoftTokenCache
    from gmsa_integrations.langchain import ChatGMSA, GMSACompressor, MiniLMEmbeddings, gmsa_qa_prompt

    corpus = set(texts)
    squad = [(r["question"], r["answers"], r["documents"][0]["text"])  # the paragraph as the corpus holds it
             for _, r in iter_jsonl(SHARED / "qa" / "squad_v1.1.jsonl")]
    questions = [q for q in squad if q[2] in corpus]
    questions = questions[:: max(1, len(questions) // args.questions)][: args.questions]
    gold = list(dict.fromkeys(q[2] for q in questions))
    others = random.Random(0).sample(sorted(corpus - set(gold)), args.distractors)
    vectors = InMemoryVectorStore(MiniLMEmbeddings())
    vectors.add_documents([Document(t) for t in gold + others])
    retriever = vectors.as_retriever(search_kwargs={"k": args.top_k})
    result: dict = {"questions": len(questions), "retrieved_from": len(gold) + len(others), "top_k": args.top_k,
                    "budget": str(args.budget), "runs": {}}
    for name, store in (("store", args.store), ("compressing", None)):
        cache = SoftTokenCache()
        compressor = GMSACompressor(checkpoint=args.checkpoint, device=args.device, budget=args.budget, store=store,
                                    soft_token_cache=cache)
        llm = ChatGMSA(checkpoint=args.checkpoint, device=args.device, max_tokens=32, store=store,
                       soft_token_cache=cache)
        chain = create_stuff_documents_chain(llm, gmsa_qa_prompt(), document_separator="\n")
        answers, seconds = [], []
        for question, _, _ in questions:
            retrieved = retriever.invoke(question)
            start = time.perf_counter()
            sent = compressor.compress_documents(retrieved, question)
            answers.append(chain.invoke({"context": sent, "question": question}))
            seconds.append(time.perf_counter() - start)
        result["runs"][name] = {
            "texts_encoded": compressor.runtime.encoder_texts + llm.runtime.encoder_texts,
            "em": sum(exact_match(a, q[1]) for a, q in zip(answers, questions)) / len(questions),
            "seconds_per_question": sum(seconds) / len(seconds), "answers": answers}
    store_answers, fresh = result["runs"]["store"]["answers"], result["runs"]["compressing"]["answers"]
    result["identical_answers"] = sum(a == b for a, b in zip(store_answers, fresh))
    return result


def report(result: dict) -> str:
    size, chain = result["store"], result["chain"]
    lines = [f"store: {size['texts']} texts, {size['document_tokens']} tokens, {size['entries']} entries (rates "
             f"{size['rates']}, {size['dtype']}), {size['shards']} shards, {size['store_bytes'] / 2**20:.0f} MiB = "
             f"{size['bytes_per_document_token']:.0f} bytes per document token (the text: "
             f"{size['text_bytes'] / size['document_tokens']:.1f}); opened in {size['open_seconds']:.2f} s, "
             f"{size['read_seconds_per_entry'] * 1e3:.2f} ms per entry read back",
             f"chain: {chain['questions']} SQuAD questions, MiniLM top {chain['top_k']} of {chain['retrieved_from']} "
             f"paragraphs, budget {chain['budget']}",
             "| soft tokens from | texts encoded | EM | s / question |", "|---|---:|---:|---:|"]
    for name, run in chain["runs"].items():
        lines.append(f"| {name} | {run['texts_encoded']} | {run['em']:.3f} | {run['seconds_per_question']:.2f} |")
    lines.append(f"answers identical: {chain['identical_answers']} / {chain['questions']}")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size, runs = result["store"], result["chain"]["runs"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].bar(["text (UTF-8)", f"store ({size['dtype']}, rates {size['rates']})"],
                [size["text_bytes"] / size["document_tokens"], size["bytes_per_document_token"]], color="tab:blue")
    axes[0].set_title("bytes per document token")
    names = list(runs)
    axes[1].bar([f"{n}\n({runs[n]['texts_encoded']} texts encoded)" for n in names],
                [runs[n]["seconds_per_question"] for n in names], color="tab:orange")
    axes[1].set_title(f"seconds / question, {result['chain']['questions']} SQuAD questions ({size['device']})")
    fig.suptitle(f"{size['texts']} paragraphs compressed at ingest")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True, help="a store built by gmsa index")
    parser.add_argument("--corpus", type=Path, default=SHARED / "ae" / "wiki_paragraphs.jsonl",
                        help="the JSONL the store was built from")
    parser.add_argument("--checkpoint", help="the checkpoint the store was built with (default: bundled default)")
    parser.add_argument("--device", help="default: cuda when available")
    parser.add_argument("--questions", type=positive_int, default=30)
    parser.add_argument("--distractors", type=positive_int, default=500, help="other paragraphs to retrieve from")
    parser.add_argument("--top-k", type=positive_int, default=5)
    parser.add_argument("--budget", type=budget_argument, default=0.25)
    parser.add_argument("--out", type=Path, required=True, help="folder for store.json and store.png")
    args = parser.parse_args(argv)
    try:
        from gmsa.data import read_documents

        texts = list(dict.fromkeys(t for t in read_documents(args.corpus) if t.strip()))
        result = {"store": size_and_load(args, texts), "chain": chain_runs(args, texts)}
    except GMSAError as error:
        print(f"store.py: error: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "store.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out / "store.png")
    print(report(result))
    print(f"wrote {args.out / 'store.json'} and {args.out / 'store.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
