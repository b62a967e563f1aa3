"""DiGForPreTraining: config, losses, momentum branch, DDP-style key gathering, Auto API, recognizer init."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub.errors import StrictDataclassError

import modeling_dig.modeling_dig_pretraining as pretraining_module
from modeling_dig.configuration_dig import DiGEncoderConfig
from modeling_dig.configuration_dig_pretraining import DiGPreTrainingConfig
from modeling_dig.encoder_initialization import is_pretraining_folder, load_pretrained_encoder
from modeling_dig.modeling_dig_pretraining import (
    DiGForPreTraining,
    contrastive_loss,
    momentum_schedule,
    patchify,
    register_dig_pretraining_auto_classes,
    unpatchify,
)
from processing.masking import DiGMaskGenerator


def _tiny_model(**overrides) -> DiGForPreTraining:
    torch.manual_seed(0)
    return DiGForPreTraining(DiGPreTrainingConfig.from_preset("tiny-test", **overrides))


def _batch(batch_size: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "pixel_values": torch.rand(batch_size, 3, 32, 128, generator=generator) * 2 - 1,
        "augmented_pixel_values": torch.rand(batch_size, 3, 32, 128, generator=generator) * 2 - 1,
        "bool_masked_pos": DiGMaskGenerator((8, 32), 0.7)(batch_size, generator=generator),
    }


def test_released_preset_and_validation():
    config = DiGPreTrainingConfig.from_preset("vit-small")
    assert (config.encoder.hidden_size, config.encoder.num_hidden_layers, config.encoder.num_attention_heads) == (
        384,
        12,
        6,
    )
    assert not config.encoder.use_final_norm and config.encoder.drop_path_rate == 0.0
    assert (config.mask_ratio, config.num_windows, config.moco_dim, config.moco_mlp_dim) == (0.7, 4, 256, 4096)
    assert (config.temperature, config.momentum, config.loss_weight_pixel, config.loss_weight_contrast) == (
        0.2,
        0.99,
        1.0,
        0.1,
    )
    assert (config.pix_projector_hidden_size, config.mim_head_hidden_size, config.num_masked_patches) == (512, 192, 179)
    # @strict wraps validate_architecture's ValueError in huggingface_hub's StrictDataclassClassValidationError.
    with pytest.raises(StrictDataclassError, match="use_final_norm=False"):
        DiGPreTrainingConfig(encoder=DiGEncoderConfig(use_final_norm=True))
    with pytest.raises(StrictDataclassError, match="num_windows"):
        DiGPreTrainingConfig.from_preset("tiny-test", num_windows=64)
    with pytest.raises(ValueError, match="Unknown DiG pre-training preset"):
        DiGPreTrainingConfig.from_preset("vit-huge")


def test_config_round_trip(tmp_path):
    config = DiGPreTrainingConfig.from_preset("tiny-test", temperature=0.3)
    config.save_pretrained(tmp_path)
    loaded = DiGPreTrainingConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert isinstance(loaded.encoder, DiGEncoderConfig) and not loaded.encoder.use_final_norm


def test_forward_losses_and_gradients():
    model = _tiny_model().train()
    batch = _batch()
    output = model(**batch, momentum=0.99)
    assert output.mim_prediction.shape == (4, 179, 48) and output.mim_target.shape == (4, 179, 48)
    assert output.mim_reconstruction.shape == (4, 256, 48)
    assert output.q1.shape == (16, 16) and output.k2.shape == (16, 16)
    assert output.window_features.shape == (8, 4, 32)
    # The MIM target is the un-normalised original view at the masked patches, in (row, col, channel) order.
    expected_target = patchify(batch["pixel_values"] * 0.5 + 0.5, 4)[batch["bool_masked_pos"]].reshape(4, 179, 48)
    torch.testing.assert_close(output.mim_target, expected_target, atol=0, rtol=0)
    torch.testing.assert_close(output.mim_loss, F.mse_loss(output.mim_prediction, output.mim_target))
    torch.testing.assert_close(output.loss, output.mim_loss + 0.1 * output.contrastive_loss)
    output.loss.backward()
    assert model.encoder.mask_token.grad is not None and model.encoder.mask_token.grad.abs().sum() > 0
    assert model.pix_projector[0].weight.grad is not None and model.predictor[0].weight.grad is not None
    assert all(p.grad is None and not p.requires_grad for p in model.momentum_encoder.parameters())


def test_momentum_branch_starts_equal_and_follows_the_default_momentum():
    model = _tiny_model()
    for (name, online), (_, target) in zip(model.encoder.named_parameters(), model.momentum_encoder.named_parameters()):
        assert torch.equal(online, target), name
    with torch.no_grad():
        model.encoder.blocks[0].mlp.fc1.weight.add_(1.0)
    before = model.momentum_encoder.blocks[0].mlp.fc1.weight.clone()
    model.eval()
    with torch.no_grad():
        model(**_batch())  # eval without momentum: no EMA update
    assert torch.equal(model.momentum_encoder.blocks[0].mlp.fc1.weight, before)
    model.train()
    with torch.no_grad():
        model(**_batch())  # train without momentum: config.momentum (0.99)
    torch.testing.assert_close(model.momentum_encoder.blocks[0].mlp.fc1.weight, before + 0.01)


def test_bad_mask_shape_is_a_clear_error():
    model = _tiny_model()
    batch = _batch()
    batch["bool_masked_pos"] = batch["bool_masked_pos"][:, :128]
    with pytest.raises(ValueError, match="bool_masked_pos"):
        model(**batch)


def test_contrastive_labels_are_offset_by_rank(monkeypatch):
    """Under DDP each process's positives sit after the keys of the lower ranks in the gathered key matrix."""
    generator = torch.Generator().manual_seed(0)
    queries, keys, other_keys = (torch.randn(6, 8, generator=generator) for _ in range(3))
    monkeypatch.setattr(pretraining_module, "_world", lambda: (2, 1))
    monkeypatch.setattr(pretraining_module, "gather_keys", lambda k: torch.cat([F.normalize(other_keys, dim=1), k]))
    loss, _ = contrastive_loss(queries, keys, 0.2)
    logits = F.normalize(queries, dim=1) @ torch.cat([F.normalize(other_keys, dim=1), F.normalize(keys, dim=1)]).T / 0.2
    expected = F.cross_entropy(logits, torch.arange(6) + 6) * 0.4
    torch.testing.assert_close(loss, expected)


