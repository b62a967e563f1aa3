"""CLIP4STR with a rectangular image and column-strip patches (the CPU quickstart's layout): token order, the
square special case, save/load, the processor size and the size errors."""

from __future__ import annotations

import json

import pytest
import torch
from transformers.models.clip.modeling_clip import CLIPVisionEmbeddings

from modeling_clip4str import CLIP4STRForTextRecognition
from modeling_clip4str.vision_embeddings import RectangularCLIPVisionEmbeddings
from scene_text_training.models import build_processor
from tests.test_clip4str_model import tiny_config


def strip_config(**vision):
    config = tiny_config()
    config.vision_config.image_size = vision.get("image_size", [16, 64])
    config.vision_config.patch_size = vision.get("patch_size", [16, 4])
    return config


@pytest.fixture(scope="module")
def strips() -> CLIP4STRForTextRecognition:
    torch.manual_seed(0)
    return CLIP4STRForTextRecognition(strip_config()).eval()


def strip_pixels(height: int = 16, width: int = 64) -> torch.Tensor:
    return torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(3))


def test_strip_tokens_follow_the_reading_order(strips):
    embeddings = strips.vision_model.embeddings
    assert isinstance(embeddings, RectangularCLIPVisionEmbeddings)
    assert embeddings.grid_size == (1, 16) and embeddings.position_embedding.num_embeddings == 17
    pixels = strip_pixels()
    changed = pixels.clone()
    changed[..., 8:12] += 1.0  # the third 4-pixel column only
    with torch.no_grad():
        delta = (embeddings(changed) - embeddings(pixels)).abs().amax(dim=(0, 2))
        memory = strips.get_image_features(pixels).pooler_output
    assert delta.nonzero().flatten().tolist() == [3]  # class token first, then column strips left to right
    assert memory.shape == (2, 17, strips.config.projection_dim)
    assert strips.generate(pixel_values=pixels).shape == (2, strips.config.decoder.num_position_queries)


def test_square_pairs_are_stored_as_ints_and_keep_clips_own_embeddings():
    config = strip_config(image_size=[32, 32], patch_size=[16, 16])
    config = type(config)(**config.to_dict())  # the config's own validation normalises the pairs
    assert config.vision_config.image_size == 32 and config.vision_config.patch_size == 16
    model = CLIP4STRForTextRecognition(config)
    assert type(model.vision_model.embeddings) is CLIPVisionEmbeddings


def test_strip_model_saves_reloads_and_sizes_its_processor(tmp_path, strips):
    strips.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["vision_config"]
    assert saved["image_size"] == [16, 64] and saved["patch_size"] == [16, 4]
    reloaded = CLIP4STRForTextRecognition.from_pretrained(tmp_path).eval()
    pixels = strip_pixels()
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(pixel_values=pixels).logits, strips(pixel_values=pixels).logits, atol=0, rtol=0
        )
    processor = build_processor("clip4str", reloaded.config)
    assert processor.image_processor.size == {"height": 16, "width": 64}


def test_wrong_sizes_fail_clearly_and_interpolation_resizes_the_grid(strips):
    embeddings = strips.vision_model.embeddings
    with pytest.raises(ValueError, match="image processor"):
        embeddings(strip_pixels(16, 128))
    with torch.no_grad():
        native = embeddings(strip_pixels())
        torch.testing.assert_close(embeddings(strip_pixels(), interpolate_pos_encoding=True), native, atol=0, rtol=0)
        wider = embeddings(strip_pixels(16, 128), interpolate_pos_encoding=True)
    assert wider.shape == (2, 1 + 32, embeddings.embed_dim)
    with pytest.raises(ValueError, match="not a multiple of the patch width"):
        CLIP4STRForTextRecognition(strip_config(image_size=[16, 66]))
