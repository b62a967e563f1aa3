"""DiG parity with the ORIGINAL implementation: golden fixtures in ../shared/fixtures/dig (see its manifest.json).

Tolerances are the manifest's suggestions: 1e-5 for hidden states / logits / loss, 1e-6 for probabilities,
exact ids. The fixture model is reduced (encoder 96 wide, 3 heads; decoder d_model 128, 4 heads): head counts
cannot be read off tensors and the fixture's registry names are fixture-only, so they are passed explicitly.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import modeling_dig  # noqa: F401  (registers the Auto classes)
from modeling_dig import DiGConfig, DiGForTextRecognition
from modeling_dig.convert_original_checkpoint import (
    build_model,
    convert_state_dict,
    expected_shapes,
    load_original_checkpoint,
    map_original_key,
)
from modeling_dig.modeling_dig import decoder_sincos_table, encoder_sincos_table

FIXTURE_HEADS = {"encoder_num_heads": 3, "decoder_num_heads": 4}  # manifest: architecture.recognizer
ATOL_STATES = 1e-5
ATOL_PROBS = 1e-6


@pytest.fixture(autouse=True)
def _one_thread():
    """Small models decode ~10x faster on one thread on a shared CPU; restore the setting afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@functools.lru_cache(maxsize=4)
def _converted(fixture_dir: str, attn_implementation: str) -> DiGForTextRecognition:
    state_dict, args = load_original_checkpoint(Path(fixture_dir) / "recognizer_checkpoint.pth")
    hf_state_dict, config = convert_state_dict(state_dict, args, **FIXTURE_HEADS)
    config._attn_implementation = attn_implementation
    return build_model(hf_state_dict, config)


