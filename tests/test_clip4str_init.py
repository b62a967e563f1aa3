"""Initialising CLIP4STR from CLIP weights: the fixture's clip_init.pt, open_clip, TorchScript, transformers CLIP."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from modeling_clip4str.clip_initialization import (
    clip4str_from_clip_file,
    clip4str_from_open_clip,
    clip4str_from_transformers_clip,
    load_clip_state_dict,
    round_like_original,
)
from tolerances import assert_close

TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "quick_gelu": True,  # CLIP4STR always runs QuickGELU
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
}
CAPTION_IDS = torch.tensor([[49406, 320, 1125, 49407] + [0] * 12, [49406, 9277, 21010, 280, 49407] + [0] * 11])


@pytest.fixture(scope="module")
def open_clip_model():
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(0)
    clip4str = clip4str_from_open_clip("clip4str-tiny-test", model_cfg=TINY_OPEN_CLIP, round_fp16=False).eval()
    torch.manual_seed(0)
    reference = open_clip.create_model("clip4str-tiny-test").eval()  # same seed -> same random CLIP
    return clip4str, reference


def assert_matches_open_clip(model, reference, rel: float = 1e-5) -> None:
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        image = model.get_image_features(pixels).pooler_output
        text = model.get_text_features(CAPTION_IDS).pooler_output
        # open_clip pools: ln_post(CLS) @ proj and the EOT token's feature; ours keep every token.
        assert_close(image[:, 0], reference.encode_image(pixels), rel=rel)
        eot = CAPTION_IDS.argmax(-1)
        assert_close(text[torch.arange(2), eot], reference.encode_text(CAPTION_IDS), rel=rel)


def test_clip_init_file_reproduces_the_original_initial_memories(clip4str_fixtures):
    model = clip4str_from_clip_file(clip4str_fixtures / "clip_init.pt", text_freeze_nlayer=1).eval()
    inputs = load_file(clip4str_fixtures / "inputs.safetensors")
    expected = load_file(clip4str_fixtures / "expected.safetensors")
    assert model.config.vision_config.num_attention_heads == 2  # width 128 // 64
    with torch.no_grad():
        image = model.get_image_features(inputs["pixel_values"]).pooler_output
        text = model.get_text_features(expected["captions_token_ids"]).pooler_output
    assert_close(image, expected["init_image_memory"], rel=1e-5)
    assert_close(text, expected["init_text_memory"], rel=1e-5)
    assert not model.text_model.encoder.layers[0].mlp.fc1.weight.requires_grad


def test_open_clip_model_name_with_custom_config(open_clip_model):
    model, reference = open_clip_model
    assert_matches_open_clip(model, reference)


def test_torchscript_and_state_dict_files(open_clip_model, tmp_path):
    _, reference = open_clip_model
    scripted = torch.jit.script(reference)
    scripted.save(str(tmp_path / "ViT-tiny.pt"))  # OpenAI's released .pt files are TorchScript archives
    torch.save(reference.state_dict(), tmp_path / "open_clip_model.bin")
    torch.save({"model": reference.state_dict()}, tmp_path / "wrapped.pt")
    for name in ("ViT-tiny.pt", "open_clip_model.bin", "wrapped.pt"):
        state_dict = load_clip_state_dict(tmp_path / name)
        assert torch.equal(state_dict["visual.conv1.weight"], reference.visual.conv1.weight), name
        model = clip4str_from_clip_file(tmp_path / name, round_fp16=False).eval()
        assert_matches_open_clip(model, reference)


def test_fp16_rounding_matches_the_original_loader(open_clip_model):
    _, reference = open_clip_model
    state_dict = reference.state_dict()
    rounded = round_like_original(state_dict)
    for key in (
        "visual.conv1.weight",
        "visual.proj",
        "text_projection",
        "transformer.resblocks.0.attn.in_proj_weight",
        "visual.transformer.resblocks.0.mlp.c_fc.bias",
    ):
        assert rounded[key].dtype == torch.float16, key
    for key in ("visual.ln_post.weight", "token_embedding.weight", "positional_embedding", "visual.class_embedding"):
        assert torch.equal(rounded[key], state_dict[key]), key  # the original keeps these in float32


def test_transformers_clip_folder(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        vision_config={
            "hidden_size": 64,
            "intermediate_size": 256,
            "num_hidden_layers": 1,
            "num_attention_heads": 1,
            "image_size": 32,
            "patch_size": 16,
        },
        text_config={
            "hidden_size": 64,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 1,
            "max_position_embeddings": 16,
        },
        projection_dim=32,
    )
    clip = CLIPModel(config).eval()
    clip.save_pretrained(tmp_path)
    model = clip4str_from_transformers_clip(tmp_path, round_fp16=False).eval()
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.get_image_features(pixels).pooler_output
        hidden = clip.vision_model(pixel_values=pixels).last_hidden_state
        theirs = clip.visual_projection(clip.vision_model.post_layernorm(hidden))
        assert_close(ours, theirs, rel=1e-6)
        text = model.get_text_features(CAPTION_IDS).pooler_output
        assert_close(text, clip.text_projection(clip.text_model(input_ids=CAPTION_IDS).last_hidden_state), rel=1e-6)


def test_not_a_clip_file_is_a_clear_error(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="visual.conv1.weight"):
        load_clip_state_dict(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        load_clip_state_dict(tmp_path / "missing.pt")
