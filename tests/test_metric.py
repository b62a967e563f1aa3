"""Scene-text metrics against hand-computed values, through the plain functions and `evaluate.load`."""

from __future__ import annotations

from pathlib import Path

import pytest

from processing.str_metrics import compute_scene_text_metrics, format_results_table, weighted_average

METRIC_DIR = Path(__file__).resolve().parents[1] / "processing" / "metrics" / "scene_text_accuracy"

PREDICTIONS = ["Hello!", "w0rld", "", "ABC"]
REFERENCES = ["hello", "world", "x", "abc"]
# 36-char protocol: hello=hello, w0rld!=world (1 edit / 5), ""!="x" (1 edit / 1), abc=abc.
# 94-char cased: "Hello!"!="hello", "ABC"!="abc": nothing matches.
EXPECTED = {
    "accuracy": 0.5,
    "accuracy_cased": 0.0,
    "one_minus_ned": 1 - (0 + 1 / 5 + 1 + 0) / 4,
    "cer": 2 / 14,
    "num_samples": 4,
}


def test_hand_computed_values():
    results = compute_scene_text_metrics(PREDICTIONS, REFERENCES, confidences=[0.9, 0.5, 0.1, 1.0])
    assert results == pytest.approx({**EXPECTED, "confidence": 0.625})


def test_protocol_details():
    # symbols and case ignored by the 36-char protocol, kept by the cased one
    assert compute_scene_text_metrics(["it's"], ["ITS"])["accuracy"] == 1.0
    assert compute_scene_text_metrics(["it's"], ["ITS"])["accuracy_cased"] == 0.0
    assert compute_scene_text_metrics(["Its"], ["Its"])["accuracy_cased"] == 1.0
    # NED divides by the longer string (PARSeq), not by the reference
    assert compute_scene_text_metrics(["abcdef"], ["abc"])["one_minus_ned"] == pytest.approx(0.5)
    assert compute_scene_text_metrics(["abcdef"], ["abc"])["cer"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        compute_scene_text_metrics(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="empty benchmark"):
        compute_scene_text_metrics([], [])


def test_evaluate_load_offline(monkeypatch):
    evaluate = pytest.importorskip("evaluate")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = evaluate.load(str(METRIC_DIR))
    assert metric.compute(predictions=PREDICTIONS, references=REFERENCES) == pytest.approx(EXPECTED)
    metric.add_batch(predictions=PREDICTIONS[:2], references=REFERENCES[:2])
    metric.add_batch(predictions=PREDICTIONS[2:], references=REFERENCES[2:])
    assert metric.compute() == pytest.approx(EXPECTED)


def test_weighted_average_and_table():
    table = {
        "IIIT5k": {"num_samples": 3, "accuracy": 1.0, "one_minus_ned": 1.0, "confidence": 0.9},
        "SVT": {"num_samples": 1, "accuracy": 0.0, "one_minus_ned": 0.5, "confidence": 0.5},
    }
    average = weighted_average(table)
    assert average == pytest.approx({"num_samples": 4, "accuracy": 0.75, "one_minus_ned": 0.875, "confidence": 0.8})
    assert format_results_table(table) == (
        "| Benchmark | # samples | Accuracy | 1 - NED | Confidence |\n"
        "| --- | --- | --- | --- | --- |\n"
        "| IIIT5k | 3 | 100.00 | 100.00 | 90.00 |\n"
        "| SVT | 1 | 0.00 | 50.00 | 50.00 |\n"
        "| Weighted average | 4 | 75.00 | 87.50 | 80.00 |"
    )
    # a column nobody has is left out; one missing from a row prints "-"
    partial = format_results_table(
        {"a": {"num_samples": 2, "accuracy": 0.5}, "b": {"num_samples": 2, "accuracy": 1, "confidence": 1}}
    )
    assert partial.splitlines()[2] == "| a | 2 | 50.00 | - |"
