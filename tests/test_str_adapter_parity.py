"""Parity of CLIP4STR + Adapter with the original STRAdapter on the reduced golden fixtures
(../shared/fixtures/str_adapter: one checkpoint per adapter type, the original's outputs, the CLIP file)."""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import pytest
import torch
from conftest import fixture_dir
from safetensors.torch import load_file
from tolerances import assert_close

from modeling_clip4str import STRAdapterConfig, STRAdapterForTextRecognition
from modeling_clip4str.convert_original_checkpoint import convert_checkpoint, load_lightning_checkpoint, main
from modeling_clip4str.permutations import generate_permutations
from modeling_clip4str.str_adapter_checkpoint import str_adapter_config_from_original
from modeling_clip4str.str_adapter_conversion import (
    convert_adapter_state_dict,
    convert_str_adapter_state_dict,
    str_adapter_from_clip_file,
)

TYPES = ["linear", "attention", "ladder", "linear_ladder", "ladder_pruning"]


@pytest.fixture(scope="module")
def fixtures() -> Path:
    return fixture_dir("str_adapter")


@functools.lru_cache(maxsize=1)
def _shared(folder: str):
    path = Path(folder)
    return json.loads((path / "manifest.json").read_text()), load_file(path / "inputs.safetensors")


@functools.lru_cache(maxsize=len(TYPES))
def _converted(folder: str, adapter_type: str):
    path = Path(folder) / adapter_type
    model, _ = convert_checkpoint(path / f"str_adapter_{adapter_type}.ckpt")
    return model.eval(), load_file(path / "expected.safetensors")


def golden(fixtures: Path, adapter_type: str):
    manifest, inputs = _shared(str(fixtures))
    model, expected = _converted(str(fixtures), adapter_type)
    return model, inputs, expected, manifest


def hf_labels(original_labels: torch.Tensor) -> torch.Tensor:
    """[BOS] + chars + [EOS] + PAD (the original's encoding) -> chars + EOS padded with -100 (ours)."""
    labels = original_labels[:, 1:].clone()
    return labels.masked_fill(labels == 96, -100)


@pytest.mark.parametrize("adapter_type", TYPES)
def test_inference_matches_every_stage(fixtures, adapter_type):
    model, inputs, expected, manifest = golden(fixtures, adapter_type)
    with torch.no_grad():
        out = model(pixel_values=inputs["pixel_values"], output_intermediates=True)
    assert out.logits_ar.shape[1] == manifest["per_type"][adapter_type]["L_ar"]  # the same early stop
    assert_close(out.image_memory, expected["clip_image_memory"], msg="clip memory")
    assert_close(out.adapter_memory, expected["adapter_memory"], msg="adapter memory")
    assert_close(out.logits_ar, expected["logits_ar"], msg="AR logits")
    assert_close(out.logits, expected["final_logits"], msg="final logits")
    assert torch.equal(out.logits.argmax(-1), expected["final_ids"])
    if "ladder_side_output" in expected:
        assert_close(out.ladder_side_output, expected["ladder_side_output"], msg="side output")
        assert_close(model.adapter.mix_weights(), expected["ladder_mix_weights"], msg="mix weights")
    if "ladder_block_inputs" in expected:
        _, block_inputs = model.get_image_features(inputs["pixel_values"])
        assert_close(torch.stack(block_inputs), expected["ladder_block_inputs"], msg="block inputs")


@pytest.mark.parametrize("adapter_type", ["linear", "ladder_pruning"])
def test_uncached_reference_decoding_matches(fixtures, adapter_type):
    model, inputs, expected, _ = golden(fixtures, adapter_type)
    with torch.no_grad():
        out = model(pixel_values=inputs["pixel_values"], use_cache=False, output_intermediates=True)
    assert_close(out.logits_ar, expected["logits_ar"])
    assert_close(out.logits, expected["final_logits"])


