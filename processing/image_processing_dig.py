"""DiG's image processor: the original evaluation transform (32x128 bicubic resize, normalise with 0.5/0.5)."""

from __future__ import annotations

from typing import ClassVar

from .image_processing_scene_text import SceneTextImageProcessor


class DiGImageProcessor(SceneTextImageProcessor):
    """`Resize((32, 128), bicubic)` -> `ToTensor` -> `Normalize(0.5, 0.5)`, as DiG's `RegularTransform`.

    The ViT encoder's 4x4 patches tile exactly this 32x128 input (8x32 = 256 tokens), so `size` is an architecture
    constant rather than a tunable. Training augmentations live in `processing.augmentation` and run before this.
    """

    size = {"height": 32, "width": 128}
    normalization_presets: ClassVar[dict[str, tuple[tuple[float, ...], tuple[float, ...]]]] = {
        "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    }
    normalization = "half"
    image_mean = (0.5, 0.5, 0.5)
    image_std = (0.5, 0.5, 0.5)


__all__ = ["DiGImageProcessor"]
