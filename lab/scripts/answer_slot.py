"""Does it matter where in its group the answer sits? QA with the gold document's groups shifted.

Group merging averages every `rate` consecutive encoder states, so an answer can start at any slot
(0 .. rate-1) of its group. Restating decodes the slots of each soft token in order; answering a
question has to jump to the right soft token and decode from the right slot. This script measures
whether that slot matters, with everything else held fixed: the gold document is encoded once (its
encoder states do not depend on grouping), then merged with its group boundaries moved by an offset
o = 0 .. rate-1 (the first o tokens form one short group), so for every question the answer's first
token sits once at each slot. The other documents are compressed as usual. Each question is answered
rate times, once per offset, and the scores are compared slot against slot, paired by question.

    python lab/scripts/answer_slot.py --checkpoint gmsa/checkpoints/default --questions 300 \\
        --out lab/results/answer-slot/default
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from tqdm import tqdm

from gmsa import GMSA
from gmsa.backbone.layers import decoder_core
from gmsa.compress.encode import encode
from gmsa.compress.merge import group_merge
from gmsa.data import keep_documents, read_qa
from gmsa.errors import GMSAError
from gmsa.evaluation.answer_location import locate_answer
from gmsa.evaluation.metrics import accuracy, exact_match, token_f1

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "qa" / "nq_dev.jsonl"
METRICS = {"em": exact_match, "f1": token_f1, "accuracy": accuracy}


@torch.no_grad()
def shifted_soft_tokens(model: GMSA, text: str, rate: int, offset: int) -> torch.Tensor:
    """Soft tokens of `text` with the group boundaries moved by `offset`: tokens [0, offset) form one group,
    then groups of `rate` from token `offset` on. (n, ) tokens -> (1 + ceil((n - offset) / r), H)."""
    ids = torch.tensor([model.tokenize_contexts([text])[0]], device=model.device)  # (1, T)
    mask = torch.ones_like(ids)  # (1, T)
    hidden = encode(model.base, ids, mask, model.config.encoder_layers, model.config.encoder_final_norm)  # (1, T, H)
    rest, rest_mask = group_merge(hidden[:, offset:], mask[:, offset:], rate)  # (1, T-o, H) -> (1, M, H)
    if offset:
        head, head_mask = group_merge(hidden[:, :offset], mask[:, :offset], offset)  # (1, o, H) -> (1, 1, H)
        rest, rest_mask = torch.cat([head, rest], dim=1), torch.cat([head_mask, rest_mask], dim=1)  # (1, 1+M, H)
    soft = model.lsa(rest, rest_mask.long(), decoder_core(model.base))  # (1, M', H) -> (1, M', H)
    return soft[0]


def paired(values: dict[int, list[float]], reference: int) -> dict[int, dict[str, float]]:
    """Mean per slot, and its paired difference to `reference` with the standard error."""
    out = {}
    for slot, scores in values.items():
        diffs = [a - b for a, b in zip(scores, values[reference])]
        mean = sum(diffs) / len(diffs)
        var = sum((d - mean) ** 2 for d in diffs) / max(len(diffs) - 1, 1)
        out[slot] = {"mean": sum(scores) / len(scores), "diff": mean, "se": math.sqrt(var / len(diffs))}
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, title in ((axes[0], "by_slot", "answer's first token at slot"),
                           (axes[1], "by_offset", "gold document's groups shifted by")):
        for shift, metric in ((-0.2, "accuracy"), (0.2, "f1")):
            table = result[key][metric]
            slots = sorted(table, key=int)
            ax.bar([int(s) + shift for s in slots], [table[s]["mean"] for s in slots], 0.4,
                   yerr=[table[s]["se"] for s in slots], capsize=3, label=metric)
        ax.set_xticks(range(result["rate"]))
        ax.set_xlabel(title)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("score (error bars: paired standard error)")
    fig.suptitle(f"{Path(result['checkpoint']).name}, rate {result['rate']}, {result['questions']} NQ questions "
                 f"whose answer is in the gold document ({result['documents']} documents)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None, help="a GMSA checkpoint (default: the bundled one)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--questions", type=int, default=300, help="the first N questions of --data")
    parser.add_argument("--documents", type=int, default=5)
    parser.add_argument("--rate", type=int, default=4)
    parser.add_argument("--device")
    parser.add_argument("--out", type=Path, default=Path("results/answer-slot"))
    args = parser.parse_args()

    try:
        examples = read_qa(args.data, limit=args.questions)
        model = GMSA.from_pretrained(args.checkpoint, device=args.device)
        rate = model.config.check_rate(args.rate)
    except GMSAError as error:
        parser.exit(2, f"answer_slot.py: error: {error}\n")
    records = []
    for example in tqdm(examples, desc="questions"):
        documents = keep_documents(example, args.documents)
        located = locate_answer(model.tokenizer, example, documents)
        if located is None or located.first_token < rate:  # not verbatim in a gold document, or in the first group
            continue
        gold, first, length = located.document, located.first_token, located.tokens
        soft = model.compress(documents, rate)
        check = shifted_soft_tokens(model, documents[gold], rate, 0)
        torch.testing.assert_close(check, soft[gold], rtol=1e-4, atol=1e-4)  # offset 0 is compress() itself
        contexts = [soft[:gold] + [shifted_soft_tokens(model, documents[gold], rate, o)] + soft[gold + 1:]
                    for o in range(rate)]
        answers = model.answer_questions([example.question] * rate, contexts, max_new_tokens=32)
        records.append({"where": example.where, "first_token": first, "answer_tokens": length, "answers": answers,
                        "scores": {m: [f(a, example.answers) for a in answers] for m, f in METRICS.items()}})

    by_slot = {m: {s: [] for s in range(rate)} for m in METRICS}
    by_offset = {m: {o: [] for o in range(rate)} for m in METRICS}
    for record in records:
        for offset in range(rate):
            slot = (record["first_token"] - offset) % rate
            for m in METRICS:
                by_slot[m][slot].append(record["scores"][m][offset])
                by_offset[m][offset].append(record["scores"][m][offset])
    result = {
        "checkpoint": str(args.checkpoint or "bundled default"), "data": str(args.data), "rate": rate,
        "documents": args.documents, "questions": len(records), "asked": args.questions,
        "by_slot": {m: paired(by_slot[m], 0) for m in METRICS},
        "by_offset": {m: paired(by_offset[m], 0) for m in METRICS},
        "per_question": records,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    plot(json.loads(json.dumps(result)), args.out / "answer_slot.png")
    print(f"{len(records)} of {args.questions} questions have an answer verbatim in a gold document (past its "
          f"first group); each answered {rate} times, once per shift of that document's groups")
    for key, label in (("by_slot", "answer at slot"), ("by_offset", "groups shifted by")):
        print(f"{label:<18} | accuracy (diff to 0 ± se)    | F1 (diff to 0 ± se)          | EM")
        for s in range(rate):
            a, f, e = (result[key][m][s] for m in ("accuracy", "f1", "em"))
            print(f"{s:<18} | {a['mean']:.3f} ({a['diff']:+.3f} ± {a['se']:.3f}) | "
                  f"{f['mean']:.3f} ({f['diff']:+.3f} ± {f['se']:.3f}) | {e['mean']:.3f}")
    print(f"wrote {args.out}/result.json and answer_slot.png")


if __name__ == "__main__":
    main()
