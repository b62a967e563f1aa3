"""Smoke test of `python -m benchmarks.data_scale` at toy sizes: every measurement is made, the LMDBs are reused
from its cache, and the GPU-demand table divides what a GPU needs by what one worker delivers."""

from __future__ import annotations

import json

import pytest

from benchmarks import data_scale


def test_data_scale_measures_every_size_and_path(tmp_path):
    output = tmp_path / "scale.json"
    argv = ["--sizes", "48", "24", "--pool", "12", "--workers", "0", "--batch-size", "8", "--batches", "1",
            "--arrow-max", "24", "--cache-dir", str(tmp_path / "cache"), "--output", str(output)]
    assert data_scale.main(argv) == 0
    report = json.loads(output.read_text())
    results = report["results"]
    assert [r["records"] for r in results] == [24, 48]
    for r in results:
        assert set(r["images_per_s"]) == {"dig train", "clip4str train", "evaluation"}
        assert all(v["0 workers"] > 0 for v in r["images_per_s"].values())
        assert set(r["first_batch_s"]) == {"0 workers", "2 workers"} and r["first_batch_cold_index_s"] > 0
        assert r["index_mb"] > 0 and r["lmdb_mb"] > 0
    assert results[0]["arrow_first_batch_s"] > 0 and results[1]["arrow_first_batch_s"] is None  # --arrow-max 24
    assert "| 48 |" in report["table"]
    lmdbs = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert lmdbs == ["pool-12-seed0", "pool-12-seed0-x24", "pool-12-seed0-x48"]
    stamps = {p: (p / "data.mdb").stat().st_mtime_ns for p in (tmp_path / "cache").glob("*x*")}
    data_scale.main([*argv[:-2]])  # a second run reuses the cached LMDBs
    assert {p: (p / "data.mdb").stat().st_mtime_ns for p in stamps} == stamps


def test_demand_table_says_how_many_workers_a_gpu_needs():
    result = data_scale.SizeResult(records=10, lmdb_mb=1.0, first_batch_cold_index_s=0.1, index_build_s=0.1,
                                   images_per_s={"dig train": {"1 workers": 500.0},
                                                 "clip4str train": {"1 workers": 250.0},
                                                 "evaluation": {"1 workers": 2000.0}})
    demand = [{"model": "DiG-Small", "train_gflop_per_image": 40.0, "images_per_s_per_gpu": 3000.0},
              {"model": "CLIP4STR-B/16", "train_gflop_per_image": 130.0, "images_per_s_per_gpu": 1000.0}]
    table = data_scale.format_demand(demand, [result], gpus=8, gpu_tflops=312, utilization=0.4)
    assert "| DiG-Small | 40.0 | 3,000 | 24,000 | 500 img/s (dig train) | 6 |" in table
    assert "| CLIP4STR-B/16 | 130.0 | 1,000 | 8,000 | 250 img/s (clip4str train) | 4 |" in table


@pytest.mark.slow  # exports a model with int8 graphs (~15 s), like the other ONNX benchmark smoke test
def test_onnx_accuracy_compares_pytorch_fp32_and_int8_on_one_split(tmp_path):
    """`python -m benchmarks.onnx_accuracy` on a tiny DiG: fp32 ONNX reads exactly what PyTorch reads."""
    from benchmarks import onnx_accuracy
    from modeling_dig import DiGConfig, DiGForTextRecognition
    from processing.synthetic import build_synthetic_benchmark
    from scene_text_training.models import build_processor

    config = DiGConfig.from_preset("tiny-test")
    DiGForTextRecognition(config).save_pretrained(tmp_path / "model")
    build_processor("dig", config).save_pretrained(tmp_path / "model")
    data = build_synthetic_benchmark(tmp_path / "synth", num_train=0, num_val=0, num_test=6, seed=0, num_workers=0)
    output = tmp_path / "accuracy.json"
    assert onnx_accuracy.main(["--model", str(tmp_path / "model"), "--data", str(data["test"]), "--batch-size", "4",
                               "--output", str(output)]) == 0
    report = json.loads(output.read_text())
    assert report["num_samples"] == 6 and set(report["results"]) == {"pytorch", "onnx-fp32", "onnx-int8"}
    assert report["results"]["onnx-fp32"]["strings_identical_to_pytorch"] == 1.0
    assert report["results"]["onnx-fp32"]["accuracy"] == report["results"]["pytorch"]["accuracy"]
    assert report["results"]["onnx-fp32"]["max_confidence_difference"] < 1e-4
