"""Benchmark evaluation: a saved recognizer over PARSeq-style test LMDBs -> table + JSON.

Protocol (PARSeq / CLIP4STR, also DiG's case-insensitive accuracy): predictions and labels go through the 36-char
case-insensitive charset adapter and are compared exactly; 1-NED is 1 - mean(edit distance / max length);
confidence is the product of the per-step max probabilities up to and including EOS; the average row weights every
benchmark by its sample count. `cased=True` adds accuracy on the 94-char case-sensitive charset. A model with
another charset is scored the same way on its own: its letters and digits lower-cased, and (cased) the charset
itself (processing/str_metrics.py).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from processing.charsets import CHARSET_94
from processing.lmdb_dataset import lmdb_folders
from processing.lmdb_writer import is_unfinished_write
from processing.str_metrics import compute_scene_text_metrics, format_results_table, weighted_average

logger = logging.getLogger(__name__)

# PARSeq's benchmark names, in its table order; any other LMDB folder under the root comes after, sorted.
BENCHMARK_ORDER = (
    "IIIT5k", "SVT", "IC13_857", "IC13_1015", "IC15_1811", "IC15_2077", "SVTP", "CUTE80",
    "COCOv1.4", "ArT", "Uber", "HOST", "WOST",
)


@dataclass
class BenchmarkResult:
    """Scores of one benchmark (accuracies and 1-NED as fractions in [0, 1])."""

    accuracy: float
    accuracy_cased: float | None
    one_minus_ned: float
    confidence: float
    num_samples: int
    skipped: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The scores as JSON values (a score that does not exist, e.g. of 0 usable samples, is null, not NaN)."""
        scores = {
            "accuracy": self.accuracy,
            "accuracy_cased": self.accuracy_cased,
            "one_minus_ned": self.one_minus_ned,
            "confidence": self.confidence,
        }
        scores = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in scores.items()}
        return {**scores, "num_samples": self.num_samples, "skipped": self.skipped}

    @classmethod
    def unusable(cls, skipped: int) -> BenchmarkResult:
        """The row of a benchmark none of whose records could be scored."""
        return cls(math.nan, None, math.nan, math.nan, num_samples=0, skipped=skipped)


