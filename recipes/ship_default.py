"""Copy the trained default into the package: bf16 weights, the config, and a record of how it was trained.

    python recipes/ship_default.py                      # after recipes/train-default.sh
    python recipes/ship_default.py --note "AE timed by hand: 2 h 05 min"
    python recipes/ship_default.py --keep-stage ae       # stage 1's run folder is gone: keep its record

`GMSA.from_pretrained()` then loads gmsa/checkpoints/default, with the generation settings it had (a run
keeps the ones it started from). The record (training.json) holds each
stage's recipe, steps, wall time (the sum of the logged step windows), last losses and evaluations,
and the machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from pathlib import Path

import torch

from gmsa import GMSA
from gmsa.checkpoint import CONFIG_FILE, read_checkpoint
from gmsa.model import BUNDLED_DEFAULT

STAGES = ("ae", "ae_decoder", "keft", "keft_nq", "keft_mixed")  # recipes/train-default.sh, in order


def stage_record(run_dir: Path) -> dict:
    """What a finished `gmsa-train` run folder says about itself."""
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    history = [json.loads(line) for line in lines if line.strip()]
    # a resumed run logs again the steps after its last checkpoint: the later record of a step wins
    losses = list({r["step"]: r for r in history if "loss" in r}.values())
    timed = [r["seconds"] for r in losses if "seconds" in r]
    return {
        "run": str(run_dir),
        "recipe": json.loads((run_dir / "recipe.json").read_text()),
        "steps": losses[-1]["step"] if losses else 0,
        "wall_seconds": round(sum(timed)) if len(timed) == len(losses) else None,  # None: logged before timing
        "last_loss_mean_50_steps": sum(r["loss"] for r in losses[-10:]) / max(len(losses[-10:]), 1),
        "evaluations": [r for r in history if any(k.startswith("eval_") for k in r)],
    }


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ae", type=Path, default=Path("runs/default-ae"))
    parser.add_argument("--ae-decoder", type=Path, default=Path("runs/default-ae-decoder"))
    parser.add_argument("--keft", type=Path, default=Path("runs/default-keft"))
    parser.add_argument("--keft-nq", type=Path, default=Path("runs/default-keft-nq"))
    parser.add_argument("--keft-mixed", type=Path, default=Path("runs/default-keft-mixed"))
    parser.add_argument("--keep-stage", action="append", default=[], choices=STAGES,
                        help="copy this stage's record from the shipped training.json instead of a run folder")
    parser.add_argument("--out", type=Path, default=BUNDLED_DEFAULT)
    parser.add_argument("--note", default="", help="free text kept in the record (e.g. how a stage was timed)")
    args = parser.parse_args()
    shipped = args.out / "training.json"
    previous = json.loads(shipped.read_text())["stages"] if shipped.is_file() else {}
    folders = {"ae": args.ae, "ae_decoder": args.ae_decoder, "keft": args.keft, "keft_nq": args.keft_nq,
               "keft_mixed": args.keft_mixed}
    stages = {}
    for name in STAGES:  # read before anything is overwritten
        if name in args.keep_stage:
            if name not in previous:
                raise SystemExit(f"--keep-stage {name}: {shipped} has no record of it")
            stages[name] = previous[name]
        elif (folders[name] / "log.jsonl").is_file():
            stages[name] = stage_record(folders[name])
        else:
            raise SystemExit(f"{folders[name]}/log.jsonl not found: train that stage, point --{name.replace('_', '-')}"
                             f" at its run, or pass --keep-stage {name}")
    model = GMSA.from_pretrained(folders[STAGES[-1]] / "final", device="cpu")
    if (args.out / CONFIG_FILE).is_file():  # the shipped decoding stays (a run keeps the one it started from)
        model.config.generation = read_checkpoint(args.out)[0].generation
    model.save_pretrained(args.out, dtype=torch.bfloat16)  # half the bytes; CPU loads upcast to fp32
    timed = [stage["wall_seconds"] for stage in stages.values()]
    record = {
        "shipped": datetime.date.today().isoformat(),
        "stages": stages,
        "wall_seconds_all_stages": sum(timed) if None not in timed else None,
        "machine": machine(),
        "note": args.note,
    }
    (args.out / "training.json").write_text(json.dumps(record, indent=2))
    size = sum(p.stat().st_size for p in args.out.iterdir()) / 2**20
    print(f"wrote {args.out} ({size:.1f} MiB)")


if __name__ == "__main__":
    main()
