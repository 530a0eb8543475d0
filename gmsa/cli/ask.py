"""`gmsa ask`: answer a question over documents through GMSA compression."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

from gmsa.cli.arguments import budget_argument, positive_int
from gmsa.config import BASE_DTYPES
from gmsa.data import iter_jsonl, parse_qa, read_documents
from gmsa.errors import GMSAError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--question", help="the question; defaults to the question of --record in a QA JSONL file")
    parser.add_argument("--documents", nargs="+", required=True, type=Path, metavar="FILE",
                        help="text/markdown files or folders (one document each), or JSONL in the QA or "
                             "reference {input, prompt, answer} schema")
    parser.add_argument("--record", type=positive_int, metavar="N",
                        help="use only record N (1-based line number) of a JSONL file, and its question")
    parser.add_argument("--budget", type=budget_argument, metavar="B",
                        help="decoder positions the documents may take: a fraction of their tokens in (0, 1], a "
                             "number of positions, or 'auto' (the default): the most relevant whole, the rest as "
                             "soft tokens at rates that follow relevance")
    parser.add_argument("--rate", type=positive_int,
                        help="compress every document at this one rate instead of a budget")
    parser.add_argument("--checkpoint", help="a GMSA checkpoint folder (default: the bundled default model)")
    parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    parser.add_argument("--dtype", choices=BASE_DTYPES, help="the base model's weights (default: bfloat16 on CUDA, "
                                                             "float32 on the CPU)")
    parser.add_argument("--max-new-tokens", type=positive_int, help="longest answer, in tokens")
    parser.add_argument("--top-n", type=positive_int, metavar="N",
                        help="read only the N documents closest to the question (MiniLM), the most relevant last")
    parser.add_argument("--extractive", action="store_true",
                        help="the answer quotes the documents (constrained decoding, for factoid questions)")


def _documents_and_question(args: argparse.Namespace) -> tuple[list[str], str | None, list[str]]:
    if args.record is None:
        return [doc for path in args.documents for doc in read_documents(path)], args.question, []
    if len(args.documents) != 1 or args.documents[0].suffix != ".jsonl":
        raise GMSAError("--record needs exactly one JSONL file in --documents")
    path = args.documents[0]
    for line, record in iter_jsonl(path):
        if line == args.record:
            example = parse_qa(record, path, line)
            return example.documents, args.question or example.question, example.answers
    raise GMSAError(f"{path} has no record on line {args.record}")


def run(args: argparse.Namespace) -> int:
    from gmsa.model import GMSA  # heavy import, after argument errors

    documents, question, references = _documents_and_question(args)
    if not question:
        raise GMSAError("no question: pass --question (or --record N of a QA JSONL file)")
    start = time.perf_counter()
    model = GMSA.from_pretrained(args.checkpoint, device=args.device, dtype=args.dtype)
    loaded = time.perf_counter() - start
    found = len(documents)
    if args.top_n is not None:
        from gmsa.similarity import embedder_device, most_relevant

        documents = most_relevant([question], [documents], args.top_n, embedder_device(model.device))[0]
    if args.rate is not None and args.budget is not None:
        raise GMSAError(f"pass --rate ({args.rate}) or --budget ({args.budget}), not both")
    answer = model.answer(question, documents, args.rate, args.budget, extractive=args.extractive,
                          max_new_tokens=args.max_new_tokens)
    print(f"question: {question}")
    print(f"answer:   {answer.text}")
    if references:
        print(f"expected: {' | '.join(references)}")
    sent = (answer.plan.summary() if answer.plan else
            f"{answer.context_tokens} tokens -> {answer.soft_tokens} soft tokens (rate {answer.rate})")
    print(f"context:  {_read(len(documents), found, args.top_n)}, {sent} ({answer.compression:.1f}x)")
    print(
        f"time:     compress {answer.compress_seconds:.2f} s + generate {answer.generate_seconds:.2f} s "
        f"(model load {loaded:.1f} s, device {model.device})"
    )
    return 0


def _read(kept: int, found: int, top_n: int | None) -> str:
    return f"{found} documents" if top_n is None else f"{kept} of {found} documents (MiniLM top {top_n})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gmsa", description="GMSA soft-prompt context compression")
    commands = parser.add_subparsers(dest="command", required=True)
    ask = commands.add_parser("ask", help="answer a question over documents through GMSA")
    add_arguments(ask)
    ask.set_defaults(run=run)
    # Other commands register through an entry point (group "gmsa.commands", each a function that adds its
    # sub-parser): `gmsa index` (gmsa.cli.index, which calls this main under torchrun) and the optional layers'
    # (`gmsa rag`, from gmsa_integrations), so this module imports none of them.
    for command in entry_points(group="gmsa.commands"):
        command.load()(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        try:
            return args.run(args)
        except ImportError as error:
            raise GMSAError(f"`gmsa {args.command}` needs an optional package: {error}") from None
    except GMSAError as error:
        print(f"gmsa: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