def test_momentum_schedule():
    assert momentum_schedule(0, 100) == pytest.approx(0.99)
    assert momentum_schedule(50, 100) == pytest.approx(0.995)
    assert momentum_schedule(100, 100) == pytest.approx(1.0)


def test_patchify_round_trip_and_order():
    pixels = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).reshape(2, 3, 8, 12)
    patches = patchify(pixels, 4)
    assert patches.shape == (2, 6, 48)
    # patch 1 = row 0, col 1; element (p1=0, p2=1, c=2) sits at (p1 * 4 + p2) * 3 + c
    assert patches[0, 1, (0 * 4 + 1) * 3 + 2] == pixels[0, 2, 0, 4 + 1]
    assert torch.equal(unpatchify(patches, 4, (2, 3), 3), pixels)
    strips = patchify(pixels, (8, 2))  # rectangular: one patch per 2-pixel column strip
    assert strips.shape == (2, 6, 48)
    assert strips[1, 3, (5 * 2 + 1) * 3 + 0] == pixels[1, 0, 5, 3 * 2 + 1]
    assert torch.equal(unpatchify(strips, (8, 2), (1, 6), 3), pixels)


def test_auto_classes(tmp_path):
    from transformers import AutoConfig, AutoModelForPreTraining

    register_dig_pretraining_auto_classes()
    model = _tiny_model()
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), DiGPreTrainingConfig)
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path)
    assert isinstance(reloaded, DiGForPreTraining)
    for key, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key
    # The non-persistent position table is rebuilt, not left as uninitialised memory.
    assert torch.equal(reloaded.encoder.position_embeddings, model.encoder.position_embeddings)


def test_recognizer_initialised_from_pretraining_folder(tmp_path, caplog):
    from modeling_dig import DiGConfig, DiGForTextRecognition

    pretrained = _tiny_model()
    with torch.no_grad():
        for param in pretrained.parameters():
            param.add_(0.5)  # far from any default init
    pretrained.save_pretrained(tmp_path)
    config = DiGConfig.from_preset("tiny-test")
    with caplog.at_level(logging.INFO, logger="modeling_dig.encoder_initialization"):
        recognizer, report = DiGForTextRecognition.from_pretrained_encoder(tmp_path, config, output_loading_info=True)
    assert "start fresh" in caplog.text and "initialised" in caplog.text
    num_blocks = config.encoder.num_hidden_layers
    assert len(report.loaded) == 2 + 13 * num_blocks  # patch embed (2), 13 tensors per block
    assert "encoder.mask_token" in report.ignored  # the recognizer never masks, so it has no mask token
    assert "encoder.norm.weight" in report.fresh and any(k.startswith("decoder.") for k in report.fresh)
    assert not any(k.startswith("momentum_") for k in report.loaded)
    state = recognizer.state_dict()
    for key in report.loaded:
        assert torch.equal(state[key], pretrained.state_dict()[key]), key
    assert torch.equal(state["encoder.norm.weight"], torch.ones_like(state["encoder.norm.weight"]))
    # Same thing into an existing model (the fine-tuning recipe's `init_from` path).
    fresh = DiGForTextRecognition(config)
    again = load_pretrained_encoder(fresh, tmp_path)
    assert again.loaded == report.loaded
    assert torch.equal(
        fresh.state_dict()["encoder.blocks.1.attn.qkv.weight"], state["encoder.blocks.1.attn.qkv.weight"]
    )


