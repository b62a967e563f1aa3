"""What the ONNX export costs in accuracy: a trained model read by PyTorch, ONNX fp32 and ONNX int8 on one split.

    python -m benchmarks.onnx_accuracy --model outputs/quickstart/dig --data outputs/quickstart/data/test

The model is exported (fp32 + int8) into a temporary folder with `train_ocr export`'s code, then every record of
the split is read three times: `generate()` in PyTorch, and `OnnxRecognizer` with each precision. It reports each
variant's accuracy (the benchmark protocol of `train_ocr evaluate`), the fraction of strings identical to PyTorch's,
and the largest confidence difference; int8 is never applied unless asked for, and this is what asking costs.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/run.py

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def read_split(data: Path, max_samples: int | None) -> tuple[list[Any], list[str]]:
    """The split's usable images and labels (the evaluation label pipeline)."""
    from processing.read_skips import is_skipped
    from scene_text_training.data import load_lmdb_split

    dataset, _ = load_lmdb_split([data], max_samples=max_samples, evaluation=True)
    rows = [row for row in (dataset[i] for i in range(len(dataset))) if not is_skipped(row)]
    return [row["image"] for row in rows], [row["label"] for row in rows]


def compare(model_dir: Path, data: Path, batch_size: int = 64, max_samples: int | None = None,
            threads: int | None = None) -> dict[str, Any]:
    from scene_text_training.evaluation import recognize, score_predictions
    from scene_text_training.models import load_saved
    from scene_text_training.onnx_export import export_onnx
    from scene_text_training.onnx_runtime import OnnxRecognizer

    images, labels = read_split(data, max_samples)
    model, processor, _ = load_saved(model_dir)
    model.eval()
    variants: dict[str, tuple[list[str], list[float], float]] = {}
    start = time.perf_counter()
    texts, confidences = recognize(model, processor, images, batch_size=batch_size, disable_tqdm=True)
    variants["pytorch"] = (texts, confidences, time.perf_counter() - start)
    with tempfile.TemporaryDirectory(prefix="onnx_accuracy_") as workdir:
        export_dir = Path(workdir) / "onnx"
        export_onnx(model_dir, export_dir, quantize="int8")
        for precision in ("fp32", "int8"):
            recognizer = OnnxRecognizer.from_folder(export_dir, threads=threads, precision=precision)
            start = time.perf_counter()
            texts, confidences = recognizer.recognize(images, batch_size=batch_size)
            variants[f"onnx-{precision}"] = (texts, confidences, time.perf_counter() - start)
    reference_texts, reference_confidences, _ = variants["pytorch"]
    results = {}
    for name, (texts, confidences, seconds) in variants.items():
        score = score_predictions(texts, labels, confidences)
        results[name] = {
            "accuracy": 100 * score.accuracy,
            "one_minus_ned": 100 * score.one_minus_ned,
            "strings_identical_to_pytorch": sum(a == b for a, b in zip(texts, reference_texts)) / len(texts),
            "max_confidence_difference": max(abs(a - b) for a, b in zip(confidences, reference_confidences)),
            "images_per_s": len(texts) / seconds,
        }
    return {"model": str(model_dir), "data": str(data), "num_samples": len(labels), "results": results}


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{report['num_samples']} samples of {report['data']}", "",
             "| variant | accuracy | 1 - NED | strings identical to PyTorch | max confidence difference | img/s |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, r in report["results"].items():
        lines.append(f"| {name} | {r['accuracy']:.2f} | {r['one_minus_ned']:.2f} | "
                     f"{100 * r['strings_identical_to_pytorch']:.1f}% | {r['max_confidence_difference']:.2e} | "
                     f"{r['images_per_s']:.1f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.onnx_accuracy", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a trained model folder (train_ocr finetune)")
    parser.add_argument("--data", type=Path, required=True, help="an LMDB (or root of LMDBs) to read")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = compare(args.model, args.data, args.batch_size, args.max_samples, args.threads)
    print(format_table(report))
    if args.output is not None:
        args.output.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
