"""Does the answer survive compression? QA on documents restated from their soft tokens.

Each question's documents are compressed at one rate and restated as text by an AE checkpoint
(`reconstruct(compress(document))`); a reader checkpoint (the fine-tuned uncompressed baseline) then
answers from the original documents and from the restatements, side by side on the same questions.
It also counts how often a reference answer appears verbatim in the documents at all, before and
after restating. Answers use the reader's generation settings (gmsa-eval caps them at 32 new
tokens). If the reader does well on restatements, the information is in the soft tokens and
what is missing is the decoder's skill in reading them; if not, compression lost it. Without
--reader only the restatements are scored (BLEU-4, ROUGE-L, and how often an answer survives).

    python lab/scripts/restated_qa.py --restater runs/default-ae-decoder/final \\
        --reader runs/baseline-keft/final --questions 100 --documents 5 --rate 4 --out results/restated-qa
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tqdm import tqdm

from gmsa import GMSA
from gmsa.data import keep_documents, read_qa
from gmsa.evaluation.metrics import accuracy, exact_match, token_f1
from gmsa.evaluation.reconstruction import restate, score_reconstruction

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "qa" / "nq_dev.jsonl"


def restate_documents(restater: GMSA, documents: list[list[str]], rate: int) -> list[list[str]]:
    """Every question's documents, each restated from its own soft tokens (the order is kept)."""
    return [restate(restater, docs, rate) for docs in tqdm(documents, desc=f"restate r{rate}")]


def answer_all(reader: GMSA, questions: list[str], documents: list[list[str]], batch_size: int = 4) -> list[str]:
    answers: list[str] = []
    for first in tqdm(range(0, len(questions), batch_size), desc="answer", leave=False):
        chunk = slice(first, first + batch_size)
        answers.extend(reader.answer_questions(questions[chunk], documents[chunk]))
    return answers


def scores(answers: list[str] | None, references: list[list[str]], documents: list[list[str]]) -> dict:
    count = len(references)
    # an upper bound for extractive answers: is a reference in the documents at all?
    result = {"answer_in_documents": sum(accuracy(" ".join(d), r) for d, r in zip(documents, references)) / count}
    if answers is not None:
        result |= {
            "em": sum(map(exact_match, answers, references)) / count,
            "f1": sum(map(token_f1, answers, references)) / count,
            "accuracy": sum(map(accuracy, answers, references)) / count,
        }
    return result


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in ("answer_in_documents", "accuracy", "f1", "em") if m in result["original"]]
    labels = {"answer_in_documents": "answer in documents", "accuracy": "accuracy", "f1": "F1", "em": "EM"}
    fig, ax = plt.subplots(figsize=(7, 4))
    for offset, name in ((-0.2, "original"), (0.2, "restated")):
        ax.bar([i + offset for i in range(len(metrics))], [result[name][m] for m in metrics], 0.4,
               label=f"{name} documents" + (f" (rate {result['rate']})" if name == "restated" else ""))
    ax.set_xticks(range(len(metrics)), [labels[m] for m in metrics])
    ax.set_ylim(0, 1)
    reader = f"reader {Path(result['reader']).parent.name}" if result["reader"] else "no reader"
    ax.set_title(f"Restater {Path(result['restater']).parent.name}, {reader}, {result['questions']} NQ questions, "
                 f"{result['documents']} documents", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--restater", type=Path, required=True, help="AE checkpoint that restates documents")
    parser.add_argument("--reader", type=Path, help="checkpoint that answers from text (omit: score restatements only)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--questions", type=int, default=100)
    parser.add_argument("--documents", type=int, default=5)
    parser.add_argument("--rate", type=int, default=4)
    parser.add_argument("--device")
    parser.add_argument("--out", type=Path, default=Path("results/restated-qa"))
    args = parser.parse_args()

    examples = read_qa(args.data, limit=args.questions)
    original = [keep_documents(e, args.documents) for e in examples]
    restater = GMSA.from_pretrained(args.restater, device=args.device)
    restated = restate_documents(restater, original, args.rate)
    del restater
    questions, references = [e.question for e in examples], [e.answers for e in examples]
    answers = {"original": None, "restated": None}
    if args.reader:
        reader = GMSA.from_pretrained(args.reader, device=args.device)
        answers = {"original": answer_all(reader, questions, original),
                   "restated": answer_all(reader, questions, restated)}
    flat_original = [d for docs in original for d in docs]
    unanswered = [None] * len(questions)
    result = {
        "restater": str(args.restater), "reader": args.reader and str(args.reader), "data": str(args.data),
        "questions": len(examples), "documents": args.documents, "rate": args.rate,
        "original": scores(answers["original"], references, original),
        "restated": scores(answers["restated"], references, restated),
        "restatement": score_reconstruction([d for docs in restated for d in docs], flat_original, semantic=False),
        "examples": [{"question": q, "references": r, "original": a, "restated": b, "restated_documents": d}
                     for q, r, a, b, d in list(zip(questions, references, answers["original"] or unanswered,
                                                   answers["restated"] or unanswered, restated))[:5]],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    plot(result, args.out / "restated_qa.png")
    print(f"{'documents':<10} | answer in documents | accuracy | F1    | EM")
    for name in ("original", "restated"):
        s = result[name]
        answered = (f" | {s['accuracy']:8.2f} | {s['f1']:.3f} | {s['em']:.2f}" if args.reader
                    else " | (no --reader)")
        print(f"{name:<10} | {s['answer_in_documents']:19.2f}{answered}")
    print(f"restatements vs documents: BLEU-4 {result['restatement']['bleu4']:.3f}, "
          f"ROUGE-L {result['restatement']['rouge_l']:.3f}")
    print(f"wrote {args.out}/result.json and restated_qa.png")


if __name__ == "__main__":
    main()
