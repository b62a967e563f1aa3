"""Smoke test of `python -m benchmarks.run` on test-size models: the JSON follows the schema, every measurement is
there, and cached decoding gives exactly the uncached reference's ids inside the harness."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import run
from benchmarks.report import validate_report
from benchmarks.timing import measure


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory) -> dict:
    output = tmp_path_factory.mktemp("bench") / "bench.json"
    code = run.main(["--size", "tiny", "--sections", "encoder", "decode", "train_step", "--threads", "2",
                     "--output", str(output)])
    assert code == 0
    return json.loads(output.read_text())


def test_report_follows_schema(tiny_report):
    validate_report(tiny_report)
    assert tiny_report["meta"]["size"] == "tiny"
    assert set(tiny_report["models"]) == {"DiG-tiny-test", "CLIP4STR-tiny-test"}
    assert tiny_report["matmul"]["gflop_per_s"] > 0


def test_every_configuration_is_measured(tiny_report):
    rows = {(r["section"], r["model"], r["batch_size"], r["mode"], r["attention"]) for r in tiny_report["rows"]}
    for model in ("DiG-tiny-test", "CLIP4STR-tiny-test"):
        for batch in (1, 2):
            assert ("encoder", model, batch, "forward", "sdpa") in rows
            assert ("decode", model, batch, "cached", "sdpa") in rows
            assert ("decode", model, batch, "uncached", "sdpa") in rows
            assert ("decode", model, batch, "cached", "eager") in rows
        assert ("decode", model, 2, "uncached", "eager") not in rows  # the tiny plan times eager cached only
        assert ("train_step", model, 2, "fwd+bwd+adamw", "sdpa") in rows
    for row in tiny_report["rows"]:
        if row["section"] == "decode":
            # the full budget, no early stop: max_label_length (25) characters + the EOS position, both models
            assert row["extra"]["new_tokens"] == 26
        if row["section"] == "encoder":
            assert row["extra"]["flops"] > 0 and 0 < row["extra"]["flop_fraction_of_matmul"]
        if row["section"] == "train_step":
            assert torch.isfinite(torch.tensor(row["extra"]["last_loss"]))
    assert any(s["what"].startswith("bf16") for s in tiny_report["skipped"]) != torch.cuda.is_available()


def test_cached_and_uncached_ids_identical(tiny_report):
    ratios = [r for r in tiny_report["ratios"] if r["name"].endswith("cached / uncached")]
    assert len(ratios) == 2 * 2  # per model: b1 and b2, sdpa
    assert all(r["ids_identical"] is True for r in ratios), [r["name"] for r in ratios if not r["ids_identical"]]
    names = {t["name"] for t in tiny_report["targets"]}
    assert any("greedy cached / uncached" in n for n in names) and any("FLOP/s" in n for n in names)


def test_validate_report_names_the_broken_field(tiny_report):
    broken = json.loads(json.dumps(tiny_report))
    broken["rows"][0]["images_per_s"] = "fast"
    with pytest.raises(ValueError, match=r"rows\[0\]\.images_per_s"):
        validate_report(broken)
    del broken["targets"]
    with pytest.raises(ValueError, match="targets"):
        validate_report(broken)


def test_measure_reports_median_and_peak_memory():
    calls = []
    timing = measure(lambda: calls.append(torch.ones(4 * 2**20).sum()), warmup=2, repeats=3)
    assert len(calls) == 5 and len(timing.samples_s) == 3
    assert sorted(timing.samples_s)[1] == timing.median_s
    if timing.memory_kind == "cpu_rss_hwm":  # Linux: the 16 MiB tensor shows up in the peak over the baseline
        assert timing.memory_delta_mb >= 15


@pytest.mark.slow  # one tiny ONNX export (~30 s)
def test_onnx_section_times_three_runtimes_and_fp32_reads_like_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    output = tmp_path / "bench.json"
    assert run.main(["--size", "tiny", "--sections", "onnx", "--models", "dig", "--threads", "1",
                     "--output", str(output)]) == 0
    report = json.loads(output.read_text())
    validate_report(report)
    rows = {(r["batch_size"], r["mode"]): r for r in report["rows"] if r["section"] == "onnx"}
    assert set(rows) == {(b, m) for b in (1, 2)
                         for m in ("pytorch", "onnx-fp32", "onnx-int8", "onnx-fp32-uncached")}
    assert all(rows[(b, m)]["extra"]["strings_identical_rate"] == 1.0
               for b in (1, 2) for m in ("onnx-fp32", "onnx-fp32-uncached"))
    assert all(r["images_per_s"] > 0 for r in rows.values())
    assert {r["name"] for r in report["ratios"]} >= {"DiG-tiny-test b2 onnx fp32 / pytorch",
                                                      "DiG-tiny-test b2 onnx int8 / fp32",
                                                      "DiG-tiny-test b2 onnx fp32 cached / uncached"}
