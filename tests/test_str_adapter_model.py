"""CLIP4STR + Adapter beyond the golden fixtures: other CLIP sources, NAR decoding, save/load, training behaviour."""

from __future__ import annotations

import pytest
import torch
from tolerances import assert_close
from transformers import AutoConfig, AutoModelForImageTextToText, CLIPVisionConfig

from modeling_clip4str import CLIP4STRDecoderConfig, STRAdapterConfig, STRAdapterForTextRecognition
from modeling_clip4str.str_adapter_conversion import (
    prune_rows,
    str_adapter_from_open_clip,
    str_adapter_from_transformers_clip,
    vision_state_dict_to_openai,
)
from modeling_clip4str.weight_conversion import convert_clip_state_dict

TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
}


def tiny_config(adapter_type: str = "ladder_pruning", **overrides) -> STRAdapterConfig:
    vision = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=16,
        hidden_act="quick_gelu",
        projection_dim=32,
    )
    decoder = CLIP4STRDecoderConfig(d_model=32, num_heads=4, max_label_length=6)
    kwargs = {"block_ids": [0, 1], "prune_reduction": 4, **overrides}
    return STRAdapterConfig(
        vision_config=vision, decoder=decoder, projection_dim=32, adapter_type=adapter_type, **kwargs
    )


def labels() -> torch.Tensor:
    return torch.tensor([[11, 12, 13, 0, -100, -100], [21, 22, 23, 24, 25, 0]])


def test_vision_layout_round_trips_to_openai(str_adapter_clip_file):
    clip = torch.load(str_adapter_clip_file, weights_only=True)["model"]
    ours, _ = convert_clip_state_dict(clip)
    vision = {k: v for k, v in ours.items() if k.startswith(("vision_model.", "visual_projection."))}
    openai = vision_state_dict_to_openai(vision)
    assert set(openai) == {k for k in clip if k.startswith("visual.")}
    assert all(torch.equal(openai[k], clip[k]) for k in openai)


@pytest.fixture
def str_adapter_clip_file():
    from conftest import fixture_dir

    return fixture_dir("str_adapter") / "clip_init.pt"


def test_open_clip_initialisation_builds_the_pruned_ladder_from_its_blocks():
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(0)
    model = str_adapter_from_open_clip(
        "str-adapter-tiny-test",
        model_cfg=TINY_OPEN_CLIP,
        round_fp16=False,
        adapter_type="ladder_pruning",
        block_ids=[1],
        prune_reduction=4,
        dec_num_heads=4,
    ).eval()
    torch.manual_seed(0)
    reference = open_clip.create_model("str-adapter-tiny-test").eval()
    in_proj = reference.visual.transformer.resblocks[1].attn.in_proj_weight.detach()
    side = model.adapter.side_blocks[0].self_attn
    assert torch.equal(side.q_proj.weight, prune_rows(in_proj.chunk(3)[0], 4))
    assert torch.equal(side.v_proj.weight, prune_rows(in_proj.chunk(3)[2], 4))
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        memory, _ = model.get_image_features(pixels)
        assert_close(memory[:, 0], reference.encode_image(pixels))


def test_transformers_clip_initialisation_copies_the_ladder_blocks(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    clip = CLIPModel(
        CLIPConfig(
            vision_config={
                "hidden_size": 64,
                "intermediate_size": 256,
                "num_hidden_layers": 2,
                "num_attention_heads": 1,
                "image_size": 32,
                "patch_size": 16,
            },
            text_config={
                "hidden_size": 64,
                "intermediate_size": 256,
                "num_hidden_layers": 1,
                "num_attention_heads": 1,
                "max_position_embeddings": 16,
            },
            projection_dim=32,
        )
    ).eval()
    clip.save_pretrained(tmp_path)
    model = str_adapter_from_transformers_clip(tmp_path, adapter_type="ladder", block_ids=[0, 1], dec_num_heads=4)
    layer = clip.vision_model.encoder.layers[1]
    side = model.adapter.side_blocks[1]
    assert torch.equal(side.self_attn.k_proj.weight, layer.self_attn.k_proj.weight.detach().half().float())
    assert torch.equal(side.layer_norm2.weight, layer.layer_norm2.weight.detach())  # LayerNorms are not rounded
    assert torch.equal(model.adapter.projection.weight, clip.visual_projection.weight.detach().half().float())


@pytest.mark.parametrize("adapter_type", ["linear", "attention", "ladder", "linear_ladder", "ladder_pruning"])
def test_nar_decoding_cached_and_uncached_agree(adapter_type):
    torch.manual_seed(0)
    model = STRAdapterForTextRecognition(tiny_config(adapter_type, decode_ar=False)).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        cached = model(pixel_values=pixels, output_intermediates=True)
        uncached = model(pixel_values=pixels, use_cache=False, output_intermediates=True)
        parallel = model.decoder(
            torch.full((2, 1), model.config.bos_token_id), cached.adapter_memory, query_positions=slice(0, 7)
        ).logits
    assert cached.logits.shape == (2, 7, 95)
    assert_close(cached.logits_ar, parallel)  # NAR: one pass of every position query over BOS
    assert_close(cached.logits, uncached.logits)


def test_save_load_round_trip_keeps_outputs_and_freezing(tmp_path):
    torch.manual_seed(0)
    model = STRAdapterForTextRecognition(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).adapter_type == "ladder_pruning"
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, STRAdapterForTextRecognition)
    assert not any(p.requires_grad for p in loaded.vision_model.parameters())
    assert all(p.requires_grad for p in loaded.adapter.parameters())
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(pixel_values=pixels).logits, loaded(pixel_values=pixels).logits)


