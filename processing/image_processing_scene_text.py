"""Image processor shared by the scene-text recognizers: any image -> RGB -> fixed-size bicubic resize -> normalise.

The originals decode every image with PIL, convert it to RGB, and apply torchvision's `Resize` to the PIL image
(PIL bicubic, aspect ratio NOT kept), `ToTensor` and `Normalize`. This processor reproduces that on the PIL backend,
so a converted checkpoint sees the same pixels it was trained and evaluated on.
"""

from __future__ import annotations

import base64
import io
import os
import urllib.request
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import PIL.Image
import torch
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import ChannelDimension, PILImageResampling
from transformers.processing_utils import ImagesKwargs

_CHANNEL_COUNTS = (1, 2, 3, 4)
_CHANNEL_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


class SceneTextImageProcessorKwargs(ImagesKwargs, total=False):
    """normalization (`str`): name of a mean/std preset in the processor's `normalization_presets`, or "custom"
    to use `image_mean`/`image_std` as given."""

    normalization: str


def _describe(image: Any) -> str:
    shape = getattr(image, "shape", None)
    if shape is not None:
        return f"{type(image).__name__} of shape {tuple(shape)} and dtype {image.dtype}"
    return f"{type(image).__name__} {getattr(image, 'mode', '')} {getattr(image, 'size', '')}".strip()


def _array_to_uint8(array: np.ndarray) -> np.ndarray:
    """8-bit pixels from an array of any common dtype; floats must be in [0, 1]."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype == np.uint16:
        # 16-bit scans: keep the full range instead of clipping at 255 like PIL's convert("RGB") does.
        return np.round(array.astype(np.float64) / 257.0).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        low, high = float(array.min()), float(array.max())
        if low < -1e-6 or high > 1 + 1e-6:
            raise ValueError(
                f"float image values must lie in [0, 1], got [{low:.4g}, {high:.4g}]; pass uint8 pixels or divide by 255"
            )
        return np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 65535:
            raise ValueError(f"integer image values must lie in [0, 65535], got [{low}, {high}]")
        return _array_to_uint8(array.astype(np.uint16)) if high > 255 else array.astype(np.uint8)
    raise ValueError(f"unsupported image dtype {array.dtype}; pass uint8, uint16, bool or float in [0, 1]")


def open_image_source(source: str | os.PathLike | bytes | bytearray | memoryview, timeout: float | None = None):
    """The PIL image, in its stored mode (nothing converted yet), of a local path, an http(s) URL, base64 text
    (optionally a `data:image/...` URI) or encoded bytes. transformers' `load_image` would convert to RGB here,
    which clips 16-bit images to white; `to_rgb_pil` does the conversion instead."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return PIL.Image.open(io.BytesIO(bytes(source)))
    source = os.fspath(source)
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=timeout) as response:  # follows redirects
            return PIL.Image.open(io.BytesIO(response.read()))
    if os.path.isfile(source):
        return PIL.Image.open(source)
    try:
        encoded = source.split(",", 1)[1] if source.startswith("data:image/") else source
        return PIL.Image.open(io.BytesIO(base64.b64decode(encoded, validate=True)))
    except (ValueError, OSError) as error:
        raise ValueError(
            f"Incorrect image source: {source[:200]!r} is neither an image file, an http(s) URL nor base64 image data"
        ) from error


def load_rgb_image(source: Any, timeout: float | None = None) -> PIL.Image.Image:
    """THE image loader of every path (image processor, pipeline, LMDB readers, training, `train_ocr read`): any
    source `open_image_source` takes, or a PIL image / array / tensor, as 8-bit RGB by `to_rgb_pil`'s rules."""
    if isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
        with open_image_source(source, timeout=timeout) as image:
            return to_rgb_pil(image)
    return to_rgb_pil(source)


