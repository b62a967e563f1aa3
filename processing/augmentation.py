"""Training augmentations of the two recipes, PIL image in -> PIL image out.

- `DiGTrainAugment`: ABINet's augmentation as DiG uses it (`--use_abi_aug`): geometry with p=0.5
  (rotation, or affine with scale and shear, or perspective), deterioration with p=0.25 (Gaussian
  noise, motion blur, down-then-up rescale, in random order), colour jitter with p=0.25.
- `PARSeqRandAugment`: PARSeq's RandAugment (CLIP4STR uses it): 3 distinct ops out of timm's
  "increasing" set minus Sharpness plus Gaussian blur and Poisson noise, each applied with p=0.5 at
  magnitude 5 of 10; rotation expands the canvas so no character is cut off.

Both draw every random number from one `random.Random`. Training passes a generator per call,
`augment(image, rng=sample_rng(seed, epoch, index))`: each image's augmentation is then a function of the run's
seed, the epoch and the sample index only, the same in any worker, on any rank and after a resume (nothing to
checkpoint). Called without `rng`, they use their own generator (pass a seed or an instance); inside a DataLoader
worker it is re-seeded from the worker's torch seed, so forked workers do not repeat each other's augmentations.
Written on PIL and numpy (timm and OpenCV are not dependencies); parameters follow the originals.
"""

from __future__ import annotations

import math
import os
import random

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from torch.utils.data import get_worker_info
from torchvision.transforms.v2 import functional as F

from .image_processing_scene_text import to_rgb_pil

Rng = random.Random | int | None


def sample_rng(seed: int, epoch: int, index: int) -> random.Random:
    """The generator of one sample's augmentation in one epoch: a pure function of (seed, epoch, index)
    (`random.Random` seeds from a string through SHA-512, so it is the same in every process)."""
    return random.Random(f"augment/{seed}/{epoch}/{index}")


class _SeededAugment:
    """Owns the random generator: the given one in the creating process, a re-seeded one in each worker, or the
    one passed to a call (`augment(image, rng=...)`), which is used for that image only."""

    def __init__(self, rng: Rng) -> None:
        if rng is None:
            rng = random.SystemRandom().getrandbits(64)
        self.rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        # what workers derive their seeds from (hashing the state leaves the given generator untouched)
        self._base_seed = hash(rng.getstate()) if isinstance(rng, random.Random) else rng
        self._pid = os.getpid()

    def _check_process(self) -> None:
        if os.getpid() != self._pid:  # forked into a worker: the generator state is a copy of the parent's
            self._pid = os.getpid()
            worker = get_worker_info()
            self.rng = random.Random(f"{self._base_seed}-{worker.seed if worker is not None else self._pid}")

    def __call__(self, image: Image.Image, rng: random.Random | None = None) -> Image.Image:
        if rng is None:
            self._check_process()
            return self._augment(to_rgb_pil(image))
        own, self.rng = self.rng, rng
        try:
            return self._augment(to_rgb_pil(image))
        finally:
            self.rng = own

    def _augment(self, image: Image.Image) -> Image.Image:
        raise NotImplementedError