def test_recognizer_init_rejects_mismatched_sizes(tmp_path):
    from modeling_dig import DiGConfig, DiGForTextRecognition

    _tiny_model().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="pre-training shape"):
        DiGForTextRecognition.from_pretrained_encoder(
            tmp_path, DiGConfig.from_preset("tiny-test", encoder={"hidden_size": 64})
        )


def test_from_pretrained_refuses_a_pretraining_folder(tmp_path):
    """from_pretrained is PreTrainedModel's: a pre-training folder (saved model or run_pretraining output) is refused
    in one line naming the folder and from_pretrained_encoder, while an ordinary recognizer folder loads."""
    from modeling_dig import DiGConfig, DiGForTextRecognition

    pretrained = _tiny_model()
    pretrained.save_pretrained(tmp_path / "run" / "final")  # the layout of a run_pretraining output folder
    pretrained.save_pretrained(tmp_path / "saved")
    assert is_pretraining_folder(tmp_path / "run") and not is_pretraining_folder(tmp_path / "missing")
    for folder in (tmp_path / "run", tmp_path / "saved"):
        with pytest.raises(ValueError) as error:
            DiGForTextRecognition.from_pretrained(folder, config=DiGConfig.from_preset("tiny-test"))
        message = str(error.value)
        assert "\n" not in message and str(folder) in message
        assert f"DiGForTextRecognition.from_pretrained_encoder({str(folder)!r})" in message
    recognizer = DiGForTextRecognition.from_pretrained_encoder(tmp_path / "run", DiGConfig.from_preset("tiny-test"))
    recognizer.save_pretrained(tmp_path / "recognizer")
    assert not is_pretraining_folder(tmp_path / "recognizer")
    reloaded = DiGForTextRecognition.from_pretrained(tmp_path / "recognizer")  # an ordinary folder: the normal path
    assert torch.equal(reloaded.encoder.blocks[0].attn.qkv.weight, pretrained.encoder.blocks[0].attn.qkv.weight)


def test_from_pretrained_encoder_loads_exactly_the_pretrained_encoder(tmp_path):
    """Every encoder tensor the recognizer shares with pre-training equals the pre-trained one; every other tensor
    equals a fresh model built from the same seed (nothing else is loaded, nothing shifts the fresh init)."""
    from modeling_dig import DiGConfig, DiGForTextRecognition

    pretrained = _tiny_model()
    with torch.no_grad():
        for param in pretrained.parameters():
            param.mul_(-3.0).add_(0.25)
    pretrained.save_pretrained(tmp_path)
    config = DiGConfig.from_preset("tiny-test")
    torch.manual_seed(1)
    recognizer, report = DiGForTextRecognition.from_pretrained_encoder(tmp_path, config, output_loading_info=True)
    torch.manual_seed(1)
    fresh = DiGForTextRecognition(DiGConfig.from_preset("tiny-test")).state_dict()
    source = pretrained.state_dict()
    encoder_keys = {k for k in fresh if k.startswith(("encoder.patch_embed.", "encoder.blocks."))}
    assert set(report.loaded) == encoder_keys
    assert set(report.fresh) == set(fresh) - encoder_keys
    for key, tensor in recognizer.state_dict().items():
        assert torch.equal(tensor, source[key] if key in encoder_keys else fresh[key]), key
    assert recognizer.training  # a starting point for fine-tuning, as DiGForTextRecognition(config)
    # as from_pretrained(config=...): the model works on a copy, the caller's config is not resolved in place
    assert recognizer.config is not config and config._attn_implementation_internal is None


