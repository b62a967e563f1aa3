"""Batches for the Trainer: raw dataset rows (PIL image + label string) -> augmented, processed tensors.

The datasets keep their raw `image` / `label` columns (Trainer runs with `remove_unused_columns=False`), and the
processor and augmentation run here, on the fly, per batch: the same rows can then be trained with or without
augmentation and evaluated with any processor, and nothing pre-processed is cached on disk.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import TrainerCallback

from processing.augmentation import sample_rng
from processing.image_processing_scene_text import to_rgb_pil
from processing.read_skips import attach_skips, is_skipped, split_skipped

logger = logging.getLogger(__name__)


@dataclass
class SceneTextCollator:
    """Applies `augment` (PIL -> PIL, training only) to each image, then `processor(images=..., text=...)`.

    Returns `pixel_values` [B, 3, H, W] and `labels` [B, T] (token ids then EOS, padded with -100), the keys the
    recognizers' `forward` and `generate` take. Rows a lazy reader found unusable (`skipped_record` markers) are
    left out; with `report_skips` their `(reason, key)` list travels in the batch under `SKIPPED_RECORDS` for the
    trainer to count (pop it before calling the model yourself), without it each one is logged by the worker.
    """

    processor: Any
    augment: Callable[[Any], Any] | None = None
    image_column: str = "image"
    label_column: str = "label"
    report_skips: bool = False

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        rows, skipped = split_skipped(rows)
        images = [row[self.image_column] for row in rows]
        if self.augment is not None:
            images = [self.augment(image) for image in images]
        texts = [row[self.label_column] for row in rows]
        batch = self.processor(images=images, text=texts, return_tensors="pt")
        return attach_skips({"pixel_values": batch["pixel_values"], "labels": batch["labels"]}, skipped,
                            self.report_skips)


def augment_transform(augment: Callable[[Any], Any], image_column: str = "image") -> Callable[[dict], dict]:
    """A `Dataset.with_transform` function applying `augment` to every image of a (lazily formatted) batch.

    Only the training split gets it, so validation batches stay clean while sharing the collator.
    """

    def transform(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        batch[image_column] = [augment(to_rgb_pil(image)) for image in batch[image_column]]
        return batch

    return transform


class SeededAugmentedDataset(torch.utils.data.Dataset):
    """The training rows with `augment` applied, each image's random numbers drawn from `sample_rng(seed, epoch,
    index)`: two runs with the same seed augment identically, whatever the DataLoader workers or ranks, and a
    resumed run augments exactly as the uninterrupted one would (there is no augmentation state to checkpoint).

    The epoch comes from `set_epoch`, called by accelerate's DataLoader and by `AugmentationEpochCallback`, before
    each epoch's DataLoader workers start (so `dataloader_persistent_workers` must stay off).
    """

    def __init__(self, dataset: Any, augment: Callable[..., Any], seed: int, image_column: str = "image") -> None:
        self.dataset, self.augment, self.seed, self.image_column = dataset, augment, seed, image_column
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = dict(self.dataset[index])
        if is_skipped(row):
            return row
        rng = sample_rng(self.seed, self.epoch, int(index))
        row[self.image_column] = self.augment(to_rgb_pil(row[self.image_column]), rng=rng)
        return row


class AugmentationEpochCallback(TrainerCallback):
    """Tells a `SeededAugmentedDataset` (or anything with `set_epoch`, such as the DiG pre-training collator) the
    epoch at each epoch's start (also when a run resumes mid-epoch)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def on_train_begin(self, args, state, control, **kwargs):
        if args.dataloader_persistent_workers and args.dataloader_num_workers > 0:
            logger.warning("dataloader_persistent_workers: workers keep the first epoch's augmentation seeds")
        return control

    def on_epoch_begin(self, args, state, control, **kwargs):
        # state.epoch is the epoch being started, or a fraction into it when resuming
        self.dataset.set_epoch(math.floor(state.epoch + 1e-9))
        return control
