"""The `onnx` section: CPU serving speed of the ONNX export (fp32 and int8) against PyTorch on the same weights.

For each recognizer the benchmark's random model is saved, exported with `train_ocr export --quantize int8`'s code
(`scene_text_training.onnx_export.export_onnx`) and timed as a whole recognition from `pixel_values` to texts:
PyTorch `generate()` (cached, sdpa) + `batch_decode`, then `OnnxRecognizer.decode` with the fp32 and the int8 graphs
(KV-cached greedy loops), and fp32 with the uncached graphs (`use_cache=False`, the prefix recomputed every step).
Rows: section "onnx", mode "pytorch" / "onnx-fp32" / "onnx-int8" / "onnx-fp32-uncached"; each ONNX row's `extra`
holds the fraction of its strings identical to PyTorch's on that batch (`strings_identical_rate`: 1.0 expected for
fp32; int8 is lossy).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from .report import Report, Row
from .timing import measure


def _texts_torch(bench: Any, pixel_values: torch.Tensor) -> list[str]:
    with torch.inference_mode():
        out = bench.model.generate(pixel_values=pixel_values, output_scores=True, return_dict_in_generate=True)
    return list(bench.processor.batch_decode(out, return_confidence=True)[0])


def bench_onnx(report: Report, bench: Any, pixel_values: torch.Tensor, batch_sizes: tuple[int, ...],
               timing_for: Any, row: Any, threads: int | None = None, uncached_max_batch: int | None = None) -> None:
    """Export `bench.model` (fp32 + int8) into a temporary folder and time the three runtimes per batch size."""
    from scene_text_training.onnx_export import export_onnx
    from scene_text_training.onnx_runtime import OnnxRecognizer

    bench.set_attention("sdpa")
    with tempfile.TemporaryDirectory(prefix="bench_onnx_") as workdir:
        model_dir, export_dir = Path(workdir) / "model", Path(workdir) / "onnx"
        bench.model.save_pretrained(model_dir)
        bench.processor.save_pretrained(model_dir)
        started = time.perf_counter()
        export_onnx(model_dir, export_dir, quantize="int8")
        report.models[bench.name]["onnx_export_s"] = time.perf_counter() - started
        threads = threads if threads is not None else torch.get_num_threads()
        runtimes = {"onnx-fp32": OnnxRecognizer.from_folder(export_dir, threads=threads, precision="fp32"),
                    "onnx-int8": OnnxRecognizer.from_folder(export_dir, threads=threads, precision="int8"),
                    "onnx-fp32-uncached": OnnxRecognizer.from_folder(export_dir, threads=threads, precision="fp32",
                                                                     use_cache=False)}
        for batch_size in batch_sizes:
            batch = pixel_values[:batch_size]
            warmup, repeats = timing_for(batch_size)
            reference = _texts_torch(bench, batch)
            report.add(row("onnx", bench.name, batch_size, "pytorch", bench.attention,
                           measure(lambda b=batch: _texts_torch(bench, b), warmup=warmup, repeats=repeats)))
            array = batch.float().numpy()
            for mode, recognizer in runtimes.items():
                if mode == "onnx-fp32-uncached" and uncached_max_batch is not None and batch_size > uncached_max_batch:
                    continue
                texts = recognizer.decode(array)[0]
                same = sum(a == b for a, b in zip(texts, reference)) / len(reference)
                timing = measure(lambda r=recognizer, a=array: r.decode(a), warmup=warmup, repeats=repeats)
                report.add(row("onnx", bench.name, batch_size, mode, None, timing, strings_identical_rate=same,
                               onnx_threads=threads, mean_characters=sum(map(len, texts)) / len(texts)))


def onnx_ratios(report: Report, ratio: Any, model: str, batch_sizes: tuple[int, ...]) -> None:
    """ONNX fp32 / PyTorch, int8 / fp32 and KV-cached / uncached fp32 throughput at each batch size."""
    for batch_size in batch_sizes:
        rows: dict[str, Row | None] = {
            mode: report.find(section="onnx", model=model, batch_size=batch_size, mode=mode)
            for mode in ("pytorch", "onnx-fp32", "onnx-int8", "onnx-fp32-uncached")
        }
        ratio(report, f"{model} b{batch_size} onnx fp32 / pytorch", rows["onnx-fp32"], rows["pytorch"])
        ratio(report, f"{model} b{batch_size} onnx int8 / fp32", rows["onnx-int8"], rows["onnx-fp32"])
        ratio(report, f"{model} b{batch_size} onnx fp32 cached / uncached", rows["onnx-fp32"],
              rows["onnx-fp32-uncached"])


__all__ = ["bench_onnx", "onnx_ratios"]
