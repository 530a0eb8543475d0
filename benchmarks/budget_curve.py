"""Quality against the token budget: budgeted GMSA (`budget@F`) and text only at the same budget
(`rerank-text@F`), each paired question by question with a reference (the fine-tuned uncompressed baseline
reading every document), from `gmsa-eval qa` results. Writes budget_curve.json (each system and budget: EM,
F1, document positions per question, the paired differences to the reference with their standard errors)
and budget_curve.png (F1 and EM against the budget, one line per series, the reference dashed).

    for F in 0.1 0.25 0.5 1.0; do S="$S budget@$F rerank-text@$F"; done
    gmsa-eval qa --label "bundled default" --systems $S ... --out r/mixed          (the mixed reader)
    gmsa-eval qa --checkpoint runs/baseline-keft-mixed/final --label baseline --systems uncompressed $S ... --out r/base
    python benchmarks/budget_curve.py --reference r/base/result.json:uncompressed \\
        --results r/mixed/result.json r/base/result.json --out benchmarks/results/budget-curve
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gmsa.errors import GMSAError
from gmsa.evaluation.compare import load_run, paired_curve, read_run
from gmsa.evaluation.qa import BUDGETED, System
from gmsa.evaluation.report import read_result


def series_of(specs: list[str]) -> dict[str, dict[float, tuple[str, dict, float]]]:
    """Every budgeted system of every "result.json[:SYSTEM]" (only SYSTEM where named): {"label: kind":
    {fraction: (name, rows, positions)}}; a later file's system replaces an earlier one's."""
    series: dict[str, dict[float, tuple[str, dict, float]]] = {}
    for spec in specs:
        path, _, only = spec.rpartition(":")
        if not path or "@" not in only:  # no ":SYSTEM": the whole spec is the path
            path, only = spec, ""
        path = Path(path)
        result = read_result(path)
        for name, scores in result.get("systems", {}).items():
            system = System.parse(name)
            if system.kind not in BUDGETED or only and name != only:
                continue
            _, _, rows = read_run(f"{path}:{name}")
            label = f"{result.get('label') or result.get('checkpoint')}: {system.kind}"
            label += "+extractive" if system.extractive else ""
            series.setdefault(label, {})[system.fraction] = (name, rows, scores.get("document_positions_per_question"))
    if not series:
        raise GMSAError(f"no budget@F or rerank-text@F system in {', '.join(specs)}")
    return series


def budget_curve(reference: tuple[str, dict], series: dict[str, dict[float, tuple[str, dict, float]]]) -> dict:
    """Each run's means, document positions per question and paired differences to the reference, on the
    questions all of them share."""
    result = paired_curve(reference, {name: {f: (system, rows) for f, (system, rows, _) in points.items()}
                                      for name, points in series.items()}, "budget")
    for entries, points in zip(result["series"], series.values()):
        for run in entries["runs"]:
            run["system"] = run.pop("label")
            run["document_positions_per_question"] = points[run["budget"]][2]
    return result


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharey=True)
    budgets = sorted({run["budget"] for series in result["series"] for run in series["runs"]})
    for ax, metric in zip(axes, ("f1", "em")):
        for series in result["series"]:
            runs = series["runs"]
            ax.errorbar([run["budget"] for run in runs], [run[metric] for run in runs], marker="o", capsize=4,
                        yerr=[run[f"{metric}_se"] for run in runs], label=f"{series['label']} (± paired se)")
        ax.axhline(result["reference"][metric], color="black", linestyle="--", label=result["reference"]["label"])
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(budgets, [f"{b:g}" for b in budgets])
        ax.set_xlabel("budget (decoder positions / the documents' tokens)")
        ax.set_title(metric.upper())
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8)
    fig.suptitle(f"QA against the token budget ({result['questions']} questions)")
    fig.tight_layout(rect=(0, 0.05 + 0.05 * ((len(labels) + 1) // 2), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="result.json[:SYSTEM] every run is paired with")
    parser.add_argument("--results", nargs="+", required=True, metavar="RESULT[:SYSTEM]",
                        help="gmsa-eval qa results holding budget@F / rerank-text@F systems (only SYSTEM if named)")
    parser.add_argument("--out", type=Path, required=True, help="folder for budget_curve.json and budget_curve.png")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} exists and is not a folder")
    try:
        result = budget_curve(load_run(args.reference), series_of(args.results))
    except (GMSAError, ValueError) as error:
        print(f"budget_curve.py: error: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "budget_curve.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out / "budget_curve.png")
    for series in result["series"]:
        for run in series["runs"]:
            print(f"{series['label']}, budget {run['budget']:g} ({run['document_positions_per_question'] or 0:.0f} "
                  f"positions): F1 {run['f1']:.3f} ({run['f1_difference']:+.3f} ± {run['f1_se']:.3f}), "
                  f"EM {run['em']:.3f} ({run['em_difference']:+.3f} ± {run['em_se']:.3f})")
    print(f"reference {result['reference']['label']}: F1 {result['reference']['f1']:.3f}, "
          f"EM {result['reference']['em']:.3f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
