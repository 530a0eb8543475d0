"""Paired comparison of QA runs: the difference of each metric on the questions both answered, with its standard error.

Two systems answering the same questions differ far less in noise than two independent samples do, so the
standard error of the paired difference is what says whether a change of a few hundredths of F1 is real.
"""

from __future__ import annotations

import math
from pathlib import Path

from gmsa.errors import DataError
from gmsa.evaluation.qa import METRICS, System
from gmsa.evaluation.report import read_result

HEADINGS = {"em": "EM", "f1": "F1", "accuracy": "accuracy"}


def mean_and_se(values: list[float]) -> tuple[float, float]:
    """Mean of non-empty `values` and its standard error (0 for fewer than two values)."""
    if not values:
        raise ValueError("a mean needs at least one value")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(variance / len(values))


def paired_difference(reference: list[float], other: list[float]) -> tuple[float, float]:
    """Mean of other - reference over paired scores, and its standard error (0 for fewer than two pairs)."""
    if len(reference) != len(other) or not reference:
        raise ValueError(f"paired scores need equal, non-empty lengths: {len(reference)} and {len(other)}")
    return mean_and_se([b - a for a, b in zip(reference, other)])


def select_system(result: dict, path: Path, system: str | None) -> tuple[str, dict[str, dict]]:
    """(system name, {where: {metric: score}}) of one system of a QA result.json; errors name the file."""
    per_question = result.get("per_question")
    if result.get("task") != "qa" or not per_question:
        raise DataError(str(path), None, "has no per-question QA scores; run `gmsa-eval qa` again to write them")
    names = [name for name in result.get("systems", {}) if name in per_question]
    if not names:
        raise DataError(str(path), None, "has per-question scores for no system; run `gmsa-eval qa` again")
    if system is None:
        if len(names) != 1:
            raise DataError(str(path), None, f"holds systems {names}: name one as {path}:SYSTEM")
        system = names[0]
    if system not in names:
        raise DataError(str(path), None, f"has no system {system!r}; it holds {names}")
    scores, wheres = per_question[system], per_question.get("where", [])
    if any(len(scores.get(metric, ())) != len(wheres) for metric in METRICS):
        raise DataError(str(path), None, f"per-question scores of {system!r} do not match its {len(wheres)} "
                        f"questions ({', '.join(METRICS)} each); run `gmsa-eval qa` again to write them")
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for m in METRICS for v in scores[m])
    if not numbers or not all(isinstance(where, str) and ":" in where for where in wheres):
        raise DataError(str(path), None, f"per-question scores of {system!r} are not numbers, or its questions are not "
                        "'file:line' strings; run `gmsa-eval qa` again to write them")
    keys = [question_key(where) for where in wheres]
    if len(set(keys)) != len(keys):
        raise DataError(str(path), None, "names a question twice in per_question.where")
    return system, {key: {metric: scores[metric][i] for metric in METRICS} for i, key in enumerate(keys)}


def read_run(spec: str) -> tuple[dict, str, dict[str, dict]]:
    """"result.json" or "result.json:SYSTEM" -> (the whole result, the system's name, {question: {metric: score}})."""
    path, _, system = spec.rpartition(":")
    try:
        System.parse(system)
    except ValueError:  # no ":SYSTEM" suffix: the whole spec is the path
        path, system = spec, None
    result = read_result(Path(path))
    name, rows = select_system(result, Path(path), system)
    return result, name, rows


def load_run(spec: str) -> tuple[str, dict[str, dict]]:
    """"result.json" or "result.json:SYSTEM" -> (label, {question: {metric: score}})."""
    result, name, rows = read_run(spec)
    return f"{result.get('label') or result.get('checkpoint')}: {name}", rows


def question_key(where: str) -> str:
    """"file.jsonl:LINE" of a "path/to/file.jsonl:LINE": runs that named one data file by other paths still pair."""
    path, _, line = where.rpartition(":")
    return f"{Path(path).name}:{line}"


def compare_table(runs: list[tuple[str, dict[str, dict]]]) -> str:
    """Markdown: each run's metrics on the questions all runs share, and its paired difference to the first run."""
    shared = [where for where in runs[0][1] if all(where in rows for _, rows in runs[1:])]
    if not shared:
        raise ValueError("the runs share no question (compare runs on the same data file)")
    header = " | ".join(f"{HEADINGS[m]} | Δ{HEADINGS[m]} ± se" for m in METRICS)
    lines = [f"| run | questions | {header} |", "|---|---:|" + "---:|---:|" * len(METRICS)]
    reference = runs[0][1]
    for label, rows in runs:
        cells = []
        for metric in METRICS:
            base = [reference[w][metric] for w in shared]
            mine = [rows[w][metric] for w in shared]
            mean, se = paired_difference(base, mine)
            cells.append(f"{sum(mine) / len(mine):.3f} | " + ("(reference)" if rows is reference else
                                                              f"{mean:+.3f} ± {se:.3f}"))
        lines.append(f"| {label} | {len(shared)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_curve(reference: tuple[str, dict[str, dict]], series: dict[str, dict[float, tuple[str, dict[str, dict]]]],
                 x: str) -> dict:
    """Runs along an axis `x` (a rate, a budget), each paired with the reference question by question on the
    questions all of them share: {"questions", "reference": {label, metrics}, "series": [{"label", "runs":
    [{x, "label", metric, metric_difference, metric_se, ...}]}]}; `series` is {name: {x value: (label, rows)}}."""
    runs = [rows for points in series.values() for _, rows in points.values()]
    shared = [q for q in reference[1] if all(q in rows for rows in runs)]
    if not shared:
        raise ValueError("the reference and the runs share no question: evaluate them on the same data file")
    result = {"questions": len(shared), "reference": {"label": reference[0]}, "series": []}
    for metric in METRICS:
        result["reference"][metric] = sum(reference[1][q][metric] for q in shared) / len(shared)
    for name, points in series.items():
        entries = []
        for value, (label, rows) in sorted(points.items()):
            entry = {x: value, "label": label}
            for metric in METRICS:
                mine = [rows[q][metric] for q in shared]
                entry[metric] = sum(mine) / len(mine)
                entry[f"{metric}_difference"], entry[f"{metric}_se"] = paired_difference(
                    [reference[1][q][metric] for q in shared], mine)
            entries.append(entry)
        result["series"].append({"label": name, "runs": entries})
    return result
