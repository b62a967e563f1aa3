"""Scene-text recognition metrics under the standard protocols, as plain functions.

- accuracy: the 36-character case-insensitive protocol (both sides through `CharsetAdapter(CHARSET_36)`:
  lower-cased, everything but 0-9a-z deleted), exact match. This is the number papers report.
- accuracy_cased: the 94-character case-sensitive protocol (`CharsetAdapter(CHARSET_94)` on both sides).
- one_minus_ned: 1 - mean(edit distance / max(len(pred), len(gt))) on the 36-char-adapted strings
  (PARSeq's definition).
- cer: total edits / total reference characters, also on the 36-char-adapted strings.

Another model charset (`charset=`) gets the same two protocols of its own: case-insensitive and symbol-free
(`evaluation_charset(charset)`: its letters and digits, lower-cased) and case-sensitive (the charset itself). The
default, the 94 ASCII characters, gives exactly the 36/94 protocols above.

Values are fractions in [0, 1]; `format_results_table` prints percentages. The `evaluate` metric in
`processing/metrics/scene_text_accuracy` wraps `compute_scene_text_metrics`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

from rapidfuzz.distance import Levenshtein

from .charsets import CHARSET_94, CharsetAdapter, evaluation_charset


@lru_cache(maxsize=8)
def protocol_adapters(charset: str = CHARSET_94) -> tuple[CharsetAdapter, CharsetAdapter]:
    """(case-insensitive symbol-free adapter, case-sensitive adapter) of a model charset."""
    return CharsetAdapter(evaluation_charset(charset)), CharsetAdapter(charset)

TABLE_COLUMNS = ("num_samples", "accuracy", "one_minus_ned", "confidence")
_COLUMN_TITLES = {
    "num_samples": "# samples",
    "accuracy": "Accuracy",
    "accuracy_cased": "Accuracy (cased)",
    "one_minus_ned": "1 - NED",
    "confidence": "Confidence",
    "cer": "CER",
}


def normalized_edit_distance(prediction: str, reference: str) -> float:
    """Edit distance divided by the longer string's length (0 when both are empty)."""
    longest = max(len(prediction), len(reference))
    return Levenshtein.distance(prediction, reference) / longest if longest else 0.0


def compute_scene_text_metrics(
    predictions: Sequence[str],
    references: Sequence[str],
    confidences: Sequence[float] | None = None,
    charset: str = CHARSET_94,
) -> dict[str, float | int]:
    """accuracy, accuracy_cased, one_minus_ned, cer and num_samples (plus the mean confidence when
    per-sample confidences are given) for one benchmark, under the protocols of the model's `charset`."""
    uncased, cased = protocol_adapters(charset)
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions for {len(references)} references")
    if confidences is not None and len(confidences) != len(predictions):
        raise ValueError(f"got {len(confidences)} confidences for {len(predictions)} predictions")
    num_samples = len(predictions)
    if num_samples == 0:
        raise ValueError("no samples: cannot compute accuracy of an empty benchmark")
    correct = correct_cased = edits = reference_chars = 0
    ned_sum = 0.0
    for prediction, reference in zip(predictions, references):
        pred36, ref36 = uncased(prediction), uncased(reference)
        correct += pred36 == ref36
        correct_cased += cased(prediction) == cased(reference)
        ned_sum += normalized_edit_distance(pred36, ref36)
        edits += Levenshtein.distance(pred36, ref36)
        reference_chars += len(ref36)
    results: dict[str, float | int] = {
        "accuracy": correct / num_samples,
        "accuracy_cased": correct_cased / num_samples,
        "one_minus_ned": 1.0 - ned_sum / num_samples,
        # No reference characters at all: 0 when nothing was predicted either, else every edit is an error.
        "cer": edits / reference_chars if reference_chars else float(edits > 0),
        "num_samples": num_samples,
    }
    if confidences is not None:
        results["confidence"] = float(sum(confidences)) / num_samples
    return results


def weighted_average(table: Mapping[str, Mapping[str, float | int]]) -> dict[str, float | int]:
    """Average each metric over benchmarks weighted by `num_samples` (PARSeq's "Combined" row): the same
    as pooling every sample. A metric missing from some benchmark is averaged over those that have it;
    non-numeric fields are ignored."""
    totals: dict[str, float] = {}
    weights: dict[str, int] = {}
    for name, row in table.items():
        if "num_samples" not in row:
            raise KeyError(f"benchmark {name!r} has no 'num_samples': cannot weight it")
        count = int(row["num_samples"])
        for metric, value in row.items():
            if metric == "num_samples" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue  # counts and non-numeric fields (names, notes) are not averaged
            totals[metric] = totals.get(metric, 0.0) + float(value) * count
            weights[metric] = weights.get(metric, 0) + count
    average: dict[str, float | int] = {metric: totals[metric] / weights[metric] for metric in totals if weights[metric]}
    average["num_samples"] = sum(int(row["num_samples"]) for row in table.values())
    return average


def format_results_table(
    table: Mapping[str, Mapping[str, float | int]],
    columns: Sequence[str] = TABLE_COLUMNS,
    average_name: str = "Weighted average",
) -> str:
    """A Markdown table: one row per benchmark (percentages with 2 decimals), then the weighted average."""
    columns = [column for column in columns if any(column in row for row in table.values())]
    rows = dict(table)
    if table:
        rows[average_name] = weighted_average(table)
    header = ["Benchmark"] + [_COLUMN_TITLES.get(column, column) for column in columns]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(["---"] * len(header)) + " |"]
    for name, row in rows.items():
        cells = [name]
        for column in columns:
            value = row.get(column)
            if value is None:
                cells.append("-")
            elif column == "num_samples":
                cells.append(str(int(value)))
            else:
                cells.append(f"{100.0 * float(value):.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
