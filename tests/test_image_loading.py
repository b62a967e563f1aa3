"""One image loader for every path: the processor, the pipeline, `train_ocr read`, the LMDB readers (datasets and
torch), the training augmentation and pre-training see the same pixels for every PIL mode (16-bit ones scaled,
not clipped to white)."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from processing.augmentation import DiGTrainAugment, PARSeqRandAugment
from processing.image_processing_scene_text import load_rgb_image
from processing.lazy_lmdb_dataset import STRLmdbDataset
from processing.lmdb_dataset import load_str_lmdb
from processing.lmdb_writer import write_str_lmdb
from processing.pipeline_scene_text import SceneTextRecognitionPipeline
from processing.processing_dig import DiGProcessor
from scene_text_training.collators import SceneTextCollator, augment_transform
from scene_text_training.pretrain import PretrainImageDataset
from scene_text_training.reading import open_image

_RNG = np.random.default_rng(0)
_GRAY16 = _RNG.integers(0, 65536, size=(12, 40), dtype=np.uint16)


def _mode_images() -> dict[str, Image.Image]:
    """One image per mode; the 16/32-bit and float ones hold values well above 255 (or in [0, 1])."""
    rgb = _RNG.integers(0, 256, size=(12, 40, 3), dtype=np.uint8)
    return {
        "I;16": Image.fromarray(_GRAY16),
        "I": Image.fromarray(_GRAY16.astype(np.int32)),
        "F": Image.fromarray((_GRAY16 / 65535.0).astype(np.float32)),
        "LA": Image.fromarray(rgb).convert("LA"),
        "P": Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=64),
        "RGBA": Image.fromarray(rgb).convert("RGBA"),
        "CMYK": Image.fromarray(rgb).convert("CMYK"),
    }


def _tiff(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="TIFF")  # TIFF stores every one of these modes as it is
    return buffer.getvalue()


@pytest.fixture(scope="module")
def images() -> dict[str, Image.Image]:
    images = _mode_images()
    for mode, image in images.items():
        assert Image.open(io.BytesIO(_tiff(image))).mode == mode  # the encoded bytes keep the mode
    return images


def test_sixteen_bit_images_are_scaled_not_clipped(images):
    processor = DiGProcessor()
    eight_bit = Image.fromarray(np.round(_GRAY16 / 257.0).astype(np.uint8))
    expected = processor(images=eight_bit)["pixel_values"]
    for mode in ("I;16", "I"):
        assert torch.equal(processor(images=images[mode])["pixel_values"], expected), mode
        assert torch.equal(processor(images=load_rgb_image(_tiff(images[mode])))["pixel_values"], expected), mode
    assert (expected < 0.99).float().mean() > 0.5  # not the all-white image convert("RGB") makes of it


def test_every_path_sees_the_same_pixels_for_every_mode(images, tmp_path):
    processor = DiGProcessor()
    modes = list(images)
    expected = {mode: processor(images=image)["pixel_values"] for mode, image in images.items()}

    def check(path: str, mode: str, pixel_values: torch.Tensor) -> None:
        assert torch.equal(pixel_values, expected[mode]), f"{path} differs for mode {mode}"

    files = tmp_path / "files"
    files.mkdir()
    for mode, image in images.items():
        (files / f"{mode.replace(';', '_')}.tiff").write_bytes(_tiff(image))
    write_str_lmdb(tmp_path / "db", [(_tiff(images[mode]), "word") for mode in modes])

    pipeline = SimpleNamespace(processor=processor, dtype=torch.float32)  # the pipeline's preprocess step
    datasets_rows = load_str_lmdb(tmp_path / "db", cache_dir=str(tmp_path / "cache"))
    identity = DiGTrainAugment(0, geometry_p=0.0, deterioration_p=0.0, color_p=0.0)
    augmented_rows = datasets_rows.with_transform(augment_transform(identity))
    torch_rows = STRLmdbDataset(tmp_path / "db")
    pretrain_lmdb = PretrainImageDataset([tmp_path / "db"])
    pretrain_files = PretrainImageDataset([files])
    never = PARSeqRandAugment(0, p=0.0)
    for index, mode in enumerate(modes):
        file = files / f"{mode.replace(';', '_')}.tiff"
        check("train_ocr read", mode, processor(images=open_image(file))["pixel_values"])
        for given in (images[mode], str(file)):
            check("pipeline", mode, SceneTextRecognitionPipeline._scene_text_preprocess(pipeline, given)["pixel_values"])
        check("processor(path)", mode, processor(images=str(file))["pixel_values"])
        collated = SceneTextCollator(processor)([datasets_rows[index]])  # evaluation and un-augmented training
        check("datasets LMDB + collator", mode, collated["pixel_values"])
        check("augmented training", mode, SceneTextCollator(processor)([augmented_rows[index]])["pixel_values"])
        check("torch LMDB dataset", mode, processor(images=torch_rows[index]["image"])["pixel_values"])
        check("pre-training LMDB", mode, processor(images=pretrain_lmdb[index]["image"])["pixel_values"])
        by_name = {Path(location).stem: i for i, (_, location) in enumerate(pretrain_files.sources)}
        item = pretrain_files[by_name[file.stem]]
        check("pre-training files", mode, processor(images=item["image"])["pixel_values"])
        check("RandAugment", mode, processor(images=never(images[mode]))["pixel_values"])


def test_urls_and_base64_are_loaded_without_clipping(images, tmp_path):
    import base64
    import functools
    import http.server
    import threading

    processor = DiGProcessor()
    expected = processor(images=images["I;16"])["pixel_values"]
    (tmp_path / "word.tiff").write_bytes(_tiff(images["I;16"]))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/word.tiff"
        pipeline = SimpleNamespace(processor=processor, dtype=torch.float32)
        assert torch.equal(SceneTextRecognitionPipeline._scene_text_preprocess(pipeline, url, timeout=10)[
            "pixel_values"], expected)
        assert torch.equal(processor(images=url)["pixel_values"], expected)
    finally:
        server.shutdown()
        server.server_close()
    encoded = base64.b64encode(_tiff(images["I;16"])).decode()
    assert torch.equal(processor(images=f"data:image/tiff;base64,{encoded}")["pixel_values"], expected)
