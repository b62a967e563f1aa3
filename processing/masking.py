"""DiG pre-training data: the random patch mask and the two-view collator.

Naming: `bool_masked_pos` is True where a patch is MASKED (replaced by the mask token), as in
transformers' ViTMAE/SimMIM and as the original DiG code (despite its `vis_mask` variable names).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .pretraining_views import IMAGE_SIZE, DiGPretrainingViews
from .read_skips import attach_skips, split_skipped

logger = logging.getLogger(__name__)


def derive_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers (independent of PYTHONHASHSEED, processes and workers)."""
    digest = hashlib.blake2b(",".join(str(int(p)) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class DiGMaskGenerator:
    """Masks `int(mask_ratio * num_patches)` patches per image, uniformly without replacement.

    Every image gets its own mask (ViT-Small 32x128, patch 4: 179 of 256 patches at ratio 0.7).
    """

    def __init__(self, grid_size: Sequence[int] = (8, 32), mask_ratio: float = 0.7) -> None:
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        self.grid_size = tuple(grid_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.num_masked = int(mask_ratio * self.num_patches)
        self.mask_ratio = mask_ratio

    def __repr__(self) -> str:
        return f"{type(self).__name__}(grid={self.grid_size}, masked={self.num_masked}/{self.num_patches})"

    def __call__(self, batch_size: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Bool mask [num_patches] (batch_size None) or [batch_size, num_patches]; True = masked."""
        rows = 1 if batch_size is None else batch_size
        order = torch.rand(rows, self.num_patches, generator=generator).argsort(dim=-1)
        mask = torch.zeros(rows, self.num_patches, dtype=torch.bool)
        mask.scatter_(1, order[:, : self.num_masked], True)
        return mask[0] if batch_size is None else mask


class DiGPretrainingCollator:
    """Turns a list of unlabeled images into a DiG pre-training batch.

    Accepts examples as PIL images / arrays / tensors, or mappings holding the image under `image_key`
    (an STR LMDB with or without labels, an image folder, a `datasets.Dataset`): any other keys (labels)
    are ignored. When an example carries an integer `index_key` (the dataset index), its mask and its
    augmentation are a pure function of (seed, epoch, index): identical across DataLoader workers,
    processes and resumed runs. Without it, a per-collator counter is used instead.

    Returns `pixel_values` [B,3,H,W] (original view), `augmented_pixel_values` [B,3,H,W] and
    `bool_masked_pos` [B, num_patches] (True = masked; the augmented view is never masked). Rows a lazy reader
    found unusable (`skipped_record`) are left out: with `report_skips` their `(reason, key)` list goes into the
    batch under `SKIPPED_RECORDS` for the trainer to count, without it each is logged.
    """

    def __init__(
        self,
        views: DiGPretrainingViews | None = None,
        mask_generator: DiGMaskGenerator | None = None,
        image_key: str = "image",
        index_key: str = "index",
        seed: int = 0,
        report_skips: bool = False,
    ) -> None:
        self.report_skips = report_skips
        self.views = views if views is not None else DiGPretrainingViews(IMAGE_SIZE)
        if mask_generator is None:
            height, width = self.views.image_size
            mask_generator = DiGMaskGenerator((height // 4, width // 4), 0.7)
        self.mask_generator = mask_generator
        self.image_key, self.index_key = image_key, index_key
        self.seed = seed
        self.epoch = 0
        self._calls = 0

    def set_epoch(self, epoch: int) -> None:
        """A new epoch draws new masks and augmentations for the same images."""
        self.epoch = epoch

    def _image_and_index(self, example: Any, position: int) -> tuple[Any, int]:
        if isinstance(example, Mapping):
            if self.image_key not in example:
                raise KeyError(
                    f"example {position} has no '{self.image_key}' field (keys: {sorted(example)}); "
                    f"pass image_key=... to DiGPretrainingCollator"
                )
            index = example.get(self.index_key)
            return example[self.image_key], (int(index) if index is not None else -1)
        return example, -1

    def __call__(self, examples: Sequence[Any]) -> dict[str, Any]:
        if len(examples) == 0:
            raise ValueError("DiGPretrainingCollator got an empty batch")
        examples, skipped = split_skipped(examples)
        originals, augmenteds, masks = [], [], []
        call = self._calls
        self._calls += 1
        for position, example in enumerate(examples):
            image, index = self._image_and_index(example, position)
            if index >= 0:
                sample_seed = derive_seed(self.seed, self.epoch, index)
            else:
                sample_seed = derive_seed(self.seed, self.epoch, -1, call, position)
            original, augmented = self.views(image, seed=sample_seed)
            # A separate stream, so the mask is uncorrelated with the augmentation parameters.
            generator = torch.Generator().manual_seed(derive_seed(sample_seed, 1))
            originals.append(original)
            augmenteds.append(augmented)
            masks.append(self.mask_generator(generator=generator))
        batch = {
            "pixel_values": torch.stack(originals),
            "augmented_pixel_values": torch.stack(augmenteds),
            "bool_masked_pos": torch.stack(masks),
        }
        return attach_skips(batch, skipped, self.report_skips)
