"""Where do the answers come from? Each answer of gmsa-eval QA runs sorted by the document it quotes.

An answer is a quote of a document when it occurs in it from a word start to a word end, in any case
and spacing (`gmsa.decode.extractive.is_quote`, the rule of extractive decoding). Each answer falls in one
bin: a quote of a gold document, a quote of another (distractor) document only, or a quote of none
(a paraphrase, or a name the decoder made up). Right and wrong answers (accuracy) are counted apart.

Greedy extractive decoding leaves every answer that already is a whole quote as it was, so only the
"none" answers can change: each run's EM / F1 / accuracy with extractive decoding lies between its
score less what its "none" answers score and its score plus what they miss (printed as bounds).

Each run's scores are also split by where the gold document stands among those read: last (next to the
question) or earlier, since `keep_documents` leaves it last in most NQ questions and a decoder may learn that.

    python lab/scripts/answer_sources.py --documents 5 \\
        --runs "GMSA rate 4"=benchmarks/results/eval-default/qa300-gmsa/result.json \\
               "uncompressed + KEFT"=benchmarks/results/eval-default/qa300-baseline/result.json \\
        --out lab/results/extractive/answer-sources
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gmsa.data import QAExample, keep_documents, read_qa
from gmsa.decode.extractive import is_quote
from gmsa.errors import GMSAError
from gmsa.evaluation.compare import read_run

BINS = ("gold", "distractor", "none")


def source_of(answer: str, example: QAExample, documents: int) -> str:
    kept = keep_documents(example, documents)
    gold = {example.documents[i] for i in example.gold}
    if is_quote(answer, [d for d in kept if d in gold]):
        return "gold"
    return "distractor" if is_quote(answer, [d for d in kept if d not in gold]) else "none"


def count(answers: list[str], scores: dict[str, list[float]], examples: list[QAExample], documents: int) -> dict:
    table: dict = {outcome: dict.fromkeys(BINS, 0) for outcome in ("right", "wrong")}
    sources = [source_of(answer, example, documents) for answer, example in zip(answers, examples)]
    for where, correct in zip(sources, scores["accuracy"]):
        table["right" if correct else "wrong"][where] += 1
    table["extractive_bounds"] = extractive_bounds(sources, scores)
    table["by_gold_position"] = by_gold_position(scores, examples, documents)
    return table


def by_gold_position(scores: dict[str, list[float]], examples: list[QAExample], documents: int) -> dict:
    """Questions, EM, F1 and accuracy over those whose last document read is a gold one, and over the rest."""
    last = [keep_documents(e, documents)[-1] in {e.documents[i] for i in e.gold} for e in examples]
    groups = {}
    for name, wanted in (("gold last", True), ("gold earlier", False)):
        picked = [i for i, flag in enumerate(last) if flag == wanted]
        means = {m: sum(scores[m][i] for i in picked) / max(len(picked), 1) for m in ("em", "f1", "accuracy")}
        groups[name] = {"questions": len(picked), **means}
    return groups


def extractive_bounds(sources: list[str], scores: dict[str, list[float]]) -> dict[str, list[float]]:
    """[low, high] of each metric if the answers that quote no document were decoded again as quotes."""
    bounds = {}
    for metric in ("em", "f1", "accuracy"):
        values, count = scores[metric], len(scores[metric])
        mean = sum(values) / count
        free = [v for v, where in zip(values, sources) if where == "none"]
        bounds[metric] = [mean - sum(free) / count, mean + sum(1 - v for v in free) / count]
    return bounds


def load_answers(spec: str) -> tuple[list[str], dict[str, list[float]], list[QAExample]]:
    """"result.json[:SYSTEM]" -> its answers, their accuracy, and the questions they answer (read again from
    the data file the run names, which must be the first N questions of one file, as gmsa-eval's --limit gives)."""
    result, name, _ = read_run(spec)
    path = spec.removesuffix(f":{name}")
    where = result["per_question"]["where"]
    files = {w.rsplit(":", 1)[0] for w in where}
    if len(files) != 1:
        raise GMSAError(f"{path}: its questions come from {len(files)} files, not one")
    examples = read_qa(files.pop(), limit=len(where))
    if [e.where for e in examples] != where:
        raise GMSAError(f"{path}: its questions are not the first {len(where)} of their file")
    scores = result["per_question"][name]
    return scores["answer"], {m: scores[m] for m in ("em", "f1", "accuracy")}, examples


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(result["runs"])
    fig, ax = plt.subplots(figsize=(8, 0.6 * len(labels) + 1.8))
    colours = {"gold": "tab:green", "distractor": "tab:orange", "none": "tab:red"}
    for y, label in enumerate(labels):
        left = 0
        for outcome, alpha in (("right", 1.0), ("wrong", 0.45)):
            for where in BINS:
                width = result["runs"][label][outcome][where]
                ax.barh(y, width, left=left, color=colours[where], alpha=alpha,
                        label=f"{outcome}: quotes {where}" if y == 0 else None)
                left += width
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"answers ({result['questions']} questions, {result['documents']} documents)")
    ax.set_title("What each answer quotes: a gold document, a distractor, or no document", fontsize=9)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, metavar="LABEL=RESULT[:SYSTEM]",
                        help="labelled gmsa-eval qa result.json files (name the system where a file has several)")
    parser.add_argument("--documents", type=int, required=True, help="documents per question, as the runs had")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    result: dict = {"documents": args.documents, "runs": {}}
    for spec in args.runs:
        label, _, run_spec = spec.partition("=")
        if not run_spec:
            parser.error(f"--runs {spec!r}: expected LABEL=RESULT[:SYSTEM], e.g. GMSA=results/qa/result.json")
        try:
            answers, scores, examples = load_answers(run_spec)
        except GMSAError as error:
            parser.exit(2, f"answer_sources.py: error: {error}\n")
        result["questions"] = len(examples)
        result["runs"][label] = count(answers, scores, examples, args.documents)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "answer_sources.json").write_text(json.dumps(result, indent=2))
    plot(result, args.out / "answer_sources.png")
    print(f"{'run':<32} | {'right: gold / distractor / none':<31} | {'wrong: gold / distractor / none':<31} | "
          "extractive EM / F1 would lie in")
    for label, table in result["runs"].items():
        right, wrong = (" / ".join(f"{table[o][b]:3d}" for b in BINS) for o in ("right", "wrong"))
        em, f1 = (table["extractive_bounds"][m] for m in ("em", "f1"))
        print(f"{label:<32} | {right:<31} | {wrong:<31} | [{em[0]:.3f}, {em[1]:.3f}] / [{f1[0]:.3f}, {f1[1]:.3f}]")
    print(f"\n{'run':<32} | {'gold last: n / EM / F1':<24} | gold earlier: n / EM / F1")
    for label, table in result["runs"].items():
        cells = [f"{g['questions']:3d} / {g['em']:.3f} / {g['f1']:.3f}" for g in table["by_gold_position"].values()]
        print(f"{label:<32} | {cells[0]:<24} | {cells[1]}")
    print(f"wrote {args.out}/answer_sources.json and answer_sources.png")


if __name__ == "__main__":
    main()
