"""How held-out metrics move with training steps: one or more `gmsa-train` runs, read from their logs.

Reads each run's log.jsonl (no model runs) and keeps its held-out evaluations (`eval_*` keys). A run resumed
with `--resume` logs the steps after its last checkpoint twice; the later record of a step wins, as the resumed
run is the one that went on. Writes training_curve.json (every run's evaluations by step) and
training_curve.png (one panel per metric, one line per run). A run that went on from another's checkpoint
(`--from`) counts its steps from 0: `--step-offsets` puts it after the steps it continues.

    python lab/scripts/training_curve.py --runs runs/ae-r4-long runs/probe-mean \\
        --metrics eval_loss_r4 eval_bleu4_r4 --out results/ae-steps
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_evaluations(run: Path) -> dict[int, dict[str, float]]:
    """{step: {metric: value}} from a run folder's log.jsonl; malformed lines are errors naming file and line."""
    log = run / "log.jsonl"
    if not log.is_file():
        raise ValueError(f"{log}: no such file; pass the out_dir of a gmsa-train run")
    evaluations: dict[int, dict[str, float]] = {}
    for number, line in enumerate(log.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            step = int(record["step"])
            metrics = {key: float(value) for key, value in record.items() if key.startswith("eval_")}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"{log}:{number}: not a gmsa-train log record ({error})") from None
        if metrics:
            evaluations[step] = metrics  # a resumed run's record replaces the killed run's
    if not evaluations:
        raise ValueError(f"{log}: no held-out evaluation logged (eval_every larger than the steps run?)")
    return dict(sorted(evaluations.items()))


def shift_steps(evaluations: dict[int, dict[str, float]], offset: int) -> dict[int, dict[str, float]]:
    """The same evaluations, `offset` steps later (a run that continued another's `offset` steps)."""
    return {step + offset: row for step, row in evaluations.items()}


def training_curve(runs: dict[str, dict[int, dict[str, float]]], metrics: list[str] | None) -> dict:
    """The evaluations of every run for the chosen metrics (default: every metric some run logged)."""
    logged = sorted({metric for evaluations in runs.values() for row in evaluations.values() for metric in row})
    chosen = metrics or logged
    unknown = [metric for metric in chosen if metric not in logged]
    if unknown:
        raise ValueError(f"--metrics {' '.join(unknown)}: not logged by any run; logged: {' '.join(logged)}")
    result = {"metrics": chosen, "runs": []}
    for label, evaluations in runs.items():
        rows = {step: row for step, row in evaluations.items() if any(metric in row for metric in chosen)}
        result["runs"].append({"label": label, "steps": list(rows),
                               **{metric: [row.get(metric) for row in rows.values()] for metric in chosen}})
    return result


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = result["metrics"]
    columns = min(len(metrics), 2)
    rows = -(-len(metrics) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    for ax, metric in zip(axes.flat, metrics):
        for run in result["runs"]:
            points = [(step, value) for step, value in zip(run["steps"], run[metric]) if value is not None]
            if points:
                ax.plot(*zip(*points), marker="o", label=run["label"])
        ax.set_xlabel("training step")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, type=Path, help="gmsa-train out_dir folders")
    parser.add_argument("--labels", nargs="+", help="one per run (default: the folder names)")
    parser.add_argument("--metrics", nargs="+", help="eval_* keys to plot (default: all logged)")
    parser.add_argument("--step-offsets", nargs="+", type=int,
                        help="one per run: steps trained before it (a run started --from another's checkpoint)")
    parser.add_argument("--out", type=Path, default=Path("results/training-curve"))
    args = parser.parse_args()
    labels = args.labels or [run.name for run in args.runs]
    if len(labels) != len(args.runs) or len(set(labels)) != len(labels):
        parser.error(f"labels {' '.join(labels)} (--labels, default the folder names): "
                     f"give one distinct label per run ({len(args.runs)} runs)")
    offsets = args.step_offsets or [0] * len(args.runs)
    if len(offsets) != len(args.runs) or min(offsets) < 0:
        parser.error(f"--step-offsets {' '.join(map(str, offsets))}: give one step count >= 0 per run "
                     f"({len(args.runs)} runs)")
    try:
        result = training_curve({label: shift_steps(read_evaluations(run), offset)
                                 for label, run, offset in zip(labels, args.runs, offsets)}, args.metrics)
    except ValueError as error:
        parser.exit(2, f"training_curve.py: error: {error}\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "training_curve.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out / "training_curve.png")
    for run in result["runs"]:
        for step_index, step in enumerate(run["steps"]):
            values = ", ".join(f"{metric} {run[metric][step_index]:.3f}" for metric in result["metrics"]
                               if run[metric][step_index] is not None)
            print(f"{run['label']} step {step}: {values}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
