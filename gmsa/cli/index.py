"""`gmsa index`: compress a corpus once, at ingest, into a soft-token store (`gmsa.store`).

    gmsa index ../shared/data/ae/wiki_paragraphs.jsonl --out corpus.gmsa
    torchrun --nproc_per_node 2 -m gmsa.cli.index corpus.jsonl --out corpus.gmsa   # one share per process

Then `GMSACompressor(store="corpus.gmsa")` / `ChatGMSA(store=...)` (and the LlamaIndex classes) read soft tokens
from it: a chain over the corpus never runs the encoder. A killed run resumes where it stopped when run again.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from gmsa.cli.arguments import positive_int
from gmsa.config import BASE_DTYPES
from gmsa.data import read_documents
from gmsa.errors import GMSAError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("corpus", nargs="+", type=Path, metavar="PATH",
                        help="JSONL (each record's text, or a QA record's documents), text/markdown files or folders "
                             "(one document per file)")
    parser.add_argument("--out", type=Path, required=True, help="the store folder (new, or one to continue)")
    parser.add_argument("--checkpoint", help="a GMSA checkpoint folder (default: the bundled default model)")
    parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when available; under torchrun each "
                                         "process takes the GPU of its LOCAL_RANK)")
    parser.add_argument("--dtype", choices=BASE_DTYPES, help="the base model's weights, as the serving model loads "
                                                             "them (soft tokens are keyed by it)")
    parser.add_argument("--store-dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16",
                        help="how soft tokens are kept (default bfloat16: 2 bytes a value)")
    parser.add_argument("--shard-texts", type=positive_int, default=512, help="texts per shard file")
    parser.add_argument("--verify", action="store_true",
                        help="then check every shard of the store against its sha256 digest (reads it all)")


def run(args: argparse.Namespace) -> int:
    from gmsa.model import GMSA
    from gmsa.store import ingest

    texts = [text for path in args.corpus for text in read_documents(path)]
    device = args.device
    if device is None and "LOCAL_RANK" in os.environ:
        import torch

        device = f"cuda:{os.environ['LOCAL_RANK']}" if torch.cuda.is_available() else "cpu"
    start = time.perf_counter()
    model = GMSA.from_pretrained(args.checkpoint, device=device, dtype=args.dtype)
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    store = ingest(model, texts, args.out, dtype=args.store_dtype, shard_texts=args.shard_texts)
    seconds = time.perf_counter() - start
    shards = sorted(args.out.glob("shard-*.safetensors"))
    size = sum(p.stat().st_size for p in shards)
    print(f"store:  {args.out} ({len(store)} entries: texts x rates {store.rates}, {len(shards)} shards, "
          f"{size / 2**20:.1f} MiB, {store.manifest['dtype']})")
    print(f"time:   {seconds:.1f} s for {len(texts)} texts on {model.device} (model load {loaded:.1f} s)")
    if args.verify:
        from gmsa.store import check_shard

        problems = [f"{shard.name}: {problem}" for shard in shards if (problem := check_shard(shard))]
        if problems:
            raise GMSAError(f"{len(problems)} damaged shard(s), delete them and run gmsa index again: "
                            + "; ".join(problems))
        print(f"verify: {len(shards)} shards match their digests")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("index", help="compress a corpus at ingest into a soft-token store")
    add_arguments(parser)
    parser.set_defaults(run=run)


def main(argv: list[str] | None = None) -> int:
    """`python -m gmsa.cli.index` (what torchrun and accelerate launch run): `gmsa index` alone."""
    from gmsa.cli.ask import main as gmsa_main

    return gmsa_main(["index", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
