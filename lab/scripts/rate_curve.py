"""Where the gap to the uncompressed prompt comes from: GMSA's QA scores against the compression rate.

Reads `gmsa-eval qa` results (no model runs): a reference (typically the fine-tuned uncompressed baseline)
and one or more series of runs, one run per rate (GMSA, or plain text cut to GMSA's budget: truncated@R,
selective@R), and pairs every run with the reference question by question, as `gmsa-eval compare` does, on
the questions all of them share. Writes rate_curve.json (each run's means and paired differences with their
standard errors) and rate_curve.png (F1 and EM against the rate, one line per series, the reference dashed).

    python lab/scripts/rate_curve.py --reference results/qa300-baseline/result.json \\
        --runs 1=results/qa300-rate1/result.json 2=results/qa300-rate2/result.json 4=results/qa300-rate4/result.json \\
        --out results/rate-curve
    python lab/scripts/rate_curve.py --reference results/qa300-baseline/result.json --labels GMSA "first tokens" \\
        --runs 4=results/gmsa/result.json:gmsa@4 8=results/gmsa/result.json:gmsa@8 \\
        --runs 4=results/budget4/result.json:truncated@4 8=results/budget8/result.json:truncated@8 --out ...
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from gmsa.errors import GMSAError
from gmsa.evaluation.compare import load_run, paired_curve


def rate_curve(reference: tuple[str, dict], series: dict[str, dict[int, tuple[str, dict]]]) -> dict:
    """Each run's mean and paired difference to the reference, per metric, on the questions all of them share."""
    return paired_curve(reference, series, "rate")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = sorted({run["rate"] for series in result["series"] for run in series["runs"]})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharey=True)
    highest = max([result["reference"][m] for m in ("f1", "em")] + [
        run[m] + run[f"{m}_se"] for series in result["series"] for run in series["runs"] for m in ("f1", "em")])
    axes[0].set_ylim(0, min(1.0, 1.15 * highest))  # shared by both panels
    for ax, metric in zip(axes, ("f1", "em")):
        for series in result["series"]:
            runs = series["runs"]
            ax.errorbar([run["rate"] for run in runs], [run[metric] for run in runs], marker="o", capsize=4,
                        yerr=[run[f"{metric}_se"] for run in runs], label=f"{series['label']} (± paired se)")
        ax.axhline(result["reference"][metric], color="black", linestyle="--", label=result["reference"]["label"])
        ax.set_xscale("log", base=2)
        ax.set_xticks(rates, [str(rate) for rate in rates])
        ax.set_xlabel("compression rate (document tokens per soft or kept token)")
        ax.set_title(metric.upper())
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8)  # one legend for both panels, below them
    fig.suptitle(f"QA against the compression rate ({result['questions']} questions)")
    fig.tight_layout(rect=(0, 0.03 + 0.05 * math.ceil(len(labels) / 2), 1, 1))
    fig.savefig(path, dpi=120)


def parse_runs(specs: list[str], parser: argparse.ArgumentParser) -> dict[int, tuple[str, dict]]:
    """["4=result.json[:SYSTEM]", ...] -> {4: (label, per-question scores)}."""
    runs = {}
    for spec in specs:
        rate, separator, source = spec.partition("=")
        if not separator or not rate.isdigit():
            parser.error(f"--runs {spec!r}: expected RATE=result.json[:SYSTEM], e.g. 4=results/qa/result.json")
        if int(rate) in runs:
            parser.error(f"--runs {spec!r}: rate {rate} is given twice in one series")
        runs[int(rate)] = load_run(source)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="result.json[:SYSTEM] every run is paired with")
    parser.add_argument("--runs", nargs="+", action="append", required=True,
                        help="RATE=result.json[:SYSTEM], one per rate: a series; give --runs again for another")
    parser.add_argument("--labels", nargs="+", help="one name per series (default: GMSA, for one series)")
    parser.add_argument("--out", type=Path, default=Path("results/rate-curve"))
    args = parser.parse_args()
    labels = args.labels or (["GMSA"] if len(args.runs) == 1 else None)
    if labels is None or len(labels) != len(args.runs) or len(set(labels)) != len(labels):
        parser.error(f"--labels: give {len(args.runs)} different names, one per --runs series")
    try:
        series = {label: parse_runs(specs, parser) for label, specs in zip(labels, args.runs)}
        result = rate_curve(load_run(args.reference), series)
    except (GMSAError, ValueError) as error:
        parser.exit(2, f"rate_curve.py: error: {error}\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rate_curve.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out / "rate_curve.png")
    for series in result["series"]:
        for run in series["runs"]:
            print(f"{series['label']}, rate {run['rate']:>2}: F1 {run['f1']:.3f} ({run['f1_difference']:+.3f} ± "
                  f"{run['f1_se']:.3f}), EM {run['em']:.3f} ({run['em_difference']:+.3f} ± {run['em_se']:.3f})")
    print(f"reference: F1 {result['reference']['f1']:.3f}, EM {result['reference']['em']:.3f}; wrote {args.out}")


if __name__ == "__main__":
    main()