@pytest.mark.parametrize("adapter_type", TYPES)
def test_generate_strings_and_confidences(fixtures, adapter_type):
    from processing import CLIP4STRProcessor, PARSeqTokenizer

    model, inputs, expected, manifest = golden(fixtures, adapter_type)
    decoded = manifest["per_type"][adapter_type]["decoded"]
    with torch.no_grad():
        out = model.generate(pixel_values=inputs["pixel_values"], output_scores=True, return_dict_in_generate=True)
    assert torch.equal(out.sequences, expected["final_ids"])
    processor = CLIP4STRProcessor(tokenizer=PARSeqTokenizer())
    texts, confidences = processor.batch_decode(
        out.sequences, scores=torch.stack(out.scores, 1).softmax(-1), return_confidence=True
    )
    assert texts == decoded["final_strings"]
    for ours, theirs in zip(confidences, decoded["final_confidences"]):
        assert float(ours) == pytest.approx(theirs, rel=1e-4, abs=1e-15)


@pytest.mark.parametrize("adapter_type", TYPES)
def test_validation_logits_and_loss(fixtures, adapter_type):
    model, inputs, expected, _ = golden(fixtures, adapter_type)
    labels = hf_labels(inputs["labels"])
    with torch.no_grad():
        out = model(pixel_values=inputs["pixel_values_train_norm"], labels=labels)
        stages = model.decode(
            inputs["pixel_values_train_norm"], max_length=labels.shape[1] - 1, output_intermediates=True
        )
    assert_close(out.logits, expected["val_logits"])
    assert_close(stages.logits_ar, expected["val_logits_ar"])  # no early stop in validation
    assert_close(out.loss, expected["val_loss"])


@pytest.mark.parametrize("adapter_type", TYPES)
@pytest.mark.parametrize("name", ["fwd_rev", "6perm"])
def test_training_loss_with_the_documented_permutations(fixtures, adapter_type, name):
    model, inputs, expected, _ = golden(fixtures, adapter_type)
    model.train()
    try:
        model.decoder.eval()  # the fixture's losses were taken with dropout off
        with torch.no_grad():
            out = model(
                pixel_values=inputs["pixel_values_train_norm"],
                labels=hf_labels(inputs["labels"]),
                permutations=expected[f"train_perms_{name}"],
            )
    finally:
        model.eval()
    assert_close(out.ce_terms, expected[f"train_ce_terms_{name}"])
    assert_close(out.loss, expected[f"train_loss_{name}"])


def test_permutations_reproduce_the_original_sampling(fixtures):
    manifest, inputs = _shared(str(fixtures))
    expected = load_file(fixtures / "linear" / "expected.safetensors")
    torch.manual_seed(manifest["seeds"]["train_perms"])
    assert torch.equal(generate_permutations(inputs["labels"].shape[1] - 2), expected["train_perms_6perm"])


def test_frozen_backbone_gets_no_gradient_and_stays_in_eval(fixtures):
    model, inputs, _, _ = golden(fixtures, "ladder_pruning")
    model.train()
    try:
        out = model(pixel_values=inputs["pixel_values_train_norm"], labels=hf_labels(inputs["labels"]))
        out.loss.backward()
        assert not model.vision_model.training  # the original's clip_model.eval() inside encode()
        assert all(p.grad is None for p in model.vision_model.parameters())
        assert all(p.grad is None for p in model.visual_projection.parameters())
        assert all(p.grad is not None for p in model.adapter.parameters())
        assert model.decoder.head.weight.grad is not None
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


