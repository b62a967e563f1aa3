"""Batches for the Trainer: raw dataset rows (PIL image + label string) -> augmented, processed tensors.

The datasets keep their raw `image` / `label` columns (Trainer runs with `remove_unused_columns=False`), and the
processor and augmentation run here, on the fly, per batch: the same rows can then be trained with or without
augmentation and evaluated with any processor, and nothing pre-processed is cached on disk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from processing.image_processing_scene_text import to_rgb_pil


@dataclass
class SceneTextCollator:
    """Applies `augment` (PIL -> PIL, training only) to each image, then `processor(images=..., text=...)`.

    Returns `pixel_values` [B, 3, H, W] and `labels` [B, T] (token ids then EOS, padded with -100), the keys the
    recognizers' `forward` and `generate` take.
    """

    processor: Any
    augment: Callable[[Any], Any] | None = None
    image_column: str = "image"
    label_column: str = "label"

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        images = [row[self.image_column] for row in rows]
        if self.augment is not None:
            images = [self.augment(image) for image in images]
        texts = [row[self.label_column] for row in rows]
        batch = self.processor(images=images, text=texts, return_tensors="pt")
        return {"pixel_values": batch["pixel_values"], "labels": batch["labels"]}


def augment_transform(augment: Callable[[Any], Any], image_column: str = "image") -> Callable[[dict], dict]:
    """A `Dataset.with_transform` function applying `augment` to every image of a (lazily formatted) batch.

    Only the training split gets it, so validation batches stay clean while sharing the collator.
    """

    def transform(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        batch[image_column] = [augment(to_rgb_pil(image)) for image in batch[image_column]]
        return batch

    return transform
