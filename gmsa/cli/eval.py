"""`gmsa-eval`: reconstruction and QA quality of a GMSA checkpoint, with baselines, as JSON + Markdown.

    gmsa-eval reconstruction --texts ../shared/data/ae/wiki_paragraphs.jsonl --last 200 --limit 100 --rates 4 8 16
    gmsa-eval qa --data ../shared/data/qa/nq_dev.jsonl --limit 100 --documents 20 \\
                 --systems gmsa@4 gmsa@8 gmsa@16 uncompressed closed-book
    gmsa-eval qa ... --systems gmsa@4 gmsa@4+extractive   # +extractive: answers must quote the documents
    gmsa-eval qa ... --systems gmsa@4 truncated@4 selective@4   # plain text cut to GMSA's budget at rate 4
    gmsa-eval qa ... --systems budget@0.25 rerank-text@0.25       # a quarter of the tokens: planned, or text only
    gmsa-eval table results/eval-*/result.json          # merge results into one Markdown table
    gmsa-eval compare base/result.json new/result.json:gmsa@4   # paired differences, question by question
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from gmsa.cli.arguments import non_negative_int, positive_int
from gmsa.config import BASE_DTYPES
from gmsa.errors import GMSAError


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="GMSA checkpoint folder (default: the bundled default model)")
    parser.add_argument("--label", help="a name for this checkpoint in tables (e.g. 'keft baseline')")
    parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    parser.add_argument("--dtype", choices=BASE_DTYPES, help="the base model's weights (default: bfloat16 on CUDA, "
                                                             "float32 on the CPU)")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--out", type=Path, required=True, help="folder for result.json and table.md")


def _load(args: argparse.Namespace):
    from gmsa.model import GMSA

    return GMSA.from_pretrained(args.checkpoint, device=args.device, dtype=args.dtype)


def run_reconstruction(args: argparse.Namespace) -> dict:
    from gmsa.data import read_texts
    from gmsa.evaluation.reconstruction import evaluate_reconstruction

    texts = read_texts(args.texts)
    if args.last:
        texts = texts[-args.last:]
    texts = texts[: args.limit]
    model = _load(args)
    if args.max_text_tokens:
        # The same cut as training (`max_text_tokens`): score what the model was asked to restate.
        ids = model.tokenize_contexts(texts)
        texts = [model.tokenizer.decode(i[: args.max_text_tokens]) for i in ids]
    result = evaluate_reconstruction(model, texts, args.rates or list(model.config.rates), not args.no_similarity,
                                     args.batch_size)
    return {"task": "reconstruction", "source": str(args.texts), **result}


def run_qa(args: argparse.Namespace) -> dict:
    from gmsa.data import read_qa
    from gmsa.evaluation.qa import System, check_rerank, evaluate_qa

    try:
        systems = [System.parse(s) for s in args.systems]
        names = [system.name for system in systems]
        if len(set(names)) != len(names):
            raise ValueError(f"--systems names a system twice: {sorted({n for n in names if names.count(n) > 1})}")
        check_rerank(args.rerank, args.documents)  # before the model loads
    except ValueError as error:
        raise GMSAError(str(error)) from None
    examples = read_qa(args.data, limit=args.skip + args.limit)[args.skip:]
    if not examples:
        raise GMSAError(f"{args.data}: no questions after the first --skip {args.skip}: lower --skip")
    unanswerable = next((e.where for e in examples if not e.answers), None)
    if unanswerable:  # a question without a reference answer cannot be scored
        raise GMSAError(f"{unanswerable}: no reference answers to score against")
    model = _load(args)
    result = evaluate_qa(model, examples, systems, args.documents, args.batch_size, args.max_new_tokens, args.rerank,
                         args.rerank_order)
    return {"task": "qa", "source": str(args.data), **result}


def run_compare(specs: list[str]) -> str:
    from gmsa.evaluation.compare import compare_table, load_run

    runs = [load_run(spec) for spec in specs]
    try:
        return compare_table(runs)
    except ValueError as error:
        raise GMSAError(f"{error}: {', '.join(specs)}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gmsa-eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    tasks = parser.add_subparsers(dest="task", required=True)
    recon = tasks.add_parser("reconstruction", help="BLEU-4, ROUGE-L, prefix EM, MiniLM similarity per rate")
    recon.add_argument("--texts", type=Path, required=True, help="held-out texts (JSONL with 'text', or text files)")
    recon.add_argument("--last", type=positive_int, help="use the last N texts (the recipe's held-out tail)")
    recon.add_argument("--limit", type=positive_int, default=100)
    recon.add_argument("--max-text-tokens", type=non_negative_int, default=128,
                       help="cut texts as training did (0: no cut)")
    recon.add_argument("--rates", type=positive_int, nargs="+", help="default: the checkpoint's rates")
    recon.add_argument("--no-similarity", action="store_true", help="skip the MiniLM similarity")
    _common(recon)
    qa = tasks.add_parser("qa", help="EM, F1, accuracy for GMSA at each rate and the baselines")
    qa.add_argument("--data", type=Path, required=True, help="QA or reference-schema JSONL")
    qa.add_argument("--limit", type=positive_int, default=100, help="first N questions")
    qa.add_argument("--skip", type=non_negative_int, default=0,
                    help="leave out the first N questions (a tuning split apart from the ones a report reads)")
    qa.add_argument("--documents", type=positive_int, default=20, help="documents per question (gold ones kept)")
    qa.add_argument("--rerank", type=positive_int, metavar="N",
                    help="every system reads only the N documents closest to the question (MiniLM)")
    qa.add_argument("--rerank-order", choices=("last", "first"), default="last",
                    help="with --rerank: the most relevant document last (next to the question) or first")
    qa.add_argument("--systems", nargs="+", default=["gmsa@4", "gmsa@8", "gmsa@16", "uncompressed", "closed-book"],
                    help="gmsa@RATE, uncompressed, closed-book, plain text cut to GMSA's budget at RATE: "
                         "truncated@RATE (first tokens), selective@RATE (least predictable tokens), or within a "
                         "fraction F of the documents' tokens: budget@F (the planner: the most relevant whole, the "
                         "rest as soft tokens), rerank-text@F (text only, the most relevant whole, the last cut); "
                         "all but closed-book may end in +extractive (answers quote the documents)")
    qa.add_argument("--max-new-tokens", type=positive_int, default=32)
    _common(qa)
    table = tasks.add_parser("table", help="merge result.json files into one Markdown table")
    table.add_argument("results", nargs="+", type=Path)
    compare = tasks.add_parser("compare", help="paired differences of QA runs on the questions they share")
    compare.add_argument("results", nargs="+", metavar="RESULT[:SYSTEM]",
                         help="QA result.json files, the first the reference; name the system where a file has several")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from gmsa.evaluation.report import markdown_table, markdown_tables, prepare_out_dir, read_result, write_result

    try:
        if args.task == "table":
            print(markdown_tables([read_result(path, table=True) for path in args.results]))
            return 0
        if args.task == "compare":
            if len(args.results) < 2:
                raise GMSAError("compare needs two runs or more: the reference first")
            print(run_compare(args.results))
            return 0
        prepare_out_dir(args.out)  # before the work: its results must have somewhere to go
        result = run_reconstruction(args) if args.task == "reconstruction" else run_qa(args)
    except GMSAError as error:
        print(f"gmsa-eval: error: {error}", file=sys.stderr)
        return 2
    result.update(checkpoint=args.checkpoint or "bundled default", label=args.label)
    json_path, table_path = write_result(result, args.out)
    print(markdown_table([result]))
    print(f"\nwrote {json_path} and {table_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
