"""How much room soft tokens need: budget@F against rerank-text@F by what the planner left for soft tokens.

Reads a `gmsa-eval qa` result.json holding both systems at one fraction, replans every question (the same
documents, MiniLM relevance and checkpoint as the run), and groups the questions by the positions left after the
most relevant documents went whole (the room the planner filled with soft tokens, where rerank-text sends the next
document's first tokens). For each threshold T it prints the EM a planner would get that sends a remainder below T
as the next document's first tokens: rerank-text's answer there (the same input), budget@F's elsewhere. Choose T on
a tuning split (`gmsa-eval qa --skip 300 --limit 200`), never on the questions a report reads.

    python lab/scripts/soft_room.py lab/results/budget-final/nq300-default/result.json --documents 5 --fraction 0.25 \
        > lab/results/soft-room/nq300.md
"""

import argparse
import json
from collections import defaultdict
from pathlib import Path

from gmsa import GMSA
from gmsa.data import keep_documents, read_qa
from gmsa.similarity import embedder_device, relevances

THRESHOLDS = (0, 16, 32, 48, 64, 96, 128, 10**9)


def remainders(result: dict, documents: int, fraction: float, checkpoint: str | None) -> list[int | None]:
    """Per question: positions left after the whole documents, or None when the top document was cut (a prefix:
    both systems send the same)."""
    model = GMSA.from_pretrained(checkpoint) if checkpoint else GMSA.from_pretrained()
    device = embedder_device(model.device)  # MiniLM beside the model, as gmsa-eval ranks
    where = result["per_question"]["where"]
    path = where[0].rsplit(":", 1)[0]
    lines = {int(w.rsplit(":", 1)[1]) for w in where}
    examples = {e.where: e for e in read_qa(path, limit=max(lines)) if int(e.where.rsplit(":", 1)[1]) in lines}
    out = []
    for w in where:
        example = examples[w]
        docs = keep_documents(example, documents)
        scores = relevances([example.question], [docs], device)[0]
        chosen = model.plan(example.question, docs, fraction, scores)
        whole = sum(p.positions for p in chosen.sent if p.form == "text")
        out.append(None if any(p.form == "prefix" for p in chosen.sent) else chosen.budget - whole)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("result", type=Path)
    parser.add_argument("--documents", type=int, required=True)
    parser.add_argument("--fraction", type=float, required=True)
    parser.add_argument("--checkpoint", help="the run's checkpoint (default: the bundled default)")
    args = parser.parse_args()
    result = json.loads(args.result.read_text())
    systems = (f"budget@{args.fraction:g}", f"rerank-text@{args.fraction:g}")
    missing = [name for name in systems if name not in result["per_question"]]
    if missing:
        parser.error(f"{args.result} has no {', '.join(missing)}: run gmsa-eval qa with --systems {' '.join(systems)}")
    budget, text = (result["per_question"][name]["em"] for name in systems)
    recorded = result.get("checkpoint")  # the run's --checkpoint, or "bundled default"
    checkpoint = args.checkpoint or (None if recorded in (None, "bundled default") else recorded)
    left = remainders(result, args.documents, args.fraction, checkpoint)
    groups = defaultdict(list)  # 16-position bins of the room left; -1: the top document was cut
    for i, room in enumerate(left):
        groups[-1 if room is None else room // 16].append(i)
    print(f"{len(left)} questions, {args.documents} documents, budget {args.fraction}\n")
    print("| room left for soft tokens | questions | budget EM | rerank-text EM |\n|---|---:|---:|---:|")
    for key, idx in sorted(groups.items()):
        name = "top document cut" if key < 0 else f"{16 * key}-{16 * key + 15}"
        print(f"| {name} | {len(idx)} | {sum(budget[i] for i in idx) / len(idx):.3f} | "
              f"{sum(text[i] for i in idx) / len(idx):.3f} |")
    print("\n| T: a remainder below T goes as text | EM | questions whose remainder stays soft |\n|---:|---:|---:|")
    for t in THRESHOLDS:
        em = [text[i] if room is not None and room < t else budget[i] for i, room in enumerate(left)]
        soft = sum(room is not None and room >= t for room in left)
        print(f"| {'all' if t == 10**9 else t} | {sum(em) / len(em):.3f} | {soft} |")


if __name__ == "__main__":
    main()
