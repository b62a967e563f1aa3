"""The training data path, measured as the Trainer runs it: STR LMDB -> Arrow dataset (the recipe's own
`scene_text_training.data.load_lmdb_split`) -> optional augmentation -> `SceneTextCollator` (the processor) ->
DataLoader batches, with 0, 1 and 2 workers.

The LMDB is rendered by the project's synthetic renderer into a temporary folder, so the benchmark needs no
downloaded data; its Arrow cache lives in the same folder and goes away with it.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch


@dataclass
class DataPathResult:
    workers: int
    batch_size: int
    images_per_s: float
    """Median over epochs of images delivered per second, worker start-up excluded (first epoch is warm-up)."""
    epoch_s: list[float]
    first_batch_s: float
    """Time from creating the loader's iterator to its first batch (worker start-up + one batch)."""
    num_images: int


def render_lmdb(root: Path, num_images: int, seed: int = 0, workers: int | None = None) -> Path:
    """A training LMDB of `num_images` synthetic word images (the quickstart's renderer, "easy" difficulty);
    `workers` rendering processes (None: the renderer's default, 1: in this process)."""
    from processing.synthetic import build_synthetic_benchmark

    written = build_synthetic_benchmark(
        root, num_train=num_images, num_val=0, num_test=0, seed=seed, num_workers=workers, overwrite=True
    )
    return written["train"]


def measure_loader(
    dataset: Any,
    collate_fn: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
    *,
    batch_size: int,
    workers: int,
    epochs: int,
    seed: int = 0,
) -> DataPathResult:
    """Iterate `epochs + 1` epochs (the first is warm-up: worker start-up, first decode) and report the median
    throughput of the others. Workers persist across epochs, as they do in a Trainer run."""
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate_fn,
        persistent_workers=workers > 0,
        drop_last=False,
        generator=generator,
    )
    epoch_times: list[float] = []
    first_batch_s = 0.0
    num_images = 0
    for epoch in range(epochs + 1):
        start = time.perf_counter()
        count = 0
        for index, batch in enumerate(loader):
            if epoch == 0 and index == 0:
                first_batch_s = time.perf_counter() - start
            count += batch["pixel_values"].shape[0]
        elapsed = time.perf_counter() - start
        if epoch > 0:
            epoch_times.append(elapsed)
            num_images = count
    del loader  # shuts persistent workers down
    median = statistics.median(epoch_times)
    return DataPathResult(
        workers=workers, batch_size=batch_size, images_per_s=num_images / median, epoch_s=epoch_times,
        first_batch_s=first_batch_s, num_images=num_images,
    )
