"""The DiG checkpoint converter: CLI end to end on the golden fixture checkpoint, safe loading, refusals with
clear messages, the pre-training dispatch, and remote-code loading of the written folder."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import string
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import modeling_dig  # noqa: F401  (registers the Auto classes)
from modeling_dig import DiGForTextRecognition
from modeling_dig.convert_original_checkpoint import (
    CheckpointConversionError,
    convert_checkpoint,
    convert_state_dict,
    load_original_checkpoint,
    main,
)
from tolerances import assert_close

HEADS = ["--encoder-num-heads", "3", "--decoder-num-heads", "4"]  # the fixture's (reduced) head counts


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def converted_dir(tmp_path_factory) -> Path:
    fixtures = Path(os.environ.get("STR_SHARED_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures"))
    checkpoint = fixtures / "dig" / "recognizer_checkpoint.pth"
    if not checkpoint.is_file():
        pytest.skip(f"golden fixtures not found at {checkpoint}")
    output = tmp_path_factory.mktemp("dig_converted")
    assert main(["--checkpoint", str(checkpoint), "--output", str(output), *HEADS]) == 0
    return output


def test_cli_writes_a_complete_folder(converted_dir, dig_fixtures):
    for name in (
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "README.md",
        "configuration_dig.py",
        "modeling_dig.py",
    ):
        assert (converted_dir / name).is_file(), name
    config = json.loads((converted_dir / "config.json").read_text())
    assert config["model_type"] == "dig"
    assert config["auto_map"]["AutoModelForImageTextToText"] == "modeling_dig.DiGForTextRecognition"
    assert config["encoder"]["num_attention_heads"] == 3 and config["decoder"]["num_attention_heads"] == 4
    weights = load_file(converted_dir / "model.safetensors")
    assert len(weights) == 76  # 79 original keys minus the patch_embed alias pair and the unused mask token
    assert "encoder.mask_token" not in weights
    assert "decoder.position_table" in weights and "encoder.position_embeddings" not in weights


def test_model_card_metadata(converted_dir, dig_fixtures):
    text = (converted_dir / "README.md").read_text()
    front = yaml.safe_load(text.split("---")[1])
    assert front["pipeline_tag"] == "image-to-text"
    assert front["library_name"] == "transformers"
    assert front["license"] == "cc-by-nc-4.0"
    manifest = json.loads((dig_fixtures / "manifest.json").read_text())
    assert manifest["files"]["recognizer_checkpoint.pth"]["sha256"] in text
    assert "recognizer_checkpoint.pth" in text
    assert "Reading and Writing: Discriminative and Generative Modeling for Self-Supervised" in text
    assert "@inproceedings" in text and "2022" in text


def test_converted_folder_reproduces_the_original(converted_dir, dig_fixtures):
    model = DiGForTextRecognition.from_pretrained(converted_dir, attn_implementation="eager").eval()
    inputs = load_file(dig_fixtures / "inputs.safetensors")
    expected = load_file(dig_fixtures / "expected.safetensors")
    with torch.no_grad():
        out = model.generate(
            inputs["pixel_values"], min_new_tokens=25, output_logits=True, return_dict_in_generate=True
        )
    assert torch.equal(out.sequences[:, 1:], expected["greedy_ids"])
    probs = torch.stack(out.logits, 1).softmax(-1)
    assert_close(probs, expected["greedy_probs"], rel=1e-6)


def test_processing_files_and_round_trip(converted_dir):
    if not (converted_dir / "processor_config.json").is_file():
        pytest.skip("processing classes not available when the folder was written")
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(converted_dir)
    ids = torch.tensor([[97, 38, 24, 15, 15, 14, 14, 94, 95]])  # "Coffee" + EOS + PAD
    assert processor.batch_decode(ids) == ["Coffee"]
    # the original 97-class layout is the default charset: 94 characters in string.printable order, then EOS/PAD/UNK
    config = DiGForTextRecognition.config_class.from_pretrained(converted_dir)
    assert config.charset == processor.tokenizer.charset == string.printable[:-6]
    assert (config.eos_token_id, config.pad_token_id, config.unk_token_id, config.decoder_start_token_id) == (
        94, 95, 96, 97)
    assert config.decoder.vocab_size == 97


def test_remote_code_in_process(converted_dir, dig_fixtures):
    """The copied files import on their own (relative imports only) and the remote class reproduces the library
    one. In this process `import modeling_dig` registered "dig" locally, so the Auto classes would prefer the local
    class: load the remote one explicitly, as transformers does for trust_remote_code."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    remote_class = get_class_from_dynamic_module("modeling_dig.DiGForTextRecognition", str(converted_dir))
    assert remote_class.__module__.startswith("transformers_modules"), remote_class.__module__
    assert remote_class is not DiGForTextRecognition and remote_class.is_scene_text_recognizer
    remote = remote_class.from_pretrained(converted_dir).eval()
    local = DiGForTextRecognition.from_pretrained(converted_dir).eval()
    pixel_values = load_file(dig_fixtures / "inputs.safetensors")["pixel_values"]
    with torch.no_grad():
        assert torch.equal(remote.generate(pixel_values), local.generate(pixel_values))


