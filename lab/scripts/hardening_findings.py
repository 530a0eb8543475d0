"""Re-run every finding of the hardening issue (#36) on a tiny random model and print what each input does now,
as a Markdown table (finding | input | outcome), for the issue's closing note.

    .venv/bin/python lab/scripts/hardening_findings.py > lab/results/hardening/findings.md
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from tiny import build_tiny_model  # noqa: E402

from gmsa import GMSA, GMSAConfig  # noqa: E402
from gmsa_integrations.cache import SoftTokenCache, cache_key  # noqa: E402
from gmsa_integrations.runtime import GMSARuntime  # noqa: E402

BIN = Path(sys.executable).parent
ROWS: list[tuple[str, str, str]] = []


def outcome(action) -> str:
    try:
        result = action()
    except Exception as error:  # the point: what each input raises now
        return f"{type(error).__name__}: {str(error).splitlines()[0][:150]}"
    return f"returns {result!s:.150}"


def cli(*argv: str) -> str:
    done = subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True)
    lines = [line for line in done.stderr.splitlines() if "error" in line.lower()] or done.stdout.splitlines()[-1:]
    return f"exit {done.returncode}: {lines[0][:150] if lines else ''}"


def row(finding: str, given: str, result: str) -> None:
    ROWS.append((finding, given, result.replace("|", "/")))


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="gmsa-findings-"))
    base = build_tiny_model(work / "base")
    config = GMSAConfig(base_model=str(base), encoder_layers=2, lora_rank=4, lora_alpha=8, rates=(2, 4),
                        segment_tokens=16)
    model = GMSA.from_base(str(base), config, device="cpu")
    docs = ["Paris is the capital of France.", "Berlin is the capital of Germany."]

    folder = work / "project"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    row("save_pretrained deletes a folder's files", "save_pretrained('project/') holding notes.txt",
        outcome(lambda: model.save_pretrained(folder)) + f"; notes.txt kept: {(folder / 'notes.txt').exists()}")
    file = work / "weights.bin"
    file.write_text("precious")
    row("save_pretrained replaces a file", "save_pretrained('weights.bin') (a file)",
        outcome(lambda: model.save_pretrained(file)) + f"; file kept: {file.read_text() == 'precious'}")

    ae, qa = work / "ae.jsonl", work / "qa.jsonl"
    ae.write_text("".join(json.dumps({"text": f"{d} ({i})"}) + "\n" for i in range(6) for d in docs))
    qa.write_text("".join(json.dumps({"question": f"What is in text {i}?", "answers": ["Paris"],
                                      "documents": docs}) + "\n" for i in range(12)))

    def recipe(out: str, name: str | None = None, **extra) -> str:
        fields = {"train_data": [str(ae)], "out_dir": str(work / out), "batch_size": 2, "eval_samples": 2,
                  "eval_every": 3, "save_every": 3, "log_every": 1, "max_text_tokens": 24,
                  "model": {"base_model": str(base), "encoder_layers": 2, "lora_rank": 4, "lora_alpha": 8,
                            "rates": [2, 4], "segment_tokens": 16}, **extra}
        path = work / f"{name or out}.yaml"
        path.write_text(json.dumps(fields))
        return str(path)

    run = recipe("run")
    cli("gmsa-train", "ae", "--config", run, "steps=3")
    row("gmsa-train over an existing run", "gmsa-train ae --config R (again, same out_dir)",
        cli("gmsa-train", "ae", "--config", run, "steps=3"))
    keft = recipe("run", "keft", train_data=[str(qa)], stage="keft")
    row("KEFT out_dir = its --from run", "gmsa-train keft --from run/final, out_dir run",
        cli("gmsa-train", "keft", "--config", keft, "--from", str(work / "run" / "final"), "--overwrite",
            "model.keft_mode=lora"))
    row("grad_clip: -1 accepted", "gmsa-train ae grad_clip=-1",
        cli("gmsa-train", "ae", "--config", run, "grad_clip=-1"))
    if not torch.cuda.is_available():
        row("device: cuda trains on the CPU", "recipe device: cuda (no GPU)",
            cli("gmsa-train", "ae", "--config", recipe("cuda", device="cuda"), "steps=1"))
        row("--device cuda: a traceback", "gmsa ask --device cuda (no GPU)",
            cli("gmsa", "ask", "--question", "q?", "--documents", str(ae), "--device", "cuda"))
    row("--resume accepts a changed recipe", "gmsa-train ae --resume lr=1e-3",
        cli("gmsa-train", "ae", "--config", run, "steps=3", "lr=1e-3", "--resume"))
    (work / "run" / "latest").write_text("../elsewhere\n")
    row("latest may lead outside out_dir", "latest holding '../elsewhere', --resume",
        cli("gmsa-train", "ae", "--config", run, "steps=3", "--resume"))
    row("answer(q, 'a string')", "model.answer('Where?', 'Paris is in France.')",
        outcome(lambda: model.answer("Where?", "Paris is in France.")))
    row("answer(None, docs)", "model.answer(None, docs)", outcome(lambda: model.answer(None, docs)))

    saved = model.save_pretrained(work / "ckpt")
    weights = saved / "gmsa_weights.safetensors"
    good = weights.read_bytes()
    flipped = bytearray(good)
    flipped[-3] ^= 0x40
    weights.write_bytes(bytes(flipped))
    row("flipped bytes in checkpoint weights", "one byte of gmsa_weights.safetensors flipped",
        outcome(lambda: GMSA.from_pretrained(saved)))
    weights.write_bytes(good)
    tensors = load_file(weights)
    first = sorted(tensors)[0]
    tensors[first][0] = float("nan")
    save_file(tensors, weights, metadata={"format": "pt"})
    row("NaN in checkpoint weights", "a NaN written into a weight (file without a digest)",
        outcome(lambda: GMSA.from_pretrained(saved)))
    weights.write_bytes(good)
    meta = json.loads((saved / "gmsa_config.json").read_text())
    meta["config"]["rates"] = [2, 4, 8]
    (saved / "gmsa_config.json").write_text(json.dumps(meta))
    row("config rates edited", "gmsa_config.json rates [2, 4] -> [2, 4, 8]",
        outcome(lambda: GMSA.from_pretrained(saved)))
    (saved / "gmsa_config.json").write_text("{broken")
    row("corrupt checkpoint file", "gmsa_config.json holding '{broken'", outcome(lambda: GMSA.from_pretrained(saved)))
    model.save_pretrained(saved)

    cache_dir = work / "cache"
    runtime = GMSARuntime(str(saved), device="cpu", cache=SoftTokenCache(directory=cache_dir))
    expected = runtime.compress([docs[0]], 2)[0]
    entry = cache_dir / f"{cache_key(runtime.fingerprint, 2, docs[0])}.safetensors"
    for label, damage in [
        ("flipped bytes in a cache file", lambda: entry.write_bytes(entry.read_bytes()[:-3] + b"\x00\x00\x00")),
        ("NaN in a cache tensor", lambda: save_file({"soft_tokens": torch.full_like(expected, float("nan"))}, entry,
                                                    metadata={"key": entry.stem})),
        ("empty tensor under a document's key", lambda: save_file({"soft_tokens": torch.zeros(0, expected.shape[1])},
                                                                  entry, metadata={"key": entry.stem})),
        ("cache entry of the wrong shape", lambda: save_file({"soft_tokens": expected[:-1].contiguous()}, entry,
                                                             metadata={"key": entry.stem})),
    ]:
        damage()
        runtime.cache.clear()
        same = torch.equal(runtime.compress([docs[0]], 2)[0], expected)
        row(label, "damaged file, then runtime.compress([doc], 2)",
            f"recomputed, one warning; same soft tokens: {same}")
    taken = work / "taken.txt"
    taken.write_text("x")
    row("unwritable cache folder", "SoftTokenCache(directory=<a file>)",
        outcome(lambda: SoftTokenCache(directory=taken)))

    long_text = " ".join(["word"] * 2100)  # 6,300 tokens: 3,150 soft tokens at rate 2 on a 2,048-position decoder
    row("a document past the decoder's positions", "answer(q, [6,300-token doc], rate=2) on 2,048 positions",
        outcome(lambda: model.answer("Where?", [long_text], rate=2)))
    row("--limit -5 slices", "gmsa-eval qa --limit -5", cli("gmsa-eval", "qa", "--data", str(qa), "--limit", "-5",
                                                           "--out", str(work / "out")))
    row("gmsa rag --top-k -1", "gmsa rag --top-k -1", cli("gmsa", "rag", "--question", "q?", "--top-k", "-1"))
    row("gmsa-eval --batch-size 0", "gmsa-eval qa --batch-size 0",
        cli("gmsa-eval", "qa", "--data", str(qa), "--batch-size", "0", "--out", str(work / "out")))
    row("gmsa-eval --out an existing file", "gmsa-eval qa --out taken.txt",
        cli("gmsa-eval", "qa", "--checkpoint", str(saved), "--data", str(qa), "--out", str(taken)))
    latin = work / "latin1.jsonl"
    latin.write_bytes(qa.read_bytes().splitlines(keepends=True)[0] + b'{"question": "caf\xe9?"}\n')
    row("non-UTF-8 input", "gmsa-eval qa --data latin1.jsonl (byte 0xe9, line 2)",
        cli("gmsa-eval", "qa", "--checkpoint", str(saved), "--data", str(latin), "--out", str(work / "out")))
    row("train_data: []", "recipe train_data: []", cli("gmsa-train", "ae", "--config", recipe("none", train_data=[])))
    empty = work / "empty.jsonl"
    empty.write_text("")
    row("an empty data file", "train_data: [empty.jsonl]",
        cli("gmsa-train", "ae", "--config", recipe("empty", train_data=[str(empty)])))
    blank = work / "blank.jsonl"
    blank.write_text(json.dumps({"question": "q?", "answers": [""], "documents": docs}) + "\n")
    row("all answers empty", "KEFT on records with answers ['']",
        cli("gmsa-train", "keft", "--config", recipe("blank", train_data=[str(blank)], stage="keft"),
            "model.keft_mode=lora"))
    for key, value in [("warmup_ratio", "abc"), ("seed", "'1'"), ("model.lora_dropout", "x"),
                       ("model.generation.temperature", "hot")]:
        row(f"a string for {key}", f"{key}={value}", cli("gmsa-train", "ae", "--config", run, f"{key}={value}",
                                                         "--overwrite"))
    yaml_lr = work / "lr.yaml"
    yaml_lr.write_text("stage: ae\nlr: 1e-3\n" + "\n".join(f"{k}: {json.dumps(v)}" for k, v in
                                                           json.loads(Path(run).read_text()).items()))
    row("lr: 1e-3 in YAML (a string to YAML 1.1)", "recipe line `lr: 1e-3`, steps=1",
        cli("gmsa-train", "ae", "--config", str(yaml_lr), "steps=1", f"out_dir={work / 'lr'}"))
    step = work / "run" / "step-000003"
    (work / "run" / "latest").write_text("step-000003\n")
    (step / "trainer_state.json").write_text("{broken")
    row("corrupt trainer state", "trainer_state.json holding '{broken', --resume",
        cli("gmsa-train", "ae", "--config", run, "steps=3", "--resume"))
    (work / "run" / ".staging-dead").mkdir()
    (work / "run" / ".latest.tmp").write_text("x")
    cli("gmsa-train", "ae", "--config", run, "steps=3", "--overwrite")
    leftovers = [p.name for p in (work / "run").iterdir() if p.name.startswith(".")]
    row("killed writes leave staging folders", ".staging-dead/ and .latest.tmp in out_dir, next run",
        f"removed; leftovers now: {leftovers}")

    print("| finding | input | now |\n|---|---|---|")
    for finding, given, result in ROWS:
        print(f"| {finding} | `{given}` | {result} |")


if __name__ == "__main__":
    main()
