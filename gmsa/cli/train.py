"""`gmsa-train ae|keft --config RECIPE [key=value ...]`: train GMSA on your own corpus.

    gmsa-train ae   --config recipes/default-ae.yaml out_dir=runs/ae
    gmsa-train keft --config recipes/default-keft.yaml --from runs/ae/final out_dir=runs/keft
    gmsa-train ae   --config recipes/default-ae.yaml out_dir=runs/ae --resume     # continue a killed run
    gmsa-train ae   --config recipes/default-ae.yaml out_dir=runs/ae --overwrite  # replace the run there
Several processes share each batch (batch_size is the whole batch):
    torchrun --nproc_per_node N -m gmsa.cli.train ae --config ...            (add device=cpu on CPUs)
    accelerate launch --multi_gpu --num_processes N -m gmsa.cli.train ae --config ...
"""

from __future__ import annotations

import argparse
import logging
import sys

from gmsa.errors import GMSAError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gmsa-train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["ae", "keft"], help="autoencoder pre-training or KEFT")
    parser.add_argument("--config", help="YAML recipe (see recipes/)")
    parser.add_argument("--from", dest="init_from", help="checkpoint to start from (KEFT: the AE checkpoint)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in out_dir")
    parser.add_argument("--overwrite", action="store_true", help="replace the run already in out_dir")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="recipe overrides, e.g. steps=500 model.rates=[4,8]")
    args, extra = parser.parse_known_args(argv)
    unknown = [item for item in extra if item.startswith("-") or "=" not in item]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = [*args.overrides, *extra]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from gmsa.training.loop import fit, setup
    from gmsa.training.recipe import load_recipe

    try:
        config = load_recipe(args.config, args.overrides, stage=args.stage, init_from=args.init_from)
        run = setup(config, resume=args.resume, overwrite=args.overwrite)
        final = fit(run)
    except GMSAError as error:
        print(f"gmsa-train: error: {error}", file=sys.stderr)
        return 2
    # fit() validated at the last step; report that rather than evaluating twice.
    metrics = next((r for r in reversed(run.history) if any(k.startswith("eval_") for k in r)), {})
    if run.accelerator.is_main_process:
        print(f"final checkpoint: {final}")
        for key, value in metrics.items():
            if key.startswith("eval_"):
                print(f"{key}: {value:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