def to_rgb_pil(image: Any, input_data_format: str | ChannelDimension | None = None) -> PIL.Image.Image:
    """Converts one image (PIL of any mode, numpy HxW / HxWxC / CxHxW, torch CxHxW / HxW, a path or URL) to an 8-bit
    RGB PIL image.

    PIL images follow `Image.convert("RGB")` as the originals' data loaders did (alpha is dropped, palettes and
    CMYK are resolved by PIL), except 16/32-bit modes, which are scaled to 8 bits rather than clipped.
    """
    if isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview)):
        return load_rgb_image(image)  # a local path, URL or encoded bytes, as the pipelines accept
    if isinstance(image, PIL.Image.Image):
        if image.width == 0 or image.height == 0:
            raise ValueError(f"image is empty ({image.width}x{image.height} pixels); drop it or fix its source")
        if image.mode in ("I", "F") or image.mode.startswith("I;16"):
            return to_rgb_pil(np.asarray(image))
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        array = image.detach().cpu().numpy()
        # Tensors follow torch's channels-first convention unless told otherwise.
        if array.ndim == 3 and input_data_format is None:
            input_data_format = ChannelDimension.FIRST
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise TypeError(f"unsupported image type {type(image).__name__}; pass a PIL image, a numpy array or a tensor")

    if array.ndim == 3:
        channels_first = (
            ChannelDimension(input_data_format) == ChannelDimension.FIRST
            if input_data_format is not None
            else array.shape[-1] not in _CHANNEL_COUNTS and array.shape[0] in _CHANNEL_COUNTS
        )
        if channels_first:
            array = np.moveaxis(array, 0, -1)
        if array.shape[-1] not in _CHANNEL_COUNTS:
            raise ValueError(f"cannot tell the channel axis of an image of shape {tuple(image.shape)}")
        if array.shape[-1] == 1:
            array = array[..., 0]
    elif array.ndim != 2:
        raise ValueError(f"an image must be 2-D (HxW) or 3-D (HxWxC / CxHxW), got shape {tuple(image.shape)}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"image is empty (shape {tuple(image.shape)}); drop it or fix its source")
    array = np.ascontiguousarray(_array_to_uint8(array))
    mode = "L" if array.ndim == 2 else _CHANNEL_MODES[array.shape[-1]]
    return PIL.Image.fromarray(array, mode=mode).convert("RGB")


class SceneTextImageProcessor(PilBackend):
    """Resizes any image to a fixed `size` with PIL bicubic (aspect ratio not kept), rescales by 1/255 and
    normalises with a named mean/std preset. Returns `pixel_values` float32 `[B, 3, H, W]`.

    Subclasses set `size`, `normalization_presets` and the default `normalization`; choosing a preset (rather than
    raw numbers) keeps the protocol explicit in the saved `preprocessor_config.json`.
    """

    valid_kwargs = SceneTextImageProcessorKwargs
    model_input_names = ["pixel_values"]
    normalization_presets: ClassVar[dict[str, tuple[tuple[float, ...], tuple[float, ...]]]] = {
        "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    }
    normalization = "half"
    resample = PILImageResampling.BICUBIC
    size = {"height": 32, "width": 128}
    image_mean = (0.5, 0.5, 0.5)
    image_std = (0.5, 0.5, 0.5)
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    return_tensors = "pt"

    def __init__(self, normalization: str | None = None, **kwargs: Any) -> None:
        normalization = normalization or type(self).normalization
        mean, std = self._resolve_normalization(normalization, kwargs.get("image_mean"), kwargs.get("image_std"))
        super().__init__(normalization=normalization, **dict(kwargs, image_mean=mean, image_std=std))

    def _resolve_normalization(
        self, normalization: str, image_mean: Sequence[float] | None, image_std: Sequence[float] | None
    ) -> tuple[Sequence[float] | None, Sequence[float] | None]:
        """Mean/std of a preset; explicit values must agree with it (or use normalization="custom")."""
        if normalization == "custom":
            return image_mean, image_std
        if normalization not in self.normalization_presets:
            raise ValueError(
                f"normalization={normalization!r} is not one of {sorted(self.normalization_presets)} or 'custom'"
            )
        preset = self.normalization_presets[normalization]
        for name, given, expected in (("image_mean", image_mean, preset[0]), ("image_std", image_std, preset[1])):
            if given is not None and not np.allclose(np.broadcast_to(given, (3,)), expected, rtol=0, atol=1e-9):
                raise ValueError(
                    f"{name}={list(np.atleast_1d(given))} contradicts normalization={normalization!r} {list(expected)}; "
                    "pass normalization='custom' to use your own mean/std"
                )
        return list(preset[0]), list(preset[1])

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        if output.get("normalization", "custom") != "custom":
            # Derived from the preset: saving them would make `from_pretrained(..., normalization=other)` conflict.
            output.pop("image_mean", None)
            output.pop("image_std", None)
        return output

    def preprocess(self, images: Any, *args: Any, normalization: str | None = None, **kwargs: Any):
        if normalization is not None:
            mean, std = self._resolve_normalization(normalization, kwargs.get("image_mean"), kwargs.get("image_std"))
            kwargs.update(image_mean=mean, image_std=std)
        return super().preprocess(images, *args, **kwargs)

    def _prepare_images_structure(self, images: Any, expected_ndims: int = 3) -> list[Any]:
        """A flat list of single images: one image, a list of images, or a 4-D batch array/tensor."""
        if isinstance(images, (list, tuple)):
            flat = []
            for item in images:
                flat.extend(item if isinstance(item, (list, tuple)) else [item])
            return flat
        if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
            return list(images)
        return [images]

    def _prepare_image_like_inputs(self, images: Any, *args: Any, **kwargs: Any) -> list[np.ndarray]:
        images = self._prepare_images_structure(images)
        if not images:
            raise ValueError("no images were given")
        prepared = []
        for index, image in enumerate(images):
            try:
                prepared.append(self.process_image(image, *args, **kwargs))
            except (ValueError, TypeError) as error:
                raise type(error)(f"image {index} ({_describe(image)}): {error}") from error
        return prepared

    def process_image(
        self,
        image: Any,
        do_convert_rgb: bool | None = None,
        input_data_format: str | ChannelDimension | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """One image -> uint8 RGB, channels first (resizing happens on these 8-bit pixels, like the originals)."""
        rgb = to_rgb_pil(image, input_data_format)
        return np.ascontiguousarray(np.moveaxis(np.asarray(rgb), -1, 0))

    def _preprocess(self, images: list[np.ndarray], **kwargs: Any):
        output = super()._preprocess(images, **kwargs)
        pixel_values = output["pixel_values"]
        if isinstance(pixel_values, torch.Tensor) and pixel_values.dtype != torch.float32:
            output["pixel_values"] = pixel_values.float()
        return output


__all__ = ["SceneTextImageProcessor", "load_rgb_image", "open_image_source", "to_rgb_pil"]
