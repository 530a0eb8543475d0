"""How closely does each GMSA checkpoint, reading soft tokens, follow a teacher reading the documents as text?

For the same QA samples (question, documents, first reference answer), every checkpoint compresses
the documents at one rate and is scored, teacher-forced on the reference answer, on the three terms
KEFT's distillation trains (gmsa/training/distill.py): the answer cross-entropy, KL(teacher || student)
on the answer tokens, and the per-dimension scaled difference of every layer's states over the
question and answer. The teacher's own cross-entropy is the floor GMSA would reach if compression
lost nothing the answer needs.

    python benchmarks/distill_terms.py --teacher runs/baseline-keft/final \\
        --checkpoints runs/default-keft/final runs/keft-r4-distill/final --questions 48 --out results/distill-terms
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tqdm import tqdm

from gmsa import GMSA
from gmsa.training.distill import Distillation, hidden_match, load_teacher, logit_kl
from gmsa.training.objective import IGNORE, compress_contexts, decoder_pass
from gmsa.training.samples import qa_samples

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "qa" / "nq_dev.jsonl"


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean over target tokens. Input: logits (B, W, V), targets (B, W)."""
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets.flatten(),
                                             ignore_index=IGNORE).item()


@torch.no_grad()
def measure(
    model: GMSA, teacher: Distillation, samples: list, rate: int, batch_size: int, label: str
) -> dict[str, float]:
    totals = {"answer_ce": 0.0, "teacher_ce": 0.0, "logit_kl": 0.0, "hidden_match": 0.0}
    batches = range(0, len(samples), batch_size)
    for first in tqdm(batches, desc=label, leave=False):
        chunk = samples[first:first + batch_size]
        with torch.autocast(model.device.type, dtype=torch.bfloat16):
            student = decoder_pass(model, chunk, compress_contexts(model, chunk, [rate] * len(chunk)),
                                   hidden_states=True)
            taught = teacher.teacher_pass(chunk)
        totals["answer_ce"] += cross_entropy(student.logits, student.targets)
        totals["teacher_ce"] += cross_entropy(taught.logits, taught.targets)
        totals["logit_kl"] += logit_kl(student.logits, taught.logits, student.targets).item()
        totals["hidden_match"] += hidden_match(student.hidden, taught.hidden).item()
    return {name: total / len(batches) for name, total in totals.items()}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    terms = ["answer_ce", "logit_kl", "hidden_match"]
    names = list(result["checkpoints"])
    figure, axes = plt.subplots(1, len(terms), figsize=(4 * len(terms), 3.6))
    for axis, term in zip(axes, terms):
        values = [result["checkpoints"][name][term] for name in names]
        axis.bar(range(len(names)), values, color="tab:blue")
        if term == "answer_ce":
            floor = result["checkpoints"][names[0]]["teacher_ce"]
            axis.axhline(floor, color="tab:green", linestyle="--", label="teacher (documents as text)")
            axis.legend(fontsize=8, loc="lower right")
        axis.set_xticks(range(len(names)), [Path(n).parent.name for n in names], rotation=20, fontsize=8)
        axis.set_title(term.replace("_", " "))
    figure.suptitle(f"GMSA at rate {result['rate']} against the teacher, {result['questions']} questions, "
                    f"{result['documents']} documents (lower is closer)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--teacher", required=True, help="checkpoint that reads the documents as text")
    parser.add_argument("--checkpoints", nargs="+", required=True, help="GMSA checkpoints to compare")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="QA JSONL file")
    parser.add_argument("--questions", type=int, default=48)
    parser.add_argument("--documents", type=int, default=5)
    parser.add_argument("--rate", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default=None, help="cpu, cuda, ...; default: CUDA when there is a GPU, else CPU")
    parser.add_argument("--out", required=True, help="folder for result.json and distill_terms.png")
    args = parser.parse_args()

    models = {path: GMSA.from_pretrained(path, device=args.device) for path in args.checkpoints}
    first = next(iter(models.values()))
    teacher = Distillation(load_teacher(args.teacher, first), logit_weight=1.0, hidden_weight=1.0)
    samples = qa_samples([args.data], first.tokenizer, first.config, args.documents, max_answer_tokens=32)
    samples = samples[: args.questions]
    result = {"teacher": args.teacher, "data": args.data, "questions": len(samples), "documents": args.documents,
              "rate": args.rate, "checkpoints": {}}
    for path, model in models.items():
        model.eval()
        result["checkpoints"][path] = measure(model, teacher, samples, args.rate, args.batch_size, path)
        print(path, json.dumps({k: round(v, 3) for k, v in result["checkpoints"][path].items()}))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=2))
    plot(result, out / "distill_terms.png")


if __name__ == "__main__":
    main()