# ------------------------------------------------------------------------------------------ initialisation
@pytest.mark.parametrize("adapter_type", TYPES)
def test_initialisation_from_the_clip_file(fixtures, adapter_type):
    manifest, inputs = _shared(str(fixtures))
    hyper_parameters = load_lightning_checkpoint(fixtures / adapter_type / f"str_adapter_{adapter_type}.ckpt")[
        "hyper_parameters"
    ]
    torch.manual_seed(0)
    model = str_adapter_from_clip_file(
        fixtures / "clip_init.pt",
        adapter_type=adapter_type,
        block_ids=hyper_parameters["block_ids"],
        prune_reduction=hyper_parameters["prune_reduction"],
        dec_num_heads=hyper_parameters["dec_num_heads"],
    ).eval()

    # the CLIP image tower: file values, rounded to fp16 where the original's loader rounds them
    clip_file = torch.load(fixtures / "clip_init.pt", weights_only=True)["model"]
    rounded = {k.removeprefix("clip_model.") for k in manifest["clip_init"]["rounded_tensors"]}
    rule = {k: (v.half().float() if k in rounded else v) for k, v in clip_file.items()}
    ours = model.state_dict()
    assert torch.equal(ours["vision_model.embeddings.patch_embedding.weight"], rule["visual.conv1.weight"])
    assert torch.equal(ours["visual_projection.weight"], rule["visual.proj"].t())
    assert torch.equal(
        ours["vision_model.encoder.layers.1.mlp.fc1.bias"], rule["visual.transformer.resblocks.1.mlp.c_fc.bias"]
    )
    assert torch.equal(ours["vision_model.post_layernorm.weight"], rule["visual.ln_post.weight"])
    assert torch.equal(ours["vision_model.embeddings.class_embedding"], rule["visual.class_embedding"])

    # the adapter: what the original derives from CLIP is bitwise the same; random draws are then taken over
    adapter_init = load_file(fixtures / adapter_type / "adapter_init.safetensors")
    converted, unexpected = convert_adapter_state_dict(
        {k.removeprefix("adapter."): v for k, v in adapter_init.items()}, adapter_type
    )
    assert not unexpected
    assert set(converted) == {k for k in ours if k.startswith("adapter.")}
    deterministic = {
        "linear": (),
        "attention": (),
        "ladder": ("adapter.",),
        "ladder_pruning": ("adapter.",),
        "linear_ladder": ("adapter.alpha", "adapter.post_layernorm.", "adapter.projection."),
    }[adapter_type]
    for key, tensor in converted.items():
        if key.startswith(deterministic):
            assert torch.equal(ours[key], tensor), key
        else:
            assert ours[key].shape == tensor.shape, key
    model.load_state_dict({**ours, **converted})
    expected = load_file(fixtures / adapter_type / "expected.safetensors")
    with torch.no_grad():
        memory, block_inputs = model.get_image_features(inputs["pixel_values"])
        adapter_memory = model.adapter(memory, block_inputs)
    assert_close(memory, expected["init_clip_image_memory"])
    assert_close(adapter_memory, expected["init_adapter_memory"])


def test_pruning_keeps_each_tensors_own_top_features(fixtures):
    """ladder_pruning's q/k rows are chosen independently: the fixture's kept rows differ from k's."""
    adapter_init = load_file(fixtures / "ladder_pruning" / "adapter_init.safetensors")
    clip_file = torch.load(fixtures / "clip_init.pt", weights_only=True)["model"]
    weight = clip_file["visual.transformer.resblocks.0.attn.in_proj_weight"].half().float()
    q, k, _ = weight.chunk(3)
    kept_q = adapter_init["adapter.resblocks.0.attn.in_proj_weight"][:16]
    top_q = q.abs().sum(1).topk(16).indices.sort().values
    top_k = k.abs().sum(1).topk(16).indices.sort().values
    assert torch.equal(kept_q, q[top_q])
    assert not torch.equal(top_q, top_k)


# ------------------------------------------------------------------------------------------ conversion
@pytest.mark.parametrize("variant", ["STRAdapter-B/16 ladder_pruning", "STRAdapter-B/16 linear"])
def test_full_size_keys_map_completely_with_the_original_trainable_count(fixtures, variant):
    full = json.loads((fixtures / "full_size_keys.json").read_text())[variant]
    original = {k["name"]: torch.empty(k["shape"], device="meta") for k in full["keys"]}
    config = str_adapter_config_from_original(original, full["hyper_parameters"])
    preset = STRAdapterConfig.from_preset("STRAdapter-B/16" if "pruning" in variant else "STRAdapter-B/16-linear")
    for field in ("adapter_type", "block_ids", "prune_reduction", "projection_dim"):
        assert getattr(config, field) == getattr(preset, field), field
    for sub in ("vision_config", "decoder"):
        assert getattr(config, sub).to_dict() == getattr(preset, sub).to_dict(), sub
    with torch.device("meta"):
        model = STRAdapterForTextRecognition(preset)
    converted, unexpected, text_tower = convert_str_adapter_state_dict(original, preset.adapter_type)
    own = model.state_dict()
    assert not unexpected
    assert set(converted) == set(own)
    assert all(tuple(converted[k].shape) == tuple(own[k].shape) for k in own)
    # everything not converted is the unused text tower
    assert sorted(text_tower) == sorted(
        k for k in original if k.startswith("clip_model.") and ".visual." not in f".{k}"
    )
    assert sum(original[k].numel() for k in original if k not in text_tower) == sum(v.numel() for v in own.values())
    # trainable parameters = the original's optimised ones, group by group (lr / weight decay per group)
    assert model.num_parameters(only_trainable=True) == full["num_params_in_optimizer"]
    groups = {g["name"]: g for g in model.optimizer_groups(lr=1.0, weight_decay=0.2)}
    for theirs in full["optimizer_param_groups"]:
        assert sum(p.numel() for p in groups[theirs["name"]]["params"]) == theirs["numel"], theirs["name"]
        assert groups[theirs["name"]]["weight_decay"] == pytest.approx(theirs["weight_decay"])


