"""The two views DiG pre-training sees of one unlabeled word image.

View 0 ("original") is the plain evaluation transform: the masked-image-modelling target is built from it.
View 1 ("augmented") is a heavily distorted copy used only by the contrastive branch, so the model must
recognise the same word under 2-5 random photometric and geometric corruptions (SeqCLR-style).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

from .image_processing_scene_text import to_rgb_pil  # the one converter: 16-bit images scaled, not clipped

IMAGE_SIZE: tuple[int, int] = (32, 128)
MIN_AUGMENT_SIDE = 32


class RandomBorderCrop(torch.nn.Module):
    """Cut up to `max_fraction` of the width/height off each side independently (imgaug `Crop(percent=...)`)."""

    def __init__(self, max_fraction: float = 0.1) -> None:
        super().__init__()
        self.max_fraction = max_fraction

    def forward(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        fractions = torch.rand(4) * self.max_fraction
        top, bottom = int(fractions[0] * height), int(fractions[1] * height)
        left, right = int(fractions[2] * width), int(fractions[3] * width)
        new_height, new_width = max(1, height - top - bottom), max(1, width - left - right)
        return TF.crop(image, top, left, new_height, new_width)


def default_augmentation_ops() -> dict[str, torch.nn.Module]:
    """The pool the augmented view draws 2-5 operations from (applied to the full-resolution PIL image).

    The original uses imgaug; these are the torchvision equivalents. Piecewise affine is approximated by a
    mild elastic warp (torchvision has no piecewise affine).
    """
    return {
        "contrast": v2.ColorJitter(contrast=(0.5, 1.0)),
        "blur": v2.GaussianBlur(kernel_size=5, sigma=(0.5, 1.5)),
        "crop": RandomBorderCrop(0.1),
        "sharpen": v2.RandomAdjustSharpness(sharpness_factor=2.0, p=1.0),
        "rotate": v2.RandomRotation(10, interpolation=InterpolationMode.BILINEAR, expand=True),
        "piecewise_affine": v2.ElasticTransform(alpha=8.0, sigma=3.0),
        "perspective": v2.RandomPerspective(distortion_scale=0.2, p=1.0),
        "solarize": v2.RandomSolarize(threshold=128, p=1.0),
        "grayscale": v2.Grayscale(num_output_channels=3),
    }


class DiGPretrainingViews:
    """Builds (original view, augmented view) as normalised float tensors [3, H, W].

    Seedable: with `seed` the chosen operations and all their random parameters are a function of the seed
    alone (torch's global RNG is forked, so callers' RNG streams are untouched).
    """

    def __init__(
        self,
        image_size: Sequence[int] = IMAGE_SIZE,
        min_ops: int = 2,
        max_ops: int = 5,
        ops: dict[str, torch.nn.Module] | None = None,
        mean: float = 0.5,
        std: float = 0.5,
    ) -> None:
        self.image_size = tuple(image_size)
        self.ops = ops if ops is not None else default_augmentation_ops()
        if not 1 <= min_ops <= max_ops <= len(self.ops):
            raise ValueError(f"need 1 <= min_ops ({min_ops}) <= max_ops ({max_ops}) <= {len(self.ops)} operations")
        self.min_ops, self.max_ops = min_ops, max_ops
        # Bicubic on the PIL image, exactly like the original eval transform (Resize(interpolation=3)).
        self.resize = v2.Resize(self.image_size, interpolation=InterpolationMode.BICUBIC)
        self.to_normalized_tensor = v2.Compose(
            [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize([mean] * 3, [std] * 3)]
        )
        self.color = v2.Compose(
            [
                v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
                v2.RandomGrayscale(p=0.2),
            ]
        )

    def original(self, image: Image.Image | np.ndarray | torch.Tensor) -> torch.Tensor:
        """Resize((H, W), bicubic) + ToTensor + Normalize(0.5, 0.5): the view the MIM target comes from."""
        return self.to_normalized_tensor(self.resize(to_rgb_pil(image)))

    def augmented(self, image: Image.Image | np.ndarray | torch.Tensor, seed: int | None = None) -> torch.Tensor:
        """2-5 random corruptions, resize, colour jitter (p 0.8), random grayscale (p 0.2), normalise."""
        image = to_rgb_pil(image)
        if min(image.size) < MIN_AUGMENT_SIDE:
            # Blur and elastic kernels need room: enlarge tiny crops first (the final resize follows anyway).
            scale = MIN_AUGMENT_SIDE / min(image.size)
            new_size = (
                max(MIN_AUGMENT_SIDE, round(image.width * scale)),
                max(MIN_AUGMENT_SIDE, round(image.height * scale)),
            )
            image = image.resize(new_size, Image.BICUBIC)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            picker = random.Random(seed if seed is not None else int(torch.randint(0, 2**31 - 1, ()).item()))
            names = picker.sample(sorted(self.ops), picker.randint(self.min_ops, self.max_ops))
            for name in names:
                image = self.ops[name](image)
            image = self.color(self.resize(image))
        return self.to_normalized_tensor(image)

    def __call__(
        self, image: Image.Image | np.ndarray | torch.Tensor, seed: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        image = to_rgb_pil(image)
        return self.original(image), self.augmented(image, seed=seed)
