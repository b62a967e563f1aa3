"""DiGForPreTraining against golden outputs of the original MoCo_ViT (reduced sizes, perturbed weights)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file
from tolerances import assert_close

from modeling_dig.configuration_dig_pretraining import DiGPreTrainingConfig
from modeling_dig.convert_pretraining import (
    config_from_original,
    convert_pretraining_checkpoint,
    convert_pretraining_state_dict,
    is_pretraining_state_dict,
)
from modeling_dig.modeling_dig_pretraining import DiGForPreTraining
from modeling_dig.original_checkpoint import load_original_checkpoint

ATOL = 1e-5  # relative to each tensor's largest magnitude (tests/tolerances.py)
TRAIN_MODE_ATOL = 5e-5


@pytest.fixture(scope="module")
def converted(request):
    from conftest import fixture_dir

    folder = fixture_dir("dig")
    state_dict, args = load_original_checkpoint(folder / "pretrain_checkpoint.pth")
    checkpoint = {"model": state_dict, "args": args}
    # 96 wide with 3 heads: the fixture's head count is not the released head dim 64, so it is given.
    model = convert_pretraining_checkpoint(checkpoint["model"], checkpoint["args"], None, num_attention_heads=3)
    return model, checkpoint, load_file(folder / "inputs.safetensors"), load_file(folder / "expected.safetensors")


def _outputs_by_fixture_name(output, prefix: str = "") -> dict[str, torch.Tensor]:
    names = {
        "mim_prediction": output.mim_prediction,
        "q1": output.q1,
        "q2": output.q2,
        "k1": output.k1,
        "k2": output.k2,
        "online_window_features": output.window_features,
        "momentum_window_features": output.momentum_window_features,
        "online_encoder_output": output.encoder_last_hidden_state,
        "momentum_encoder_output": output.momentum_encoder_last_hidden_state,
    }
    return {prefix + name: value for name, value in names.items()}


def test_config_inferred_from_tensors(converted):
    model, checkpoint, _, _ = converted
    config = model.config
    assert is_pretraining_state_dict(checkpoint["model"])
    assert (config.encoder.hidden_size, config.encoder.num_hidden_layers, config.encoder.intermediate_size) == (
        96,
        2,
        384,
    )
    assert (config.moco_dim, config.moco_mlp_dim, config.pix_projector_hidden_size, config.mim_head_hidden_size) == (
        64,
        256,
        512,
        64,
    )
    assert config.num_windows == 4 and config.temperature == pytest.approx(0.2) and not config.encoder.use_final_norm


def test_eval_mode_parity(converted):
    model, _, inputs, expected = converted
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        output = model(inputs["pixel_values"], inputs["aug_pixel_values"], inputs["mim_mask"], momentum=1.0)
    for name, value in _outputs_by_fixture_name(output).items():
        assert_close(value, expected[name], rel=ATOL, msg=name)
    torch.testing.assert_close(output.mim_target, expected["mim_target"], atol=0, rtol=0)
    torch.testing.assert_close(output.mim_loss, expected["mim_loss"], atol=0, rtol=1e-5)
    torch.testing.assert_close(output.contrastive_loss, expected["contrastive_loss"], atol=0, rtol=1e-5)
    torch.testing.assert_close(
        output.loss, expected["mim_loss"] + 0.1 * expected["contrastive_loss"], atol=0, rtol=1e-5
    )
    # Momentum 1.0 leaves every tensor untouched (the in-forward EMA is a no-op).
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_train_mode_parity_and_single_view_mask(converted):
    model, _, inputs, expected = converted
    train_model = copy.deepcopy(model).train()
    with torch.no_grad():
        # The [B, N] form of the mask (view 1 unmasked) must equal the original's [B, 2, N] layout.
        output = train_model(inputs["pixel_values"], inputs["aug_pixel_values"], inputs["mim_mask"][:, 0], momentum=1.0)
    for name, value in _outputs_by_fixture_name(output, "train_mode_").items():
        if name in expected:
            assert_close(value, expected[name], rel=TRAIN_MODE_ATOL, msg=name)
    torch.testing.assert_close(
        output.contrastive_loss, expected["train_mode_contrastive_loss"], atol=0, rtol=TRAIN_MODE_ATOL
    )


def test_momentum_update_is_ema_of_parameters_only(converted):
    model, _, inputs, _ = converted
    model = copy.deepcopy(model).train()
    online = dict(model.encoder.named_parameters())
    target_before = {k: v.clone() for k, v in model.momentum_encoder.named_parameters()}
    bn_before = model.momentum_projector[1].running_mean.clone()
    with torch.no_grad():
        model(inputs["pixel_values"], inputs["aug_pixel_values"], inputs["mim_mask"], momentum=0.9)
    for name, value in model.momentum_encoder.named_parameters():
        assert_close(value, 0.9 * target_before[name] + 0.1 * online[name], rel=1e-6)
    # The momentum BatchNorm tracks its own batch statistics (train mode), it is not averaged with the online one.
    assert not torch.equal(model.momentum_projector[1].running_mean, bn_before)


def test_converter_writes_a_reloadable_safetensors_folder(converted, tmp_path):
    model, checkpoint, inputs, _ = converted
    convert_pretraining_checkpoint(checkpoint["model"], checkpoint["args"], tmp_path, num_attention_heads=3)
    assert (tmp_path / "model.safetensors").is_file() and (tmp_path / "config.json").is_file()
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pth"))
    reloaded = DiGForPreTraining.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        a = model(inputs["pixel_values"], inputs["aug_pixel_values"], inputs["mim_mask"], momentum=1.0)
        b = reloaded(inputs["pixel_values"], inputs["aug_pixel_values"], inputs["mim_mask"], momentum=1.0)
    torch.testing.assert_close(a.loss, b.loss, atol=0, rtol=0)
    torch.testing.assert_close(a.k2, b.k2, atol=0, rtol=0)


def test_full_size_key_coverage(dig_fixtures):
    """All 398 keys of the released ViT-Small pre-training checkpoint land on a tensor of the same shape."""
    spec = json.loads((dig_fixtures / "full_size_keys.json").read_text())["pretrain"]
    assert spec["num_keys"] == 398
    state = {entry["key"]: torch.empty(entry["shape"], device="meta") for entry in spec["keys"]}
    args = {"model": "pretrain_simmim_moco_ori_vit_small_patch4_32x128", "num_windows": 4, "moco_t": 0.2}
    config = config_from_original(state, args)
    assert config.encoder.num_attention_heads == 6 and config.encoder.hidden_size == 384
    assert (config.moco_dim, config.moco_mlp_dim, config.mim_head_hidden_size) == (256, 4096, 192)
    reference = DiGPreTrainingConfig.from_preset("vit-small")
    assert config.encoder.to_dict() == reference.encoder.to_dict()
    with torch.device("meta"):
        ours = DiGForPreTraining(config).state_dict()
    renamed = convert_pretraining_state_dict(state)
    assert len(renamed) == 398 and set(renamed) == set(ours)
    for key, tensor in renamed.items():
        assert tuple(tensor.shape) == tuple(ours[key].shape), key


def test_unknown_key_is_a_clear_error():
    with pytest.raises(KeyError, match="patch_extractor.blocks.0.norm1.weight"):
        convert_pretraining_state_dict({"patch_extractor.blocks.0.norm1.weight": torch.zeros(1)})
