"""gmsa-eval results as JSON and Markdown tables."""

from __future__ import annotations

import json
import os
from pathlib import Path

from gmsa.errors import DataError, GMSAError

TASKS = ("qa", "reconstruction")
REQUIRED = {"qa": ("systems", ("em", "f1")), "reconstruction": ("rates", ("bleu4",))}
"""What a result must hold for its table: the rows' key, and each row's numbers."""


def prepare_out_dir(out_dir: Path) -> None:
    """Check, before an evaluation runs, that its results can be written to `out_dir` (a folder, made later)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise GMSAError(f"--out {out_dir} is a file: results go to a folder (result.json and table.md)")
    existing = next(p for p in (out_dir.absolute(), *out_dir.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise GMSAError(f"--out {out_dir} cannot be written ({existing} is not a writable folder)")


def write_result(result: dict, out_dir: Path) -> tuple[Path, Path]:
    """result.json and table.md in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, table_path = out_dir / "result.json", out_dir / "table.md"
    table_path.write_text(markdown_table([result]) + "\n")
    # result.json last and whole (rename): its presence means the evaluation finished
    partial = json_path.with_suffix(".json.partial")
    partial.write_text(json.dumps(result, indent=2))
    os.replace(partial, json_path)
    return json_path, table_path


def read_result(path: Path, table: bool = False) -> dict:
    """A result.json written by gmsa-eval; anything else is a DataError naming the file. `table`: it must hold
    the numbers a table shows (results compared question by question need only their per-question scores)."""
    hint = "pass the result.json of a gmsa-eval run"
    try:
        result = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise DataError(str(path), None, f"cannot read it ({error.strerror}); {hint}") from error
    except json.JSONDecodeError as error:
        raise DataError(str(path), error.lineno, f"invalid JSON ({error.msg}); {hint}") from error
    except UnicodeDecodeError:
        raise DataError(str(path), None, f"not UTF-8 text; {hint}") from None
    if not isinstance(result, dict) or result.get("task") not in TASKS:
        raise DataError(str(path), None, f"not a gmsa-eval result (its 'task' is not one of {TASKS}); {hint}")
    rows, needed = REQUIRED[result["task"]]
    entries = result.get(rows)
    numbers = needed if table else ()
    complete = isinstance(entries, dict) and entries and all(
        isinstance(row, dict) and all(isinstance(row.get(k), (int, float)) for k in numbers)
        for row in entries.values())
    if not complete:
        raise DataError(str(path), None, f"is incomplete: '{rows}' needs {', '.join(needed)} per entry; {hint}")
    return result


def markdown_tables(results: list[dict]) -> str:
    """One table per task (their columns differ), QA first."""
    tasks = sorted({r["task"] for r in results})
    return "\n\n".join(markdown_table([r for r in results if r["task"] == task]) for task in tasks)


def _label(result: dict, name: str) -> str:
    return f"{result['label']}: {name}" if result.get("label") else name


def _documents(result: dict) -> str:
    """"5", or "5, top 2 (best last)" when gmsa-eval qa --rerank kept the two most relevant of them (results
    written before --rerank-order put the most relevant first)."""
    if not result.get("rerank"):
        return str(result.get("documents", "-"))
    return f"{result['documents']}, top {result['rerank']} (best {result.get('rerank_order') or 'first'})"


def _number(row: dict, key: str, digits: int) -> str:
    value = row.get(key)
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"


def markdown_table(results: list[dict]) -> str:
    """One table for QA results or one for reconstruction results (not mixed)."""
    kinds = {r["task"] for r in results}
    if len(kinds) != 1:
        raise ValueError(f"cannot put tasks {sorted(kinds)} in one table")
    if kinds == {"qa"}:
        lines = ["| system | checkpoint | questions | documents | document tokens / question | EM | F1 | accuracy "
                 "| s / question |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in results:
            for name, s in r["systems"].items():
                positions = s.get("document_positions_per_question")  # absent from results written before it
                positions = "-" if positions is None else f"{positions:.0f}"
                lines.append(f"| {_label(r, name)} | {r.get('checkpoint', '-')} | {r.get('questions', '-')} | "
                             f"{_documents(r)} | {positions} | {s['em']:.3f} | {s['f1']:.3f} | "
                             f"{_number(s, 'accuracy', 3)} | {_number(s, 'seconds_per_question', 2)} |")
        return "\n".join(lines)
    lines = ["| rate | checkpoint | texts | BLEU-4 | ROUGE-L | prefix EM | MiniLM similarity |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for r in results:
        for rate, s in r["rates"].items():
            scores = " | ".join(_number(s, key, 3) for key in ("bleu4", "rouge_l", "prefix_em", "similarity"))
            lines.append(f"| {_label(r, rate)} | {r.get('checkpoint', '-')} | {r.get('texts', '-')} | {scores} |")
    return "\n".join(lines)