@functools.lru_cache(maxsize=2)
def _tensors(fixture_dir: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    return load_file(Path(fixture_dir) / "inputs.safetensors"), load_file(Path(fixture_dir) / "expected.safetensors")


def _labels_with_ignore(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Fixture labels (chars + EOS padded with PAD 95) -> our contract (-100 after the EOS)."""
    labels = inputs["labels"].clone()
    positions = torch.arange(labels.shape[1]).unsqueeze(0)
    return labels.masked_fill(positions >= inputs["label_lengths"].unsqueeze(1), -100)


def test_sincos_tables_are_bit_exact(dig_fixtures):
    _inputs, expected = _tensors(str(dig_fixtures))
    assert torch.equal(encoder_sincos_table(256, 96), expected["encoder_pos_embed"])
    state_dict, _ = load_original_checkpoint(dig_fixtures / "recognizer_checkpoint.pth")
    assert torch.equal(decoder_sincos_table(200, 128), state_dict["decoder.position_enc.position_table"])
    model = _converted(str(dig_fixtures), "eager")
    assert torch.equal(model.encoder.position_embeddings, expected["encoder_pos_embed"])


def test_converted_config_sizes(dig_fixtures):
    config = _converted(str(dig_fixtures), "eager").config
    enc, dec = config.encoder, config.decoder
    assert (enc.hidden_size, enc.num_hidden_layers, enc.num_attention_heads, enc.intermediate_size) == (96, 2, 3, 384)
    assert enc.use_final_norm and enc.use_mask_token and enc.qkv_bias
    assert (dec.d_model, dec.num_hidden_layers, dec.num_attention_heads, dec.ffn_dim) == (128, 2, 4, 64)
    # --max_len 25 is 25 decoding steps: 24 characters + EOS
    assert (dec.vocab_size, dec.max_label_length, dec.n_position) == (97, 24, 200)
    manifest = json.loads((dig_fixtures / "manifest.json").read_text())
    model = _converted(str(dig_fixtures), "eager")
    num_params = sum(p.numel() for p in model.parameters())
    # the original's SimMIM mask token (hidden_size values, never used by recognition) is dropped on conversion
    assert model.encoder.mask_token is None
    assert num_params + enc.hidden_size == manifest["architecture"]["recognizer"]["num_parameters"]


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_teacher_forced_parity(dig_fixtures, attn_implementation):
    model = _converted(str(dig_fixtures), attn_implementation)
    inputs, expected = _tensors(str(dig_fixtures))
    with torch.no_grad():
        out = model(pixel_values=inputs["pixel_values"], labels=_labels_with_ignore(inputs), output_memory=True)
    valid = expected["teacher_forced_valid_mask"]
    diffs = {
        "encoder_last_hidden_state": (out.encoder_last_hidden_state - expected["encoder_last_hidden_state"])
        .abs()
        .max(),
        "memory": (out.memory - expected["memory"]).abs().max(),
        "teacher_forced_logits": (out.logits - expected["teacher_forced_logits"])[valid].abs().max(),
        "teacher_forced_loss": (out.loss - expected["teacher_forced_loss"]).abs(),
    }
    for name, diff in diffs.items():
        assert diff.item() <= ATOL_STATES, f"{name}: max abs diff {diff.item():.3g} > {ATOL_STATES}"


@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_parity_all_25_steps(dig_fixtures, use_cache):
    """No early stop (the original always runs 25 steps): ids identical, softmax of raw logits within 1e-6."""
    model = _converted(str(dig_fixtures), "eager")
    inputs, expected = _tensors(str(dig_fixtures))
    with torch.no_grad():
        out = model.generate(
            inputs["pixel_values"],
            min_new_tokens=25,
            output_logits=True,
            output_attentions=True,
            return_dict_in_generate=True,
            use_cache=use_cache,
        )
    assert out.sequences.shape == (3, 26)
    assert torch.all(out.sequences[:, 0] == 97)
    assert torch.equal(out.sequences[:, 1:], expected["greedy_ids"])
    probs = torch.stack(out.logits, dim=1).softmax(-1)
    assert (probs - expected["greedy_probs"]).abs().max().item() <= ATOL_PROBS
    # last decoder layer's cross-attention, averaged over heads, at each step's query
    maps = torch.cat([step[-1][:, :, -1:, :].mean(1) for step in out.cross_attentions], dim=1)
    assert (maps - expected["greedy_cross_attn_maps"]).abs().max().item() <= ATOL_PROBS


@pytest.mark.parametrize("mode", ["default", "eos_none"])
def test_greedy_parity_with_hf_stopping(dig_fixtures, mode):
    """HF stops a sequence at EOS: compare every position up to and including each sequence's EOS."""
    model = _converted(str(dig_fixtures), "sdpa")
    inputs, expected = _tensors(str(dig_fixtures))
    kwargs = {"eos_token_id": None} if mode == "eos_none" else {}
    with torch.no_grad():
        out = model.generate(inputs["pixel_values"], output_scores=True, return_dict_in_generate=True, **kwargs)
    assert out.sequences.shape[1] <= 26
    generated = out.sequences[:, 1:]
    probs = torch.stack(out.scores, dim=1).softmax(-1)
    for row in range(generated.shape[0]):
        eos = (generated[row] == 94).nonzero()
        stop = int(eos[0]) + 1 if len(eos) else generated.shape[1]
        assert torch.equal(generated[row, :stop], expected["greedy_ids"][row, :stop])
        assert (probs[row, :stop] - expected["greedy_probs"][row, :stop]).abs().max().item() <= ATOL_PROBS


def test_full_size_key_coverage(dig_fixtures):
    """Every key of the released ViT-Small recognizer maps onto our model with the right shape (meta tensors)."""
    spec = json.loads((dig_fixtures / "full_size_keys.json").read_text())["recognizer"]["keys"]
    assert len(spec) == 281
    state_dict = {item["key"]: torch.empty(item["shape"], device="meta") for item in spec}
    args = argparse.Namespace(
        model="simmim_vit_small_patch4_32x128", decoder_name="tf_decoder", max_len=25, input_h=32, input_w=128
    )
    hf_state_dict, config = convert_state_dict(state_dict, args)
    reference = DiGConfig.from_preset("vit-small")
    assert config.encoder.to_dict() == {**reference.encoder.to_dict(), "drop_path_rate": 0.1}
    # the released model's --max_len 25 decodes 25 steps: 24 characters (the preset's default is 25)
    assert config.decoder.to_dict() == {**reference.decoder.to_dict(), "max_label_length": 24}
    target = expected_shapes(config)
    assert set(hf_state_dict) == set(target)
    for item in spec:
        if item["key"].startswith("patch_embed."):  # the alias of encoder.patch_embed
            assert map_original_key(item["key"]) is None
            continue
        new_key = map_original_key(item["key"])
        if new_key == "encoder.mask_token":  # mapped, then dropped: recognition never uses the SimMIM mask token
            assert new_key not in hf_state_dict
            continue
        assert new_key is not None and target[new_key] == tuple(item["shape"]), item["key"]
    assert len(hf_state_dict) == 278
