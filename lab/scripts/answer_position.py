"""Where in its gold document the answer sits, and which readers find it there.

Reads `gmsa-eval qa` results (no generation): every question is placed by where its earliest reference answer
starts in the gold document it read, as a share of that document's tokens (quarters by default; questions whose
gold document holds no reference verbatim are counted apart), and each run's accuracy, EM and F1 are given per
part with their standard errors. A reader of the whole text should find answers anywhere; one that keeps each
document's first quarter (truncated@4) only in the first part. Writes answer_position.json and a plot.

    python lab/scripts/answer_position.py --data ../shared/data/qa/nq_dev.jsonl --documents 5 \\
        --runs results/qa300-gmsa/result.json:gmsa@4 results/budget4/result.json:truncated@4 \\
        --out results/answer-position
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from transformers import AutoTokenizer

from gmsa.backbone.loading import resolve_base_path
from gmsa.config import EMBEDDED_BASE
from gmsa.data import QAExample, keep_documents, read_qa
from gmsa.errors import GMSAError
from gmsa.evaluation.answer_location import locate_answer
from gmsa.evaluation.compare import mean_and_se, question_key, read_run
from gmsa.evaluation.qa import METRICS

ELSEWHERE = "no verbatim answer in a gold document"


def part_names(parts: int) -> list[str]:
    return [f"{100 * i // parts}-{100 * (i + 1) // parts}%" for i in range(parts)] + [ELSEWHERE]


def place(tokenizer, example: QAExample, documents: int, parts: int) -> str:
    """The part of its gold document where the question's answer starts, or ELSEWHERE."""
    located = locate_answer(tokenizer, example, keep_documents(example, documents))
    if located is None:
        return ELSEWHERE
    return part_names(parts)[min(parts - 1, parts * located.first_token // located.document_tokens)]


def summary(values: list[float]) -> dict:
    """{"mean", "se"} of a part's scores; an empty part (no question starts there) is 0 ± 0."""
    mean, se = mean_and_se(values) if values else (0.0, 0.0)
    return {"mean": mean, "se": se}


def by_position(places: dict[str, str], runs: list[tuple[str, dict[str, dict]]], parts: int) -> dict:
    """{"questions": {part: n}, "runs": {label: {part: {metric: {mean, se}}}}} over the questions every run
    answered."""
    shared = [q for q in places if all(q in rows for _, rows in runs)]
    if not shared:
        raise ValueError("the runs share no question with --data: evaluate them on that file")
    members = {name: [q for q in shared if places[q] == name] for name in part_names(parts)}
    if not members[ELSEWHERE]:
        del members[ELSEWHERE]
    return {"questions": {name: len(qs) for name, qs in members.items()},
            "runs": {label: {name: {m: summary([rows[q][m] for q in qs]) for m in METRICS}
                             for name, qs in members.items()} for label, rows in runs}}


def plot(result: dict, path: Path, metric: str = "accuracy") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["questions"])
    width = 0.8 / len(result["runs"])
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for i, (label, parts) in enumerate(result["runs"].items()):
        xs = [j + (i - (len(result["runs"]) - 1) / 2) * width for j in range(len(names))]
        ax.bar(xs, [parts[n][metric]["mean"] for n in names], width, yerr=[parts[n][metric]["se"] for n in names],
               capsize=3, label=label)
    ax.set_xticks(range(len(names)), [f"{n}\n({result['questions'][n]} questions)" for n in names], fontsize=8)
    ax.set_xlabel("where the answer starts in the gold document (share of its tokens)")
    ax.set_ylabel(f"{metric} (± se)")
    ax.set_title(f"{metric.capitalize()} by where the answer sits")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="the QA file the runs answered")
    parser.add_argument("--documents", type=int, default=5, help="documents per question, as the runs read them")
    parser.add_argument("--runs", nargs="+", required=True, help="result.json[:SYSTEM] of gmsa-eval qa runs")
    parser.add_argument("--parts", type=int, default=4, help="how many equal parts of the gold document")
    parser.add_argument("--base-model", default=EMBEDDED_BASE, help="whose tokenizer counts the tokens")
    parser.add_argument("--out", type=Path, default=Path("results/answer-position"))
    args = parser.parse_args()
    if args.parts < 1:
        parser.error(f"--parts {args.parts}: give at least 1")
    try:
        runs = []
        for spec in args.runs:
            result, name, rows = read_run(spec)
            if result.get("documents") != args.documents or result.get("rerank"):
                parser.error(f"{spec}: read {result.get('documents')} documents (rerank {result.get('rerank')}); "
                             f"this places answers in the first {args.documents} in order, without --rerank")
            runs.append((f"{result.get('label') or result.get('checkpoint')}: {name}", rows))
        examples = read_qa(args.data)
        try:
            tokenizer = AutoTokenizer.from_pretrained(resolve_base_path(args.base_model))  # no weights needed
        except OSError as error:
            raise GMSAError(f"--base-model {args.base_model!r}: no tokenizer there ({error}); pass a local model "
                            f"folder or {EMBEDDED_BASE!r}") from error
        places = {question_key(e.where): place(tokenizer, e, args.documents, args.parts) for e in examples}
        result = by_position(places, runs, args.parts)
    except (GMSAError, ValueError) as error:
        parser.exit(2, f"answer_position.py: error: {error}\n")
    result.update({"data": str(args.data), "documents": args.documents, "parts": args.parts})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "answer_position.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out / "answer_position.png")
    names = list(result["questions"])
    print("| run | " + " | ".join(f"{n} ({result['questions'][n]} q)" for n in names) + " |")
    print("|---|" + "---:|" * len(names))
    for label, parts in result["runs"].items():
        cells = [f"{parts[n]['accuracy']['mean']:.2f} ± {parts[n]['accuracy']['se']:.2f}" for n in names]
        print(f"| {label} | " + " | ".join(cells) + " |")
    print(f"(accuracy ± se per part; EM and F1 too in {args.out}/answer_position.json)")


if __name__ == "__main__":
    main()
