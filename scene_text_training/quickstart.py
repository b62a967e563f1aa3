"""The quickstart job: synthetic LMDBs -> fine-tune a reduced model on CPU -> test table -> read sample images."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from processing.image_processing_scene_text import to_rgb_pil

from .data import load_lmdb_split
from .evaluation import discover_benchmarks, run_evaluate
from .finetune import run_finetune
from .reading import read_with_pipeline
from .recipes import load_recipe

logger = logging.getLogger(__name__)

# The quickstart's headline with font-disjoint data: clean words in fonts the model never saw.
HEADLINE_TEST_SET = "unseen_fonts_clean"


def export_samples(lmdb_path: str | Path, folder: str | Path, count: int = 8) -> list[Path]:
    """Write the first `count` images of an LMDB as PNG files named `<index>_<label>.png`."""
    dataset, _ = load_lmdb_split([lmdb_path], max_samples=count)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, row in enumerate(dataset):
        safe = "".join(c if c.isalnum() else "_" for c in row["label"])
        path = folder / f"{index:02d}_{safe}.png"
        to_rgb_pil(row["image"]).save(path)  # the one loader: 16-bit crops scaled, not clipped
        paths.append(path)
    return paths


def run_quickstart(config: str | Path, overrides: list[str] | None = None, num_samples: int = 8) -> dict[str, Any]:
    """Run the whole job for one quickstart recipe; returns a summary (accuracy, timings, sample readings)."""
    recipe = load_recipe(config, overrides)
    if recipe.data.synthetic is None:
        raise ValueError(f"{config}: a quickstart recipe needs data.synthetic (the LMDBs it renders)")
    output_dir = Path(recipe.train.output_dir)

    start = time.time()
    finetune = run_finetune(recipe)  # renders the data first and fills evaluate.data with the test split
    train_time = time.time() - start

    start = time.time()
    results, _ = run_evaluate(output_dir, recipe.evaluate.data, batch_size=recipe.evaluate.batch_size,
                              cased=recipe.evaluate.cased, num_beams=recipe.evaluate.num_beams,
                              max_samples=recipe.evaluate.max_samples, output=output_dir / "results.json",
                              normalization=recipe.evaluate.normalization)
    eval_time = time.time() - start

    # samples from every test set: with font-disjoint data, half the sample images are in fonts never trained on
    test_sets = discover_benchmarks(recipe.evaluate.data)
    per_set = max(1, num_samples // len(test_sets)) if len(test_sets) > 1 else num_samples
    samples = [path for name, folder in test_sets.items()
               for path in export_samples(folder, output_dir / "samples" / name.replace("/", "_"), count=per_set)]
    readings = read_with_pipeline(output_dir, samples)
    print('pipeline("image-to-text") on sample test images:')
    for row in readings:
        confidence = "-" if row["confidence"] is None else f"{row['confidence']:.3f}"
        file = Path(row["file"])
        print(f"  {file.parent.name + '/' + file.name:48s} -> {row['text']!r} (confidence {confidence})")

    headline = HEADLINE_TEST_SET if HEADLINE_TEST_SET in results else next(iter(results))
    test = results[headline]
    return {
        "recipe": recipe.name,
        "output_dir": str(output_dir),
        "train_steps": finetune.global_step,
        "train_time_s": round(train_time, 1),
        "eval_time_s": round(eval_time, 1),
        "test_set": headline,
        "num_beams": recipe.evaluate.num_beams,
        "test_accuracy": test.accuracy,
        "test_sets": {name: {"accuracy": r.accuracy, "one_minus_ned": r.one_minus_ned} for name, r in results.items()},
        "test_one_minus_ned": test.one_minus_ned,
        "test_samples": test.num_samples,
        "curves": str(output_dir / "training_curves.png"),
    }
