"""The multi-hop QA records that KEFT never trained on: a held-out slice for issue 38's evaluations.

The shipped default's first KEFT stage (`recipes/default-keft.yaml`) and the fine-tuned baseline's
(`recipes/train-baseline.sh`) draw 300 x 8 samples from squad, 2wikimqa, hotpotqa, musique and nq_train with seed
0; the later stages read NQ only. This replays the training sampler (`gmsa.training.loop._draw` over the pool
`gmsa.training.setup` builds: every record with an answer, in file order, the last `eval_samples` held out) and
writes the 2wikimqa / hotpotqa / musique records no step drew, as they are, to one JSONL for `gmsa-eval qa`
(runs/heldout-multihop.jsonl), with a 120-record subset (every k-th record, 40 of each file:
runs/heldout-multihop-120.jsonl), and lists them as file:line.

    python lab/scripts/heldout_multihop.py > lab/results/heldout-multihop/README.md
"""

import json
from pathlib import Path

from gmsa.data import iter_jsonl, parse_qa
from gmsa.training.loop import _draw
from gmsa.training.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "runs" / "heldout-multihop.jsonl"  # derived data: rebuilt by this script, not committed
MULTI_HOP = ("2wikimqa_train", "hotpotqa_train", "musique_train")


def main() -> None:
    config = load_recipe(ROOT / "recipes" / "default-keft.yaml")
    pool = []  # (file stem, raw line) of each sample, in the order qa_samples builds them
    for path in config.train_data:
        path = (ROOT / path).resolve()  # recipes name data relative to the repository root
        for line, record in iter_jsonl(path):
            if parse_qa(record, path, line).answers:
                pool.append((path.stem, json.dumps(record, ensure_ascii=False), f"{path.name}:{line}"))
    train = pool[: -(config.holdout or config.eval_samples)]
    drawn = {id(s) for s in _draw(train, config.seed, 0, config.steps * config.batch_size)}
    kept = [item for item in train if item[0] in MULTI_HOP and id(item) not in drawn]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("".join(item[1] + "\n" for item in kept), encoding="utf-8")
    subset = [item for name in MULTI_HOP for group in [[i for i in kept if i[0] == name]]
              for item in group[:: max(1, len(group) // 40)][:40]]  # every k-th record, up to 40 of each file
    OUT.with_name("heldout-multihop-120.jsonl").write_text("".join(item[1] + "\n" for item in subset), "utf-8")
    total = {name: sum(1 for s in train if s[0] == name) for name in MULTI_HOP}
    never = {name: sum(1 for s in train if s[0] == name and id(s) not in drawn) for name in MULTI_HOP}
    print(f"# Multi-hop records KEFT never drew ({config.steps} steps x {config.batch_size}, seed {config.seed})\n")
    print("| file | records | drawn at least once | never drawn (held out) |\n|---|---:|---:|---:|")
    for name in MULTI_HOP:
        print(f"| {name} | {total[name]} | {total[name] - never[name]} | {never[name]} |")
    print(f"\n{len(kept)} records written to `{OUT.relative_to(ROOT)}`:\n")
    print(" ".join(item[2] for item in kept))


if __name__ == "__main__":
    main()