def test_from_pretrained_encoder_passes_dtype_and_attention_through(dig_fixtures):
    """An original .pth source, no config (the pre-training encoder's sizes), bfloat16 and eager attention."""
    from modeling_dig import DiGForTextRecognition
    from modeling_dig.original_checkpoint import load_original_checkpoint

    original, _ = load_original_checkpoint(dig_fixtures / "pretrain_checkpoint.pth")
    recognizer = DiGForTextRecognition.from_pretrained_encoder(
        dig_fixtures / "pretrain_checkpoint.pth", dtype=torch.bfloat16, attn_implementation="eager"
    )
    assert recognizer.config.encoder.hidden_size == original["encoder.patch_embed.proj.weight"].shape[0]
    assert recognizer.config.encoder.use_final_norm and recognizer.config.encoder.drop_path_rate == 0.1
    assert {p.dtype for p in recognizer.parameters()} == {torch.bfloat16}
    assert recognizer.config._attn_implementation == "eager"
    assert recognizer.config.encoder._attn_implementation == "eager"
    state = recognizer.state_dict()
    for key in ("encoder.patch_embed.proj.weight", "encoder.blocks.1.attn.qkv.weight", "encoder.blocks.0.mlp.fc2.bias"):
        assert torch.equal(state[key], original[key].to(torch.bfloat16)), key
    with pytest.raises(TypeError):
        DiGForTextRecognition.from_pretrained_encoder(dig_fixtures / "pretrain_checkpoint.pth", device_map="auto")


def test_column_strip_pretraining_initialises_a_strip_recognizer(tmp_path):
    """The CPU effect benchmark's layout: 32x4 strips pre-train (1 x 32 mask grid) and hand every encoder tensor to a
    strip recognizer; a 4x4 recognizer is refused instead of silently getting a reshaped patch embedding."""
    from modeling_dig import DiGConfig, DiGForTextRecognition

    strips = {"patch_size": [32, 4]}
    pretrained = _tiny_model(encoder=strips)
    assert pretrained.config.encoder.grid_size == (1, 32)
    batch = _batch()
    batch["bool_masked_pos"] = DiGMaskGenerator((1, 32), 0.7)(4, generator=torch.Generator().manual_seed(0))
    output = pretrained(**batch)
    assert torch.isfinite(output.loss) and output.mim_loss > 0 and output.contrastive_loss > 0
    pretrained.save_pretrained(tmp_path)
    config = DiGConfig.from_preset("tiny-test", encoder=strips)
    _, report = DiGForTextRecognition.from_pretrained_encoder(tmp_path, config, output_loading_info=True)
    assert len(report.loaded) == 2 + 13 * config.encoder.num_hidden_layers
    with pytest.raises(ValueError, match="pre-training shape"):
        DiGForTextRecognition.from_pretrained_encoder(tmp_path, DiGConfig.from_preset("tiny-test"))


def test_missing_weights_are_initialised_like_fresh_ones():
    """from_pretrained with missing keys initialises them through the module holding them: the patch Conv2d (and
    its momentum copy) used to keep uninitialised memory because the init matched its parameter-less parent."""
    config = DiGPreTrainingConfig.from_preset("tiny-test")
    model = DiGForPreTraining.from_pretrained(None, config=config, state_dict={})
    proj, proj_m = model.encoder.patch_embed.proj, model.momentum_encoder.patch_embed.proj
    bound = math.sqrt(6.0 / (proj.in_channels * proj.kernel_size[0] * proj.kernel_size[1] + proj.out_channels))
    assert torch.isfinite(proj.weight).all() and proj.weight.abs().max() <= bound
    assert proj.weight.std() > bound / 4  # uniform(-bound, bound), not zeros or a generic tiny std
    assert torch.equal(proj.bias, torch.zeros_like(proj.bias))
    assert torch.equal(proj_m.weight, proj.weight)


def test_hidden_states_and_attentions_are_the_online_encoders():
    model = _tiny_model().eval()
    model.set_attn_implementation("eager")
    with torch.no_grad():
        out = model(**_batch(2), output_hidden_states=True, output_attentions=True)
        reference = model.encoder(
            torch.cat([_batch(2)["pixel_values"], _batch(2)["augmented_pixel_values"]]),
            bool_masked_pos=torch.cat([_batch(2)["bool_masked_pos"], torch.zeros_like(_batch(2)["bool_masked_pos"])]),
            output_hidden_states=True,
            output_attentions=True,
        )
    layers = model.config.encoder.num_hidden_layers
    assert len(out.hidden_states) == layers + 1 and len(out.attentions) == layers
    for ours, expected in zip(out.hidden_states, reference.hidden_states):
        torch.testing.assert_close(ours, expected)
    torch.testing.assert_close(out.attentions[-1], reference.attentions[-1])
    torch.testing.assert_close(out.hidden_states[-1], out.encoder_last_hidden_state)
    assert model(**_batch(2), return_dict=False)[0].ndim == 0  # the loss first
