"""Image processors: parity with the originals' transforms, every input kind, clear errors, config round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from processing.image_processing_clip4str import OPENAI_CLIP_MEAN, CLIP4STRImageProcessor
from processing.image_processing_dig import DiGImageProcessor
from tolerances import assert_close


def _reload(processor, path):
    processor.save_pretrained(path)
    return type(processor).from_pretrained(path)


def test_dig_parity_with_original_eval_transform(dig_fixtures, tmp_path):
    inputs = load_file(str(dig_fixtures / "inputs.safetensors"))
    processor = _reload(DiGImageProcessor(), tmp_path)
    raws = [inputs[f"raw_image_{i}"].numpy() for i in range(3)]
    out = processor([Image.fromarray(r) for r in raws])["pixel_values"]
    assert out.shape == (3, 3, 32, 128) and out.dtype == torch.float32
    assert_close(out, inputs["pixel_values_from_raw"], rel=1e-6)
    assert_close(processor(raws)["pixel_values"], inputs["pixel_values_from_raw"], rel=1e-6)


@pytest.mark.parametrize(("normalization", "key"), [("test", "pixel_values"), ("clip", "pixel_values_train_norm")])
def test_clip4str_parity_with_original_transforms(clip4str_fixtures, tmp_path, normalization, key):
    inputs = load_file(str(clip4str_fixtures / "inputs.safetensors"))
    processor = _reload(CLIP4STRImageProcessor(normalization=normalization), tmp_path)
    config = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert config["normalization"] == normalization
    raws = [Image.fromarray(inputs[f"raw_image_{i}"].numpy()) for i in range(3)]
    out = processor(raws)["pixel_values"]
    assert out.shape == (3, 3, 224, 224)
    assert_close(out, inputs[key], rel=1e-6)


def test_per_call_normalization_override(clip4str_fixtures):
    inputs = load_file(str(clip4str_fixtures / "inputs.safetensors"))
    raw = inputs["raw_image_0"].numpy()
    processor = CLIP4STRImageProcessor()  # default: CLIP mean/std
    assert processor.normalization == "clip" and tuple(processor.image_mean) == OPENAI_CLIP_MEAN
    out = processor(raw, normalization="test")["pixel_values"]
    assert_close(out, inputs["pixel_values"][:1], rel=1e-6)


def test_normalization_can_be_overridden_on_load(clip4str_fixtures, tmp_path):
    inputs = load_file(str(clip4str_fixtures / "inputs.safetensors"))
    CLIP4STRImageProcessor(normalization="clip").save_pretrained(tmp_path)
    config = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert "image_mean" not in config  # derived from the preset, not a second source of truth
    processor = CLIP4STRImageProcessor.from_pretrained(tmp_path, normalization="test")
    assert processor.normalization == "test" and tuple(processor.image_mean) == (0.5, 0.5, 0.5)
    out = processor(inputs["raw_image_2"].numpy())["pixel_values"]
    assert_close(out, inputs["pixel_values"][2:], rel=1e-6)
    custom = CLIP4STRImageProcessor(normalization="custom", image_mean=[0.1] * 3, image_std=[0.2] * 3)
    custom.save_pretrained(tmp_path / "custom")
    assert tuple(CLIP4STRImageProcessor.from_pretrained(tmp_path / "custom").image_std) == (0.2, 0.2, 0.2)


def test_normalization_conflicts_are_refused():
    with pytest.raises(ValueError, match="contradicts normalization='clip'"):
        CLIP4STRImageProcessor(image_mean=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="not one of"):
        CLIP4STRImageProcessor(normalization="imagenet")
    custom = CLIP4STRImageProcessor(normalization="custom", image_mean=[0.0] * 3, image_std=[1.0] * 3)
    white = Image.new("RGB", (10, 10), (255, 255, 255))
    assert torch.allclose(custom(white)["pixel_values"], torch.ones(1, 3, 224, 224))


def _rgb_reference() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(20, 50, 3), dtype=np.uint8)


def test_every_input_kind_gives_the_same_pixels():
    processor = DiGImageProcessor()
    rgb = _rgb_reference()
    expected = processor(Image.fromarray(rgb))["pixel_values"]
    variants = {
        "numpy HxWx3 uint8": rgb,
        "numpy HxWx3 float": rgb.astype(np.float32) / 255.0,
        "numpy 3xHxW": np.moveaxis(rgb, -1, 0),
        "torch 3xHxW uint8": torch.from_numpy(np.moveaxis(rgb, -1, 0).copy()),
        "torch 3xHxW float": torch.from_numpy(np.moveaxis(rgb, -1, 0).copy()).float() / 255.0,
        "PIL RGBA": Image.fromarray(rgb).convert("RGBA"),
        "numpy HxWx4": np.asarray(Image.fromarray(rgb).convert("RGBA")),
    }
    for name, image in variants.items():
        out = processor(image)["pixel_values"]
        assert torch.equal(out, expected), name


def test_grayscale_and_exotic_modes():
    processor = DiGImageProcessor()
    gray = np.random.default_rng(1).integers(0, 256, size=(16, 40), dtype=np.uint8)
    expected = processor(Image.fromarray(gray).convert("RGB"))["pixel_values"]
    for name, image in {
        "L": Image.fromarray(gray),
        "LA": Image.fromarray(gray).convert("LA"),
        "P": Image.fromarray(gray).convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=256),
        "numpy HxW": gray,
        "numpy HxWx1": gray[..., None],
        "torch 1xHxW": torch.from_numpy(gray)[None],
        "I;16 (scaled, not clipped)": Image.fromarray(gray.astype(np.uint16) * 257),
    }.items():
        out = processor(image)["pixel_values"]
        assert out.shape == (1, 3, 32, 128), name
        tolerance = 2 / 255 / 0.5 if name == "P" else 0.0  # palettes may round a level
        assert (out - expected).abs().max() <= tolerance + 1e-7, name
    cmyk = processor(Image.new("CMYK", (30, 10), (0, 0, 0, 0)))["pixel_values"]  # no ink = white
    assert torch.allclose(cmyk, torch.ones_like(cmyk))
    binary = processor(Image.new("1", (30, 10), 1))["pixel_values"]
    assert torch.allclose(binary, torch.ones_like(binary))


def test_bad_images_give_clear_errors():
    processor = DiGImageProcessor()
    good = np.zeros((8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"image 1 .*empty"):
        processor([good, np.zeros((0, 10, 3), dtype=np.uint8)])
    with pytest.raises(ValueError, match="empty"):
        processor(Image.new("RGB", (0, 5)))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        processor(np.full((4, 4, 3), 3.0, dtype=np.float32))
    with pytest.raises(ValueError, match="image 0 .*Incorrect image source"):
        processor(["no/such/file.png"])
    with pytest.raises(TypeError, match="unsupported image type"):
        processor([{"image": good}])


def test_image_paths_are_loaded(tmp_path):
    processor = DiGImageProcessor()
    rgb = _rgb_reference()
    Image.fromarray(rgb).save(tmp_path / "word.png")
    assert torch.equal(processor(str(tmp_path / "word.png"))["pixel_values"], processor(rgb)["pixel_values"])


def test_batch_tensor_input_and_sizes():
    processor = CLIP4STRImageProcessor()
    batch = torch.randint(0, 256, (2, 3, 40, 60), dtype=torch.uint8)
    out = processor(batch)["pixel_values"]
    assert out.shape == (2, 3, 224, 224) and out.dtype == torch.float32
    assert torch.equal(out[1:], processor(batch[1])["pixel_values"])