def discover_benchmarks(root: str | Path) -> dict[str, Path]:
    """Name -> LMDB folder. `root` is one LMDB (holds data.mdb) or a folder of them, at any depth."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"benchmark path {root} does not exist (expected a PARSeq-style test/ root or an LMDB)")
    if is_unfinished_write(root):
        raise ValueError(f"{root} is the temporary folder of an unfinished LMDB write, not a benchmark; write it again")
    if (root / "data.mdb").is_file():
        return {root.name: root}
    # dot-folders (unfinished LMDB writes among them) are never benchmarks
    found = {str(folder.relative_to(root)): folder for folder in lmdb_folders(root)}
    if not found:
        raise FileNotFoundError(f"no data.mdb under {root}: expected <root>/<benchmark>/data.mdb (PARSeq's test/ layout)")
    known = [name for name in BENCHMARK_ORDER if name in found]
    extra = sorted(name for name in found if name not in BENCHMARK_ORDER)
    return {name: found[name] for name in known + extra}


def score_predictions(
    predictions: Sequence[str],
    references: Sequence[str],
    confidences: Sequence[float] | None = None,
    cased: bool = False,
    charset: str = CHARSET_94,
) -> BenchmarkResult:
    """Accuracy (case-insensitive, symbol-free: 36 chars for the default charset), optional cased accuracy (the
    model's charset, 94 chars by default), 1-NED and mean confidence."""
    scores = compute_scene_text_metrics(predictions, references, list(confidences) if confidences else None,
                                        charset=charset)
    return BenchmarkResult(
        accuracy=scores["accuracy"],
        accuracy_cased=scores["accuracy_cased"] if cased else None,
        one_minus_ned=scores["one_minus_ned"],
        confidence=scores.get("confidence", math.nan),
        num_samples=int(scores["num_samples"]),
    )


def _rows(results: dict[str, BenchmarkResult]) -> dict[str, dict[str, Any]]:
    """Benchmark rows without the skip counts and unset fields (what the weighted average runs over)."""
    rows = {}
    for name, result in results.items():
        rows[name] = {k: v for k, v in result.to_json().items() if k != "skipped" and v is not None}
    return rows


def results_to_json(results: dict[str, BenchmarkResult]) -> dict[str, Any]:
    """{"benchmarks": {name: scores}, "average": scores} -- the `--output` file (sample-weighted average)."""
    average: dict[str, Any] = {"accuracy": None, "accuracy_cased": None, "one_minus_ned": None, "confidence": None}
    if results:
        average.update(weighted_average(_rows(results)))
    average["num_samples"] = sum(r.num_samples for r in results.values())
    average["skipped"] = sum(r.skipped for r in results.values())
    return {"benchmarks": {n: r.to_json() for n, r in results.items()}, "average": average}


def format_table(results: dict[str, BenchmarkResult], cased: bool = False) -> str:
    """The results table (percentages; weighted average last) and a line with the skipped records."""
    columns = ["accuracy"] + (["accuracy_cased"] if cased else []) + ["one_minus_ned", "confidence", "num_samples"]
    table = format_results_table(_rows(results), columns=columns)
    skipped = {name: r.skipped for name, r in results.items() if r.skipped}
    note = ("skipped records (not scored): " + ", ".join(f"{n} {c}" for n, c in skipped.items())) if skipped else (
        "skipped records: none")
    unusable = [name for name, r in results.items() if r.num_samples == 0]
    if unusable:
        note += "\n0 usable samples (every record skipped, see the log for the reasons): " + ", ".join(unusable)
    return f"{table}\n{note}"


@torch.inference_mode()
def recognize(
    model: Any,
    processor: Any,
    images: Iterable[Any],
    batch_size: int = 64,
    num_beams: int = 1,
    total: int | None = None,
    desc: str = "recognizing",
    disable_tqdm: bool = False,
    normalization: str | None = None,
) -> tuple[list[str], list[float]]:
    """Texts and confidences for `images` (PIL images), batched through `model.generate`.

    `normalization` picks the image processor's mean/std preset (CLIP4STR: "clip" or "test"); None = as saved.
    """
    image_kwargs = {} if normalization is None else {"normalization": normalization}
    texts: list[str] = []
    confidences: list[float] = []
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    batch: list[Any] = []
    progress = tqdm(total=total, desc=desc, unit="img", disable=disable_tqdm, leave=False)

    def flush() -> None:
        pixel_values = processor(images=batch, return_tensors="pt", **image_kwargs)["pixel_values"].to(device=device, dtype=dtype)
        out = model.generate(
            pixel_values=pixel_values, num_beams=num_beams, output_scores=True, return_dict_in_generate=True
        )
        # the whole output: after beam search its beam_indices pick each text's own beam scores
        decoded, conf = processor.batch_decode(out, return_confidence=True)
        texts.extend(decoded)
        confidences.extend(float(c) for c in conf)
        progress.update(len(batch))
        batch.clear()

    for image in images:
        batch.append(image)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    progress.close()
    return texts, confidences


def evaluate_benchmarks(
    model: Any,
    processor: Any,
    benchmarks: dict[str, Path],
    batch_size: int = 512,
    num_beams: int = 1,
    cased: bool = False,
    max_samples: int | None = None,
    max_label_length: int = 25,
    disable_tqdm: bool = False,
    normalization: str | None = None,
    recognizer: Any = None,
    charset: str | None = None,
) -> dict[str, BenchmarkResult]:
    """Score every benchmark (name -> LMDB folder); skipped records are counted, not scored. `recognizer` (an
    `onnx_runtime.OnnxRecognizer`) replaces `model` + `processor` when given. `charset`: the model's, which sets
    the protocol; None = the processor's (or recognizer's) tokenizer charset."""
    from processing.lmdb_dataset import NoUsableRecordsError
    from processing.read_skips import SKIP_REASON, ReadSkipTally, is_skipped

    from .data import load_lmdb_split

    if recognizer is None:
        model.eval()
    if charset is None:
        tokenizer = getattr(recognizer.processor if recognizer is not None else processor, "tokenizer", None)
        charset = getattr(tokenizer, "charset", None) or CHARSET_94  # a remote-code tokenizer may not say
    results: dict[str, BenchmarkResult] = {}
    for name, path in tqdm(benchmarks.items(), desc="benchmarks", disable=disable_tqdm or len(benchmarks) == 1):
        try:
            dataset, skipped = load_lmdb_split([path], max_label_length=max_label_length, max_samples=max_samples,
                                               evaluation=True, cased=cased, charset=charset)
        except NoUsableRecordsError as error:  # one broken benchmark must not abort the others
            logger.warning("%s: 0 usable samples, not scored: %s", name, error)
            results[name] = BenchmarkResult.unusable(skipped=error.skips.seen)
            continue
        references: list[str] = []
        read_skips = ReadSkipTally("eval")

        def images(dataset: Any = dataset, references: list[str] = references,
                   read_skips: ReadSkipTally = read_skips) -> Any:
            """The usable images in order, their labels into `references`; unusable ones counted (lazy reader)."""
            for position in range(len(dataset)):
                row = dataset[position]
                if is_skipped(row):
                    read_skips.add([(row[SKIP_REASON], row["key"])])
                    continue
                references.append(row["label"])
                yield row["image"]

        if recognizer is not None:
            texts, confidences = recognizer.recognize(images(), batch_size=batch_size, normalization=normalization)
        else:
            texts, confidences = recognize(
                model, processor, images(), batch_size=batch_size, num_beams=num_beams,
                total=len(dataset), desc=name, disable_tqdm=disable_tqdm, normalization=normalization,
            )
        skipped += read_skips.report(name)
        if not references:
            logger.warning("%s: every record was unusable when read, not scored", name)
            results[name] = BenchmarkResult.unusable(skipped=skipped)
            continue
        result = score_predictions(texts, references, confidences, cased=cased, charset=charset)
        result.skipped = skipped
        result.examples = [{"label": r, "prediction": t, "confidence": c}
                           for r, t, c in list(zip(references, texts, confidences))[:20]]
        results[name] = result
        logger.info("%s: accuracy %.2f%% on %d samples (%d skipped)", name, 100 * result.accuracy,
                    result.num_samples, skipped)
    return results


def write_results(results: dict[str, BenchmarkResult], path: str | Path) -> Path:
    """Write `results_to_json(results)` to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results_to_json(results), indent=2) + "\n")
    return path


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_evaluate(
    model_dir: str | Path,
    data: str | Path,
    batch_size: int = 512,
    cased: bool = False,
    num_beams: int = 1,
    output: str | Path | None = None,
    max_samples: int | None = None,
    disable_tqdm: bool = False,
    normalization: str | None = None,
    trust_remote_code: bool = False,
    runtime: str = "torch",
    precision: str | None = None,
    threads: int | None = None,
) -> tuple[dict[str, BenchmarkResult], str]:
    """Load a saved model, score every benchmark under `data`, print the table, write the JSON (if `output`).
    `trust_remote_code`: see `scene_text_training.models.load_saved` (never needed for DiG / CLIP4STR folders).
    `runtime="onnx"`: `model_dir` is a `train_ocr export` folder, run by onnxruntime (`precision`, `threads`: see
    `OnnxRecognizer.from_folder`); it decodes greedily."""
    from .models import load_saved

    recognizer = model = processor = None
    if runtime == "onnx":
        from .onnx_runtime import OnnxRecognizer

        if num_beams != 1 or trust_remote_code:
            raise ValueError("--runtime onnx decodes greedily with its own loop: drop --num-beams / "
                             "--trust-remote-code")
        recognizer = OnnxRecognizer.from_folder(model_dir, threads=threads, precision=precision)
        max_len = recognizer.max_label_length
    elif runtime == "torch":
        model, processor, _ = load_saved(model_dir, trust_remote_code=trust_remote_code)
        model.to(default_device())
        max_len = getattr(model.config, "max_label_length", 25)
    else:
        raise ValueError(f"runtime must be torch or onnx, got {runtime!r}")
    benchmarks = discover_benchmarks(data)
    results = evaluate_benchmarks(model, processor, benchmarks, batch_size=batch_size, num_beams=num_beams,
                                  cased=cased, max_samples=max_samples, max_label_length=max_len,
                                  disable_tqdm=disable_tqdm, normalization=normalization, recognizer=recognizer)
    table = format_table(results, cased=cased)
    print(table)
    if output is not None:
        path = write_results(results, output)
        print(f"results written to {path}")
    return results, table
