"""The quickstart's data: synthetic word images rendered into STR LMDB splits (rendered once, then reused)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from .recipes import Recipe

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SPEC_FILE = "synthetic.json"  # the settings the LMDBs were rendered with: other settings mean re-rendering


def synthetic_paths(output_root: str | Path) -> dict[str, Path]:
    """Split name -> the root holding that split's LMDBs."""
    return {split: Path(output_root) / split for split in SPLITS}


def ensure_synthetic_data(recipe: Recipe, render: bool = True) -> dict[str, Path]:
    """Render `recipe.data.synthetic` unless already there (or `render` is False: another process renders);
    fill empty data.train / data.val / evaluate.data from its splits."""
    spec = recipe.data.synthetic
    if spec is None:
        raise ValueError("recipe.data.synthetic is not set")
    paths = synthetic_paths(spec.output_root)
    wanted = {k: v for k, v in dataclasses.asdict(spec).items() if k not in ("output_root", "overwrite", "num_workers")}
    marker = Path(spec.output_root) / SPEC_FILE
    rendered = json.loads(marker.read_text()) if marker.is_file() else None
    present = rendered == wanted and all(any(p.glob("**/data.mdb")) for p in paths.values() if p.is_dir())
    if render and (spec.overwrite or not present):
        from processing.synthetic import build_synthetic_benchmark

        logger.info("rendering synthetic LMDBs into %s", spec.output_root)
        build_synthetic_benchmark(spec.output_root, num_train=spec.num_train, num_val=spec.num_val,
                                  num_test=spec.num_test, seed=spec.seed, difficulty=spec.difficulty,
                                  random_fraction=spec.random_fraction,
                                  num_workers=spec.num_workers, overwrite=True)
        marker.write_text(json.dumps(wanted, indent=2) + "\n")
    else:
        logger.info("reusing the synthetic LMDBs in %s", spec.output_root)
    if not recipe.data.train:
        recipe.data.train = [str(paths["train"])]
    if not recipe.data.val:
        recipe.data.val = [str(paths["val"])]
    if recipe.evaluate.data is None:
        recipe.evaluate.data = str(paths["test"])
    return paths
