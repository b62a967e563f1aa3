"""The quickstart's data: synthetic word images rendered into STR LMDB splits (rendered once, then reused)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

from processing.lmdb_dataset import lmdb_folders

from .recipes import Recipe

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SPEC_FILE = "synthetic.json"  # the settings the LMDBs were rendered with: other settings mean re-rendering


def synthetic_paths(output_root: str | Path) -> dict[str, Path]:
    """Split name -> the root holding that split's LMDBs."""
    return {split: Path(output_root) / split for split in SPLITS}


def _rendered_spec(marker: Path) -> dict | None:
    """The settings recorded after the last complete render (None: none, or an unreadable marker)."""
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return None


def ensure_synthetic_data(recipe: Recipe, render: bool = True) -> dict[str, Path]:
    """Render `recipe.data.synthetic` unless already there (or `render` is False: another process renders);
    fill empty data.train / data.val / evaluate.data from its splits."""
    spec = recipe.data.synthetic
    if spec is None:
        raise ValueError("recipe.data.synthetic is not set")
    paths = synthetic_paths(spec.output_root)
    wanted = {k: v for k, v in dataclasses.asdict(spec).items() if k not in ("output_root", "overwrite", "num_workers")}
    marker = Path(spec.output_root) / SPEC_FILE
    counts = {"train": spec.num_train, "val": spec.num_val, "test": spec.num_test}
    # every split that has samples holds a finished LMDB (lmdb_folders skips the dot-folders of killed writes)
    present = _rendered_spec(marker) == wanted and all(
        paths[split].is_dir() and lmdb_folders(paths[split]) for split, count in counts.items() if count > 0
    )
    if render and (spec.overwrite or not present):
        from processing.charsets import CHARSET_94, read_charset
        from processing.synthetic import WORDLIST_PATH, build_synthetic_benchmark

        logger.info("rendering synthetic LMDBs into %s", spec.output_root)
        marker.unlink(missing_ok=True)  # a render killed halfway must not pass for the old settings' data
        build_synthetic_benchmark(spec.output_root, num_train=spec.num_train, num_val=spec.num_val,
                                  num_test=spec.num_test, seed=spec.seed, difficulty=spec.difficulty,
                                  random_fraction=spec.random_fraction,
                                  charset=read_charset(spec.charset) if spec.charset is not None else CHARSET_94,
                                  wordlist=spec.wordlist if spec.wordlist is not None else WORDLIST_PATH,
                                  num_workers=spec.num_workers, overwrite=True, fonts=spec.fonts)
        partial = marker.with_name(f".{marker.name}.tmp")
        partial.write_text(json.dumps(wanted, indent=2) + "\n")
        os.replace(partial, marker)  # the marker appears complete or not at all
    else:
        logger.info("reusing the synthetic LMDBs in %s", spec.output_root)
    if not recipe.data.train:
        recipe.data.train = [str(paths["train"])]
    if not recipe.data.val:
        recipe.data.val = [str(paths["val"])]
    if recipe.evaluate.data is None:
        recipe.evaluate.data = str(paths["test"])
    return paths
