"""Half precision against fp32: the same questions answered with the base model in each dtype, side by side.

For each dtype the bundled default (or --checkpoint) is loaded with the base model in that dtype (GMSA's
own trained weights stay fp32, see `gmsa.compress.align` / `gmsa.backbone.adapters`), the first N questions
are answered with `gmsa-eval qa`'s code at one system, and each answer is compared with the fp32 answer to
the same question. Writes precision.json (per dtype: EM, F1, seconds per question, answers identical to
fp32, paired EM/F1 difference to fp32 with its standard error) and precision.png.

    python benchmarks/precision.py --data ../shared/data/qa/nq_dev.jsonl --limit 50 --documents 5 \\
        --dtypes float32 bfloat16 float16 --out benchmarks/results/precision
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gmsa.cli.arguments import positive_int
from gmsa.config import BASE_DTYPES
from gmsa.errors import GMSAError


def measure(args: argparse.Namespace) -> dict:
    from gmsa.data import read_qa
    from gmsa.evaluation.compare import paired_difference
    from gmsa.evaluation.qa import METRICS, System, predict
    from gmsa.model import GMSA

    system = System.parse(args.system)
    examples = read_qa(args.data, limit=args.limit)
    result: dict = {"source": str(args.data), "questions": len(examples), "documents": args.documents,
                    "system": system.name, "checkpoint": args.checkpoint or "bundled default", "dtypes": {}}
    reference = None
    for dtype in args.dtypes:
        model = GMSA.from_pretrained(args.checkpoint, device=args.device, dtype=dtype)
        answers, seconds, _ = predict(model, system, examples, args.documents, args.batch_size, args.max_new_tokens)
        scores = {name: [metric(a, e.answers) for a, e in zip(answers, examples)] for name, metric in METRICS.items()}
        entry = {"device": str(model.device), "seconds_per_question": seconds, "answers": answers,
                 **{name: sum(values) / len(values) for name, values in scores.items()}}
        if reference is None:
            reference = (dtype, answers, scores)
        else:
            entry["reference"] = reference[0]
            entry["identical_answers"] = sum(a == b for a, b in zip(answers, reference[1]))
            for name in ("em", "f1"):
                entry[f"{name}_difference"], entry[f"{name}_se"] = paired_difference(reference[2][name], scores[name])
        result["dtypes"][dtype] = entry
        del model
    return result


def report(result: dict) -> str:
    lines = [f"{result['questions']} questions of {result['source']}, {result['documents']} documents, "
             f"{result['system']}, {result['checkpoint']}",
             "| base dtype | EM | F1 | s / question (x the first) | answers identical to the first "
             "| EM, F1 minus the first |",
             "|---|---:|---:|---:|---:|---|"]
    first = None
    for dtype, entry in result["dtypes"].items():
        first = first or entry["seconds_per_question"]
        same = f"{entry['identical_answers']} / {result['questions']}" if "identical_answers" in entry else "-"
        diff = (f"{entry['em_difference']:+.3f} ± {entry['em_se']:.3f}, {entry['f1_difference']:+.3f} ± "
                f"{entry['f1_se']:.3f}" if "em_difference" in entry else "-")
        lines.append(f"| {dtype} | {entry['em']:.3f} | {entry['f1']:.3f} | {entry['seconds_per_question']:.2f} "
                     f"({entry['seconds_per_question'] / first:.2f}x) | {same} | {diff} |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["dtypes"])
    entries = [result["dtypes"][n] for n in names]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    axes[0].bar(names, [e["f1"] for e in entries], color="tab:blue")
    axes[0].set_title("F1")
    axes[1].bar(names, [e.get("identical_answers", result["questions"]) for e in entries], color="tab:green")
    axes[1].axhline(result["questions"], color="grey", linestyle="--", linewidth=1)
    axes[1].set_title(f"answers identical to {names[0]} (of {result['questions']})")
    axes[2].bar(names, [e["seconds_per_question"] for e in entries], color="tab:orange")
    axes[2].set_title(f"seconds / question ({entries[0]['device']})")
    fig.suptitle(f"Base model dtype: {result['system']}, {result['questions']} questions, "
                 f"{result['documents']} documents")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="QA JSONL")
    parser.add_argument("--limit", type=positive_int, default=50, help="first N questions")
    parser.add_argument("--documents", type=positive_int, default=5, help="documents per question (gold kept)")
    parser.add_argument("--system", default="gmsa@4", help="a gmsa-eval qa system (default gmsa@4)")
    parser.add_argument("--dtypes", nargs="+", choices=BASE_DTYPES, default=list(BASE_DTYPES),
                        help="the first is the reference the others are compared with")
    parser.add_argument("--checkpoint", help="default: the bundled default")
    parser.add_argument("--device", help="default: cuda when available")
    parser.add_argument("--batch-size", type=positive_int, default=4)
    parser.add_argument("--max-new-tokens", type=positive_int, default=32)
    parser.add_argument("--out", type=Path, required=True, help="folder for precision.json and precision.png")
    args = parser.parse_args(argv)
    if args.limit < 1 or args.documents < 1 or args.batch_size < 1:
        parser.error("--limit, --documents and --batch-size must be >= 1")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} exists and is not a folder")
    try:
        result = measure(args)
    except GMSAError as error:
        print(f"precision.py: error: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "precision.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out / "precision.png")
    print(report(result))
    print(f"wrote {args.out / 'precision.json'} and {args.out / 'precision.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
