"""Latency of GMSA against the uncompressed prompt, measured side by side in one run.

For the first N questions of nq_dev (20 documents, ~2,100 tokens each), on the same model,
machine and inputs, it times:
  - uncompressed: time to first token (TTFT) and end-to-end answer time, documents as text;
  - GMSA at each rate, uncached (compression included) and with soft tokens precomputed;
  - GMSA within each budget (`--budgets`, the planner: the most relevant documents whole, the rest as soft
    tokens), uncached (MiniLM ranking, planning and compression included) and with soft tokens precomputed;
  - the break-even size: one document of n tokens as text against compressed at the highest rate (TTFT);
  - compression throughput (context tokens per second);
  - peak memory (max RSS) of a process running the plain base model vs one running GMSA.
It prints ratios, and writes a JSON result and a plot.

    python benchmarks/latency.py --questions 20 --out results/latency
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from gmsa import GMSA
from gmsa.answering import planned_contexts
from gmsa.cli.arguments import positive_int
from gmsa.config import BASE_DTYPES
from gmsa.data import read_qa

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "qa" / "nq_dev.jsonl"


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_probe(kind: str, data: Path) -> None:
    """Run in a child process: load one model, answer one question, print the peak RSS."""
    example = read_qa(data, limit=1)[0]
    if kind == "base":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from gmsa.backbone.loading import resolve_base_path
        from gmsa.config import EMBEDDED_BASE

        path = resolve_base_path(EMBEDDED_BASE)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        text = "\n".join(example.documents) + "\n" + example.question
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)
        with torch.no_grad():
            model.generate(**ids, max_new_tokens=16, do_sample=False)
    else:
        model = GMSA.from_pretrained(device="cpu")
        model.answer(example.question, example.documents, rate=8, max_new_tokens=16)
    print(json.dumps({"peak_rss_mb": peak_rss_mb()}))


def measure_memory(data: Path) -> dict[str, float]:
    result = {}
    for kind in ("base", "gmsa"):
        out = subprocess.run([sys.executable, __file__, "--memory-probe", kind, "--data", str(data)],
                             capture_output=True, text=True, check=True)
        result[kind] = json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mb"]
    return result


def measure_startup(checkpoint: str | None) -> dict[str, float]:
    """Seconds to load GMSA in a fresh process: cold (empty cache: the GGUF is dequantised and converted)
    and warm (the converted safetensors copy is read)."""
    import os
    import tempfile

    code = ("import time, sys; t = time.perf_counter(); from gmsa import GMSA; "
            "GMSA.from_pretrained(sys.argv[1] if len(sys.argv) > 1 else None, device='cpu'); "
            "print(time.perf_counter() - t)")
    result = {}
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "GMSA_HOME": home}
        for kind in ("cold", "warm"):
            out = subprocess.run([sys.executable, "-c", code, *([checkpoint] if checkpoint else [])],
                                 capture_output=True, text=True, check=True, env=env)
            result[kind] = float(out.stdout.strip().splitlines()[-1])
    return result


def run(args: argparse.Namespace) -> dict:
    examples = read_qa(args.data, limit=args.questions)
    model = GMSA.from_pretrained(args.checkpoint, device=args.device, dtype=args.dtype)
    torch.set_num_threads(torch.get_num_threads())
    rates = args.rates
    # End-to-end = exactly `answer_tokens` generated tokens for every system, so all do the same work
    # (an untrained checkpoint would otherwise be timed on answers of another length).
    settings = model.config.generation.replace(max_new_tokens=args.answer_tokens, min_new_tokens=args.answer_tokens)
    first_token = settings.replace(max_new_tokens=1, min_new_tokens=0)
    rows = []
    # one warm-up so lazy initialisation is not timed
    model.answer_questions(["warm up"], [[examples[0].documents[0]]], max_new_tokens=2)
    for example in tqdm(examples, desc="questions"):
        question = [example.question]
        tokens = sum(len(ids) for ids in model.tokenize_contexts(example.documents))
        row = {"context_tokens": tokens}
        _, row["uncompressed_ttft"] = timed(lambda: model.answer_questions(question, [example.documents], first_token))
        _, row["uncompressed_e2e"] = timed(lambda: model.answer_questions(question, [example.documents], settings))
        for rate in rates:
            soft, compress_s = timed(lambda: model.compress(example.documents, rate))
            _, ttft = timed(lambda: model.answer_questions(question, [soft], first_token))
            _, e2e = timed(lambda: model.answer_questions(question, [soft], settings))
            row[f"r{rate}"] = {
                "compress": compress_s, "cached_ttft": ttft, "cached_e2e": e2e,
                "uncached_ttft": compress_s + ttft, "uncached_e2e": compress_s + e2e,
                "soft_tokens": sum(int(s.shape[0]) for s in soft),
            }
        for budget in args.budgets:
            chosen, plan_s = timed(lambda: model.plan(example.question, example.documents, budget))
            contexts, compress_s = timed(lambda: planned_contexts(model, example.documents, chosen))
            _, ttft = timed(lambda: model.answer_questions(question, [contexts], first_token))
            _, e2e = timed(lambda: model.answer_questions(question, [contexts], settings))
            row[f"b{budget:g}"] = {
                "compress": plan_s + compress_s, "cached_ttft": ttft, "cached_e2e": e2e,
                "uncached_ttft": plan_s + compress_s + ttft, "uncached_e2e": plan_s + compress_s + e2e,
                "soft_tokens": chosen.soft_tokens, "text_tokens": chosen.text_tokens, "plan_s": plan_s,
            }
        rows.append(row)

    def mean(values):
        return statistics.fmean(values)

    base_ttft = mean([r["uncompressed_ttft"] for r in rows])
    base_e2e = mean([r["uncompressed_e2e"] for r in rows])
    layers = model.base.config.num_hidden_layers
    summary = {"uncompressed": {"ttft_s": base_ttft, "e2e_s": base_e2e}, "rates": {}}
    for rate in [*rates, *(f"budget {b:g}" for b in args.budgets)]:
        per = [r[f"r{rate}" if isinstance(rate, int) else f"b{rate.split()[1]}"] for r in rows]
        bound = 1 / (model.config.encoder_layers / layers + 1 / rate) if isinstance(rate, int) else float("nan")
        summary["rates"][rate] = {
            "uncached_ttft_s": mean([p["uncached_ttft"] for p in per]),
            "uncached_e2e_s": mean([p["uncached_e2e"] for p in per]),
            "cached_ttft_s": mean([p["cached_ttft"] for p in per]),
            "cached_e2e_s": mean([p["cached_e2e"] for p in per]),
            "compress_tokens_per_s": sum(r["context_tokens"] for r in rows) / sum(p["compress"] for p in per),
            "mean_soft_tokens": mean([p["soft_tokens"] for p in per]),
            "mean_text_tokens": mean([p.get("text_tokens", 0) for p in per]),
            "ttft_bound": bound,
        }
        s = summary["rates"][rate]
        s["speedup_uncached_ttft"] = base_ttft / s["uncached_ttft_s"]
        s["speedup_uncached_e2e"] = base_e2e / s["uncached_e2e_s"]
        s["speedup_cached_ttft"] = base_ttft / s["cached_ttft_s"]
        s["speedup_cached_e2e"] = base_e2e / s["cached_e2e_s"]
        s["uncached_ttft_vs_bound"] = s["speedup_uncached_ttft"] / bound
    return {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "threads": torch.get_num_threads(), "device": str(model.device),
                    "dtype": str(model.base.dtype)},
        "questions": len(rows),
        "mean_context_tokens": mean([r["context_tokens"] for r in rows]),
        "encoder_layers": model.config.encoder_layers,
        "base_layers": layers,
        "answer_tokens": args.answer_tokens,
        "summary": summary,
        "break_even": break_even(model, examples, args.break_even),
        "per_question": rows,
    }


def break_even(model: GMSA, examples: list, sizes: list[int]) -> list[dict]:
    """TTFT of one document of n tokens (the start of the longest document) as text, and compressed at the
    highest rate (compression included), for each n: below the break-even size text is faster."""
    longest = max((d for e in examples for d in e.documents), key=len)
    ids = model.tokenize_contexts([longest])[0]
    rate, first_token = max(model.config.rates), model.config.generation.replace(max_new_tokens=1)
    points = []
    for n in [n for n in sizes if n <= len(ids)]:
        text = model.tokenizer.decode(ids[:n])
        text_s = min(timed(lambda: model.answer_questions(["?"], [[text]], first_token))[1] for _ in range(3))
        soft_s = min(timed(lambda: model.answer_questions(["?"], [model.compress([text], rate)], first_token))[1]
                     for _ in range(3))
        points.append({"tokens": n, "text_ttft_s": text_s, "soft_ttft_s": soft_s, "rate": rate})
    return points


def report(result: dict) -> str:
    s = result["summary"]
    lines = [
        f"{result['questions']} questions, {result['mean_context_tokens']:.0f} context tokens on average, "
        f"device {result['machine']['device']}, {result['machine']['threads']} threads",
        f"uncompressed: TTFT {s['uncompressed']['ttft_s']:.2f} s, end-to-end {s['uncompressed']['e2e_s']:.2f} s "
        f"(end-to-end = {result['answer_tokens']} generated tokens for every system)",
        "rate | soft tok | compress tok/s | TTFT uncached (x, bound, % of bound) | e2e uncached (x) | "
        "TTFT cached (x) | e2e cached (x)",
    ]
    for rate, r in s["rates"].items():
        text = f" + {r['mean_text_tokens']:.0f} text" if r["mean_text_tokens"] else ""
        bound = (f", {r['ttft_bound']:.2f}x, {100 * r['uncached_ttft_vs_bound']:.0f}%"
                 if r["ttft_bound"] == r["ttft_bound"] else "")  # a budget has no bound (NaN)
        lines.append(
            f"{rate:>4} | {r['mean_soft_tokens']:8.0f}{text} | {r['compress_tokens_per_s']:14.0f} | "
            f"{r['uncached_ttft_s']:.2f} s ({r['speedup_uncached_ttft']:.2f}x{bound}) | "
            f"{r['uncached_e2e_s']:.2f} s ({r['speedup_uncached_e2e']:.2f}x) | "
            f"{r['cached_ttft_s']:.2f} s ({r['speedup_cached_ttft']:.2f}x) | "
            f"{r['cached_e2e_s']:.2f} s ({r['speedup_cached_e2e']:.2f}x)"
        )
    for point in result.get("break_even", []):
        lines.append(f"one document of {point['tokens']} tokens: TTFT as text {point['text_ttft_s']:.3f} s, "
                     f"compressed at rate {point['rate']} {point['soft_ttft_s']:.3f} s")
    if "startup" in result:
        lines.append(f"load time in a fresh process: cold {result['startup']['cold']:.1f} s "
                     f"(GGUF dequantised, converted copy cached), warm {result['startup']['warm']:.1f} s")
    if "memory" in result:
        m = result["memory"]
        lines.append(f"peak RSS: plain base model {m['base']:.0f} MB, GMSA {m['gmsa']:.0f} MB "
                     f"({m['gmsa'] / m['base']:.2f}x)")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = list(result["summary"]["rates"])
    r = result["summary"]["rates"]
    series = {
        "TTFT, uncached": [r[k]["speedup_uncached_ttft"] for k in rates],
        "TTFT, cached": [r[k]["speedup_cached_ttft"] for k in rates],
        "end-to-end, uncached": [r[k]["speedup_uncached_e2e"] for k in rates],
        "end-to-end, cached": [r[k]["speedup_cached_e2e"] for k in rates],
    }
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.2
    for i, (label, values) in enumerate(series.items()):
        ax.bar([x + (i - 1.5) * width for x in range(len(rates))], values, width, label=label)
    ax.plot(range(len(rates)), [r[k]["ttft_bound"] for k in rates], "k--o", label="TTFT bound 1/(k/L + 1/r)")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks(range(len(rates)), [f"rate {k}" if isinstance(k, int) else k for k in rates])
    ax.set_ylabel("speed-up vs uncompressed prompt (x)")
    ax.set_title(f"GMSA latency, {result['questions']} NQ questions, "
                 f"{result['mean_context_tokens']:.0f} tokens, {result['machine']['device']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--questions", type=positive_int, default=20)
    parser.add_argument("--rates", type=positive_int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--budgets", type=float, nargs="*", default=[0.25],
                        help="budgets (fractions of the documents' tokens) timed through the planner")
    parser.add_argument("--break-even", type=positive_int, nargs="*", default=[16, 32, 64, 128, 256],
                        help="document sizes (tokens) timed as text and compressed")
    parser.add_argument("--answer-tokens", type=positive_int, default=16,
                        help="tokens generated in the end-to-end timing")
    parser.add_argument("--checkpoint", help="GMSA checkpoint (default: the bundled default)")
    parser.add_argument("--device")
    parser.add_argument("--dtype", choices=BASE_DTYPES,
                        help="the base model's weights (default: bfloat16 on CUDA, else float32)")
    parser.add_argument("--out", type=Path, default=Path("results/latency"))
    parser.add_argument("--skip-memory", action="store_true", help="skip the peak-memory and start-up probes")
    parser.add_argument("--memory-probe", choices=["base", "gmsa"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        memory_probe(args.memory_probe, args.data)
        return
    result = run(args)
    if not args.skip_memory:
        result["memory"] = measure_memory(args.data)
        result["startup"] = measure_startup(args.checkpoint)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latency.json").write_text(json.dumps(result, indent=2))
    plot(result, args.out / "latency.png")
    print(report(result))
    print(f"wrote {args.out / 'latency.json'} and {args.out / 'latency.png'}")


if __name__ == "__main__":
    main()
