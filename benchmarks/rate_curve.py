"""Where the gap to the uncompressed prompt comes from: GMSA's QA scores against the compression rate.

Reads `gmsa-eval qa` results (no model runs): a reference (typically the fine-tuned uncompressed baseline)
and one GMSA run per rate, and pairs every run with the reference question by question, as
`gmsa-eval compare` does. Writes rate_curve.json (each run's means and paired differences with their
standard errors) and rate_curve.png (F1 and EM against the rate, the reference as a line).

    python benchmarks/rate_curve.py --reference results/qa300-baseline/result.json \\
        --runs 1=results/qa300-rate1/result.json 2=results/qa300-rate2/result.json 4=results/qa300-rate4/result.json \\
        --out results/rate-curve
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gmsa.errors import GMSAError
from gmsa.evaluation.compare import load_run, paired_difference
from gmsa.evaluation.qa import METRICS


def rate_curve(reference: tuple[str, dict], runs: dict[int, tuple[str, dict]]) -> dict:
    """Each run's mean and paired difference to the reference, per metric, on the questions all of them share."""
    shared = [q for q in reference[1] if all(q in rows for _, rows in runs.values())]
    if not shared:
        raise ValueError("the reference and the runs share no question: evaluate them on the same data file")
    result = {"questions": len(shared), "reference": {"label": reference[0]}, "runs": []}
    for metric in METRICS:
        result["reference"][metric] = sum(reference[1][q][metric] for q in shared) / len(shared)
    for rate, (label, rows) in sorted(runs.items()):
        entry = {"rate": rate, "label": label}
        for metric in METRICS:
            mine = [rows[q][metric] for q in shared]
            difference, se = paired_difference([reference[1][q][metric] for q in shared], mine)
            entry[metric] = sum(mine) / len(mine)
            entry[f"{metric}_difference"], entry[f"{metric}_se"] = difference, se
        result["runs"].append(entry)
    return result


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [run["rate"] for run in result["runs"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    for metric, colour in (("f1", "tab:blue"), ("em", "tab:orange")):
        means, errors = [run[metric] for run in result["runs"]], [run[f"{metric}_se"] for run in result["runs"]]
        ax.errorbar(rates, means, yerr=errors, marker="o", capsize=4, color=colour,
                    label=f"GMSA {metric.upper()} (± paired se)")
        ax.axhline(result["reference"][metric], color=colour, linestyle="--",
                   label=f"{result['reference']['label']} {metric.upper()}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(rates, [str(rate) for rate in rates])
    ax.set_xlabel("compression rate (document tokens per soft token)")
    ax.set_ylim(0, 1)
    ax.set_title(f"QA against the compression rate ({result['questions']} questions)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="result.json[:SYSTEM] every run is paired with")
    parser.add_argument("--runs", nargs="+", required=True, help="RATE=result.json[:SYSTEM], one per rate")
    parser.add_argument("--out", type=Path, default=Path("results/rate-curve"))
    args = parser.parse_args()

    runs = {}
    try:
        for spec in args.runs:
            rate, separator, source = spec.partition("=")
            if not separator or not rate.isdigit():
                parser.error(f"--runs {spec!r}: expected RATE=result.json[:SYSTEM], e.g. 4=results/qa/result.json")
            if int(rate) in runs:
                parser.error(f"--runs {spec!r}: rate {rate} is given twice")
            runs[int(rate)] = load_run(source)
        result = rate_curve(load_run(args.reference), runs)
    except (GMSAError, ValueError) as error:
        parser.exit(2, f"rate_curve.py: error: {error}\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rate_curve.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out / "rate_curve.png")
    for run in result["runs"]:
        print(f"rate {run['rate']:>2}: F1 {run['f1']:.3f} ({run['f1_difference']:+.3f} ± {run['f1_se']:.3f}), "
              f"EM {run['em']:.3f} ({run['em_difference']:+.3f} ± {run['em_se']:.3f})")
    print(f"reference: F1 {result['reference']['f1']:.3f}, EM {result['reference']['em']:.3f}; wrote {args.out}")


if __name__ == "__main__":
    main()
