"""Keep the fine-tuned uncompressed baseline: bf16 weights under lab/, the shipped generation settings, a record.

    python recipes/keep_baseline.py      # after recipes/train-baseline.sh (it runs this as its last step)

The comparisons in BENCHMARKS.md and lab/LOG.md (recipes/eval-budget.sh) read lab/checkpoints/baseline-keft-mixed.
Its generation settings are the bundled default's, so both sides answer with the same decoding.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from ship_default import machine, stage_record  # recipes/ship_default.py, beside this file

from gmsa import GMSA
from gmsa.checkpoint import read_checkpoint
from gmsa.model import BUNDLED_DEFAULT

STAGES = {"keft": "runs/baseline-keft", "keft_nq": "runs/baseline-keft-nq", "keft_mixed": "runs/baseline-keft-mixed"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("lab/checkpoints/baseline-keft-mixed"))
    args = parser.parse_args()
    for run in map(Path, STAGES.values()):
        if not (run / "final").is_dir() or not (run / "recipe.json").is_file():
            raise SystemExit(f"{run} has not finished (no final/ or recipe.json): bash recipes/train-baseline.sh")
    stages = {name: stage_record(Path(run)) for name, run in STAGES.items()}
    model = GMSA.from_pretrained(Path(STAGES["keft_mixed"]) / "final", device="cpu")
    model.config.generation = read_checkpoint(BUNDLED_DEFAULT)[0].generation  # decode as the default does
    model.save_pretrained(args.out, dtype=torch.bfloat16)  # half the bytes; CPU loads upcast to fp32
    timed = [stage["wall_seconds"] for stage in stages.values()]
    record = {"stages": stages, "wall_seconds_all_stages": sum(timed) if None not in timed else None,
              "machine": machine()}
    (args.out / "training.json").write_text(json.dumps(record, indent=2))
    size = sum(p.stat().st_size for p in args.out.iterdir()) / 2**20
    print(f"wrote {args.out} ({size:.1f} MiB), generation {model.config.generation}")


if __name__ == "__main__":
    main()