def _border_color(image: Image.Image) -> tuple[int, ...]:
    """Mean colour of the outermost pixels: a fill that blends in like OpenCV's replicated border."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return tuple(int(v) for v in border.mean(axis=0).round())


def _warp_affine_expand(image: Image.Image, matrix: np.ndarray, fill: tuple[int, ...]) -> Image.Image:
    """Apply a 2x2 linear map about the centre on a canvas grown to hold the whole result."""
    width, height = image.size
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64) - [width / 2, height / 2]
    mapped = corners @ matrix.T
    out_w = max(1, math.ceil(mapped[:, 0].max() - mapped[:, 0].min()))
    out_h = max(1, math.ceil(mapped[:, 1].max() - mapped[:, 1].min()))
    inverse = np.linalg.inv(matrix)
    # PIL wants output -> input: x_in = inverse @ (x_out - out_centre) + in_centre
    offset = np.array([width / 2, height / 2]) - inverse @ np.array([out_w / 2, out_h / 2])
    coefficients = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    return image.transform(
        (out_w, out_h), Image.Transform.AFFINE, coefficients, Image.Resampling.BICUBIC, fillcolor=fill
    )


def _warp_perspective(image: Image.Image, destination: list[tuple[float, float]], fill: tuple[int, ...]) -> Image.Image:
    """Map the image corners to `destination` (clockwise from top-left) and crop to their bounding box."""
    width, height = image.size
    source = [(0, 0), (width - 1, 0), (width - 1, height - 1), (0, height - 1)]
    xs, ys = [p[0] for p in destination], [p[1] for p in destination]
    left, top = max(0, int(min(xs))), max(0, int(min(ys)))
    right, bottom = max(left + 1, math.ceil(max(xs))), max(top + 1, math.ceil(max(ys)))
    shifted = [[x - left, y - top] for x, y in destination]
    return image.transform(
        (right - left, bottom - top),
        Image.Transform.PERSPECTIVE,
        perspective_coefficients(shifted, source),
        Image.Resampling.BICUBIC,
        fillcolor=fill,
    )


def perspective_coefficients(
    output_points: list[tuple[float, float]], input_points: list[tuple[float, float]]
) -> tuple[float, ...]:
    """The 8 coefficients PIL needs to map output coordinates back to input coordinates."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(output_points, input_points):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs.extend([u, v])
    return tuple(np.linalg.solve(np.array(rows, dtype=np.float64), np.array(rhs, dtype=np.float64)))