def test_remote_code_fresh_process_without_the_library(converted_dir, tmp_path):
    """A fresh process, offline, cwd elsewhere, the editable install hidden: model, processor and the
    image-to-text pipeline load from the folder alone."""
    script = tmp_path / "load.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys
        sys.path = [p for p in sys.path if p.rstrip("/") != {str(Path(__file__).resolve().parents[1])!r}]
        sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
        import importlib.util
        assert importlib.util.find_spec("modeling_dig") is None
        assert importlib.util.find_spec("processing") is None
        import numpy as np
        from PIL import Image
        from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline
        path = {str(converted_dir)!r}
        model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
        image = Image.fromarray(np.full((40, 90, 3), 128, dtype="uint8"))
        ids = model.generate(processor(images=[image], return_tensors="pt")["pixel_values"])
        text = processor.batch_decode(ids)[0]
        result = pipeline("image-to-text", model=path, trust_remote_code=True)(image)
        assert result == [{{"generated_text": text}}], (result, text)
        print("OK", text)
    """)
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    run = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "OK" in run.stdout


# ------------------------------------------------------------------------------------------------ refusals


def _fixture_state(dig_fixtures) -> tuple[dict[str, torch.Tensor], argparse.Namespace]:
    return load_original_checkpoint(dig_fixtures / "recognizer_checkpoint.pth")


def test_missing_unexpected_and_misshaped_keys_are_listed(dig_fixtures):
    state_dict, args = _fixture_state(dig_fixtures)
    broken = dict(state_dict)
    del broken["decoder.layer_stack.1.norm3.bias"]
    broken["decoder.some_new_head.weight"] = torch.zeros(3)
    broken["encoder.blocks.1.attn.proj.weight"] = torch.zeros(96, 95)
    with pytest.raises(CheckpointConversionError) as info:
        convert_state_dict(broken, args, encoder_num_heads=3, decoder_num_heads=4)
    message = str(info.value)
    assert "decoder.some_new_head.weight" in message
    assert "decoder.layers.1.final_layer_norm.bias" in message
    assert "encoder.blocks.1.attn.proj.weight" in message and "(96, 95)" in message


def test_alias_must_equal_the_encoder_patch_embedding(dig_fixtures):
    state_dict, args = _fixture_state(dig_fixtures)
    state_dict = dict(state_dict)
    state_dict["patch_embed.proj.bias"] = state_dict["patch_embed.proj.bias"] + 1
    with pytest.raises(CheckpointConversionError, match="patch_embed.proj.bias"):
        convert_state_dict(state_dict, args, encoder_num_heads=3, decoder_num_heads=4)


def test_unknown_head_counts_need_a_flag(dig_fixtures):
    state_dict, args = _fixture_state(dig_fixtures)
    with pytest.raises(CheckpointConversionError, match="--encoder-num-heads"):
        convert_state_dict(state_dict, args)  # 96 wide, fixture-only registry name: cannot be guessed


def test_disallowed_pickled_globals_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "args": datetime.datetime(2024, 1, 1)}, path)
    with pytest.raises(CheckpointConversionError, match="weights_only"):
        load_original_checkpoint(path)
    assert main(["--checkpoint", str(path), "--output", str(tmp_path / "out")]) == 2


def test_missing_file_is_a_clear_cli_error(tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "nope.pth"), "--output", str(tmp_path / "out")]) == 2
    assert "nope.pth" in capsys.readouterr().err


def test_pretraining_checkpoints_are_dispatched(dig_fixtures, tmp_path, monkeypatch):
    from modeling_dig import convert_pretraining

    calls = []

    def fake(state_dict, args, output_dir):
        calls.append((len(state_dict), type(args).__name__, Path(output_dir)))
        return "pretraining"

    monkeypatch.setattr(convert_pretraining, "convert_pretraining_checkpoint", fake)
    result = convert_checkpoint(dig_fixtures / "pretrain_checkpoint.pth", tmp_path / "out")
    assert result == "pretraining"
    assert calls and calls[0][1] == "Namespace" and calls[0][2] == tmp_path / "out"
    assert calls[0][0] > 100  # the whole MoCo state dict, momentum branch included