def test_training_step_is_seedable_and_trains_only_adapter_and_decoder():
    torch.manual_seed(0)
    model = STRAdapterForTextRecognition(tiny_config()).train()
    pixels = torch.randn(2, 3, 32, 32)
    losses = []
    for _ in range(2):
        torch.manual_seed(1)  # dropout
        out = model(pixel_values=pixels, labels=labels(), generator=torch.Generator().manual_seed(3))
        losses.append(out.loss.item())
    assert losses[0] == losses[1]
    assert out.ce_terms.shape == (6,)
    out.loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.grad is not None}
    assert trainable == {n for n, p in model.named_parameters() if n.startswith(("adapter.", "decoder."))}


def test_optimizer_groups_follow_the_original():
    model = STRAdapterForTextRecognition(tiny_config("linear"))
    groups = {g["name"]: g for g in model.optimizer_groups(lr=1e-3, weight_decay=0.2)}
    assert not groups["enc_weight_decay"]["names"]  # linear / attention / linear_ladder join the decoder groups
    assert "adapter.fc1.weight" in groups["dec_weight_decay"]["names"]
    assert groups["dec_weight_decay"]["lr"] == pytest.approx(1e-3 * 19.0)
    assert {"decoder.pos_queries", "decoder.text_embed.embedding.weight", "decoder.head.bias"} <= set(
        groups["dec_no_weight_decay"]["names"]
    )
    assert "decoder.head.weight" in groups["dec_weight_decay"]["names"]
    ladder = STRAdapterForTextRecognition(tiny_config("ladder_pruning"))
    groups = {g["name"]: g for g in ladder.optimizer_groups(lr=1e-3, weight_decay=0.2)}
    assert "adapter.projection.weight" in groups["enc_weight_decay"]["names"]
    assert "adapter.alpha" in groups["enc_no_weight_decay"]["names"]
    assert groups["enc_weight_decay"]["lr"] == pytest.approx(1e-3)
    named = sum(len(g["names"]) for g in groups.values())
    assert named == sum(1 for p in ladder.parameters() if p.requires_grad)


def test_bad_ladder_settings_are_config_errors():
    from huggingface_hub.errors import StrictDataclassClassValidationError

    errors = (ValueError, StrictDataclassClassValidationError)
    with pytest.raises(errors, match="block_ids"):
        tiny_config("ladder", block_ids=[5])
    with pytest.raises(errors, match="prune_reduction"):
        tiny_config("ladder_pruning", prune_reduction=3)


@pytest.mark.parametrize("adapter_type", ["linear", "ladder_pruning"])
def test_a_tiny_model_fits_two_words_with_the_original_groups(adapter_type):
    torch.manual_seed(0)
    model = STRAdapterForTextRecognition(tiny_config(adapter_type)).train()
    clip_before = model.vision_model.encoder.layers[0].mlp.fc1.weight.clone()
    optimizer = torch.optim.AdamW(model.optimizer_groups(lr=2e-4, weight_decay=0.0), betas=(0.9, 0.98), eps=1e-6)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(2)
    losses = []
    for _ in range(40):
        loss = model(pixel_values=pixels, labels=labels(), generator=generator).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses[::10]
    assert torch.equal(model.vision_model.encoder.layers[0].mlp.fc1.weight, clip_before)  # CLIP stays frozen
    model.eval()
    with torch.no_grad():
        assert torch.equal(
            model.generate(pixel_values=pixels)[:, :4], torch.tensor([[11, 12, 13, 0], [21, 22, 23, 24]])
        )