class DiGTrainAugment(_SeededAugment):
    """ABINet-style training augmentation with DiG's settings (degrees 45, scale 0.5-2, shear (45, 15),
    distortion 0.5; noise variance 20, motion-blur size 6, rescale factor 4; jitter 0.5/0.5/0.5/0.1).

    Unlike ABINet, which picks the geometry type once per transform object, the type is drawn per image.
    """

    def __init__(
        self,
        rng: Rng = None,
        geometry_p: float = 0.5,
        deterioration_p: float = 0.25,
        color_p: float = 0.25,
        degrees: float = 45.0,
        scale: tuple[float, float] = (0.5, 2.0),
        shear: tuple[float, float] = (45.0, 15.0),
        distortion: float = 0.5,
        noise_variance: float = 20.0,
        blur_size: int = 6,
        rescale_factor: int = 4,
        brightness: float = 0.5,
        contrast: float = 0.5,
        saturation: float = 0.5,
        hue: float = 0.1,
    ) -> None:
        super().__init__(rng)
        self.geometry_p, self.deterioration_p, self.color_p = geometry_p, deterioration_p, color_p
        self.degrees, self.scale, self.shear, self.distortion = degrees, scale, shear, distortion
        self.noise_variance, self.blur_size, self.rescale_factor = noise_variance, blur_size, rescale_factor
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def _augment(self, image: Image.Image) -> Image.Image:
        if self.rng.random() < self.geometry_p:
            image = self.rng.choice([self.rotate, self.affine, self.perspective])(image)
        if self.rng.random() < self.deterioration_p:
            steps = [self.gaussian_noise, self.motion_blur, self.rescale]
            self.rng.shuffle(steps)
            for step in steps:
                image = step(image)
        if self.rng.random() < self.color_p:
            image = self.color_jitter(image)
        return image

    # geometry
    def rotate(self, image: Image.Image) -> Image.Image:
        angle = self.rng.uniform(-self.degrees, self.degrees)
        return image.rotate(angle, Image.Resampling.BICUBIC, expand=True, fillcolor=_border_color(image))

    def affine(self, image: Image.Image) -> Image.Image:
        angle = math.radians(self.rng.uniform(-self.degrees, self.degrees))
        shear_x = math.radians(self.rng.uniform(-self.shear[0], self.shear[0]))
        shear_y = math.radians(self.rng.uniform(-self.shear[1], self.shear[1]))
        scale = self.rng.uniform(*self.scale)
        rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        shearing = np.array([[1.0, math.tan(shear_x)], [math.tan(shear_y), 1.0]])
        if abs(np.linalg.det(shearing)) < 0.1:  # near-singular shear would collapse the text to a line
            shearing = np.eye(2)
        return _warp_affine_expand(image, scale * rotation @ shearing, _border_color(image))

    def perspective(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        dx, dy = self.distortion * width / 2, self.distortion * height / 2
        offsets = [(self.rng.uniform(0, dx), self.rng.uniform(0, dy)) for _ in range(4)]
        destination = [
            (offsets[0][0], offsets[0][1]),
            (width - 1 - offsets[1][0], offsets[1][1]),
            (width - 1 - offsets[2][0], height - 1 - offsets[2][1]),
            (offsets[3][0], height - 1 - offsets[3][1]),
        ]
        return _warp_perspective(image, destination, _border_color(image))

    # deterioration
    def gaussian_noise(self, image: Image.Image) -> Image.Image:
        std = math.sqrt(max(1.0, self.rng.uniform(0, self.noise_variance)))
        noise = np.random.default_rng(self.rng.getrandbits(32)).normal(0.0, std, (image.height, image.width, 3))
        return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8))

    def motion_blur(self, image: Image.Image) -> Image.Image:
        size = max(1, int(self.rng.uniform(1, self.blur_size)))
        if size < 2:
            return image
        size += 1 - size % 2  # odd, so the kernel has a centre
        line = Image.new("L", (size, size), 0)
        line.paste(255, (0, size // 2, size, size // 2 + 1))
        line = line.rotate(self.rng.uniform(-90, 90), Image.Resampling.BILINEAR)
        weights = np.asarray(line, dtype=np.float64).flatten()
        if size > 5:  # PIL kernels are at most 5x5: shrink the line to fit
            line = line.resize((5, 5), Image.Resampling.BILINEAR)
            weights = np.asarray(line, dtype=np.float64).flatten()
            size = 5
        if weights.sum() <= 0:
            return image
        return image.filter(ImageFilter.Kernel((size, size), list(weights / weights.sum()), scale=1))

    def rescale(self, image: Image.Image) -> Image.Image:
        factor = round(self.rng.uniform(0, self.rescale_factor))
        if factor == 0:
            return image
        # ABINet: resize to 128x512, halve `factor` times, resize back
        small = (max(1, 512 >> factor), max(1, 128 >> factor))
        return image.resize(small, Image.Resampling.BILINEAR).resize(image.size, Image.Resampling.BILINEAR)

    # colour
    def color_jitter(self, image: Image.Image) -> Image.Image:
        ops = [
            lambda im: F.adjust_brightness(im, self.rng.uniform(1 - self.brightness, 1 + self.brightness)),
            lambda im: F.adjust_contrast(im, self.rng.uniform(1 - self.contrast, 1 + self.contrast)),
            lambda im: F.adjust_saturation(im, self.rng.uniform(1 - self.saturation, 1 + self.saturation)),
            lambda im: F.adjust_hue(im, self.rng.uniform(-self.hue, self.hue)),
        ]
        self.rng.shuffle(ops)
        for op in ops:
            image = op(image)
        return image


_LEVEL_DENOM = 10.0  # timm's magnitude scale
_FILL = (128, 128, 128)  # timm's default fill for geometric ops


class PARSeqRandAugment(_SeededAugment):
    """PARSeq's RandAugment: `num_ops` distinct ops, each applied with probability `p` at `magnitude`/10.

    Op strengths at magnitude 5 (timm's "increasing" variants with PARSeq's hyper-parameters): rotate
    +-15 deg (canvas expanded), shear x +-0.45 / y +-0.1, translate x +-5% / y +-15%, posterize to 2 bits,
    solarize above 128, solarize-add 55, colour/contrast/brightness 1 +- 0.45, Gaussian blur radius 2,
    Poisson noise lambda 20 (both capped for small images as PARSeq does).
    """

    OPS = (
        "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
        "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "ShearX", "ShearY",
        "TranslateXRel", "TranslateYRel", "GaussianBlur", "PoissonNoise",
    )  # fmt: skip

    def __init__(
        self,
        rng: Rng = None,
        num_ops: int = 3,
        magnitude: float = 5.0,
        p: float = 0.5,
        rotate_deg: float = 30.0,
        shear_x_pct: float = 0.9,
        shear_y_pct: float = 0.2,
        translate_x_pct: float = 0.10,
        translate_y_pct: float = 0.30,
    ) -> None:
        if not 0 < num_ops <= len(self.OPS):
            raise ValueError(f"num_ops must be in 1..{len(self.OPS)}, got {num_ops}")
        super().__init__(rng)
        self.num_ops, self.magnitude, self.p = num_ops, magnitude, p
        self.rotate_deg, self.shear_x_pct, self.shear_y_pct = rotate_deg, shear_x_pct, shear_y_pct
        self.translate_x_pct, self.translate_y_pct = translate_x_pct, translate_y_pct

    def _augment(self, image: Image.Image) -> Image.Image:
        for name in self.rng.sample(self.OPS, self.num_ops):  # without replacement, as PARSeq's weights force
            if self.rng.random() < self.p:
                image = self.apply(name, image)
        return image

    def _level(self) -> float:
        return min(max(self.magnitude, 0.0), _LEVEL_DENOM) / _LEVEL_DENOM

    def _signed(self, value: float) -> float:
        return -value if self.rng.random() < 0.5 else value

    def apply(self, name: str, image: Image.Image) -> Image.Image:
        """Apply one named op at the configured magnitude (its random sign and noise from `self.rng`)."""
        level = self._level()
        width, height = image.size
        if name == "AutoContrast":
            return ImageOps.autocontrast(image)
        if name == "Equalize":
            return ImageOps.equalize(image)
        if name == "Invert":
            return ImageOps.invert(image)
        if name == "Rotate":
            return image.rotate(
                self._signed(level * self.rotate_deg), Image.Resampling.BILINEAR, expand=True, fillcolor=_FILL
            )
        if name == "PosterizeIncreasing":
            return ImageOps.posterize(image, 4 - int(level * 4))
        if name == "SolarizeIncreasing":
            return ImageOps.solarize(image, 256 - int(level * 256))
        if name == "SolarizeAdd":
            pixels = np.asarray(image, dtype=np.int16)
            added = np.clip(pixels + int(level * 110), 0, 255)
            return Image.fromarray(np.where(pixels < 128, added, pixels).astype(np.uint8))
        if name in ("ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing"):
            enhancer = {
                "Color": ImageEnhance.Color,
                "Contrast": ImageEnhance.Contrast,
                "Brightness": ImageEnhance.Brightness,
            }
            factor = 1.0 + self._signed(level * 0.9)
            return enhancer[name.removesuffix("Increasing")](image).enhance(factor)
        if name == "ShearX":
            s = self._signed(level * self.shear_x_pct)
            return image.transform(
                image.size, Image.Transform.AFFINE, (1, s, 0, 0, 1, 0), Image.Resampling.BILINEAR, fillcolor=_FILL
            )
        if name == "ShearY":
            s = self._signed(level * self.shear_y_pct)
            return image.transform(
                image.size, Image.Transform.AFFINE, (1, 0, 0, s, 1, 0), Image.Resampling.BILINEAR, fillcolor=_FILL
            )
        if name == "TranslateXRel":
            dx = self._signed(level * self.translate_x_pct) * width
            return image.transform(
                image.size, Image.Transform.AFFINE, (1, 0, dx, 0, 1, 0), Image.Resampling.BILINEAR, fillcolor=_FILL
            )
        if name == "TranslateYRel":
            dy = self._signed(level * self.translate_y_pct) * height
            return image.transform(
                image.size, Image.Transform.AFFINE, (1, 0, 0, 0, 1, dy), Image.Resampling.BILINEAR, fillcolor=_FILL
            )
        if name == "GaussianBlur":
            # PARSeq caps the radius at 2% of the longer side (at least 1) so small crops stay readable
            radius = round(min(level * 4, max(1, 0.02 * max(width, height))))
            return image.filter(ImageFilter.GaussianBlur(radius))
        if name == "PoissonNoise":
            lam = round(min(level * 40, max(1, 0.2 * max(width, height)))) | 1  # PARSeq bins to odd values
            noise_rng = np.random.default_rng(self.rng.getrandbits(32))
            # imgaug's AdditivePoissonNoise: a randomly signed Poisson sample per pixel, shared by the channels
            noise = noise_rng.poisson(lam, (height, width, 1)) * noise_rng.choice([-1, 1], (height, width, 1))
            return Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8))
        raise ValueError(f"unknown op {name!r}; expected one of {self.OPS}")


TRAIN_AUGMENTATIONS: dict[str, type[_SeededAugment]] = {"dig": DiGTrainAugment, "parseq": PARSeqRandAugment}
"""Recipe `data.augment` names -> training augmentations (each built with `cls(seed)`)."""