@pytest.mark.parametrize("adapter_type", ["ladder_pruning"])
def test_converter_writes_a_folder_that_loads_and_reads(fixtures, adapter_type, tmp_path, monkeypatch):
    monkeypatch.setattr(logging.getLogger("transformers.pipelines"), "disabled", True)
    from PIL import Image
    from transformers import AutoModelForImageTextToText, pipeline

    manifest, inputs = _shared(str(fixtures))
    expected = load_file(fixtures / adapter_type / "expected.safetensors")
    output = tmp_path / "converted"
    assert (
        main(
            ["--checkpoint", str(fixtures / adapter_type / f"str_adapter_{adapter_type}.ckpt"), "--output", str(output)]
        )
        == 0
    )
    names = {p.name for p in output.iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "processor_config.json"} <= names or {
        "config.json",
        "model.safetensors",
        "README.md",
    } <= names
    assert "CLIP4STR + Adapter" in (output / "README.md").read_text()
    model = AutoModelForImageTextToText.from_pretrained(output).eval()
    assert isinstance(model, STRAdapterForTextRecognition)
    assert model.config.adapter_type == adapter_type and model.config.block_ids == [0, 2]
    assert not any(p.requires_grad for p in model.vision_model.parameters())
    with torch.no_grad():
        assert torch.equal(model.generate(pixel_values=inputs["pixel_values"]), expected["final_ids"])
    reader = pipeline("image-to-text", model=str(output))
    images = [Image.fromarray(inputs[f"raw_image_{i}"].numpy()) for i in range(3)]
    results = reader(images)
    texts = [r[0]["generated_text"] if isinstance(r, list) else r["generated_text"] for r in results]
    assert texts == manifest["per_type"][adapter_type]["decoded"]["final_strings"]


def test_checkpoint_whose_adapter_disagrees_with_its_hyper_parameters_is_refused(fixtures):
    checkpoint = load_lightning_checkpoint(fixtures / "ladder" / "str_adapter_ladder.ckpt")
    hyper_parameters = {**checkpoint["hyper_parameters"], "adapter_type": "ladder_pruning"}
    with pytest.raises(ValueError, match="adapter tensors are a 'ladder' one"):
        str_adapter_config_from_original(checkpoint["state_dict"], hyper_parameters)


def test_unknown_adapter_type_is_an_error():
    from huggingface_hub.errors import StrictDataclassClassValidationError

    with pytest.raises((ValueError, StrictDataclassClassValidationError), match="adapter_type 'identity' is unknown"):
        STRAdapterConfig(adapter_type="identity")


def test_presets_are_the_seed_settings():
    script = STRAdapterConfig.from_preset("STRAdapter-B/16")
    assert (script.adapter_type, script.block_ids, script.prune_reduction) == ("ladder_pruning", [1, 3, 5, 7, 9, 11], 8)
    assert script.vision_config.hidden_size == 768 and script.vision_config.patch_size == 16
    assert STRAdapterConfig.from_preset("STRAdapter-B/16-linear").adapter_type == "linear"


@pytest.mark.slow
def test_converted_folder_loads_as_remote_code_in_a_fresh_process(fixtures, tmp_path):
    import os
    import subprocess
    import sys

    output = tmp_path / "converted"
    assert main(["--checkpoint", str(fixtures / "ladder" / "str_adapter_ladder.ckpt"), "--output", str(output)]) == 0
    script = f"""
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText
model = AutoModelForImageTextToText.from_pretrained({str(output)!r}, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
inputs = load_file({str(fixtures / "inputs.safetensors")!r})
expected = load_file({str(fixtures / "ladder" / "expected.safetensors")!r})
assert torch.equal(model.generate(pixel_values=inputs["pixel_values"]), expected["final_ids"])
print("OK")
"""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "OK" in result.stdout
