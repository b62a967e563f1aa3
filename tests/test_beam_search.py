"""Beam search with confidences (DiG), and CLIP4STR's honest generate(): what it honours, what it refuses."""

from __future__ import annotations

import json

import pytest
import torch
from test_clip4str_model import tiny_model as tiny_clip4str
from test_pipeline import _images
from test_pipeline import _tiny_model as tiny_dig

import train_ocr
from processing.lmdb_writer import write_str_lmdb
from processing.processing_dig import DiGProcessor


@pytest.fixture(scope="module")
def dig_beams():
    model = tiny_dig()
    processor = DiGProcessor()
    with torch.no_grad():
        out = model.generate(
            **processor(images=_images()), num_beams=3, output_scores=True, return_dict_in_generate=True
        )
    return model, processor, out


def test_beam_confidence_is_the_beams_own_probability(dig_beams):
    model, processor, out = dig_beams
    assert out.scores[0].shape[0] == 3 * len(_images())  # one score row per beam: the shape that used to crash
    texts, confidences = processor.batch_decode(out, return_confidence=True)
    assert texts == processor.batch_decode(out.sequences)
    # transformers' own per-token log-probabilities of each returned beam, summed up to and including EOS
    transitions = model.compute_transition_scores(out.sequences, out.scores, out.beam_indices)
    eos = model.config.eos_token_id
    for row, (ids, confidence) in enumerate(zip(out.sequences[:, 1:].tolist(), confidences)):
        steps = ids.index(eos) + 1 if eos in ids else len(ids)
        expected = transitions[row, :steps].double().sum().exp().item()
        assert confidence == pytest.approx(expected, rel=1e-5)
        assert 0.0 < confidence <= 1.0


def test_beam_scores_without_beam_indices_fail_clearly(dig_beams):
    _, processor, out = dig_beams
    with pytest.raises(ValueError, match="pass the whole generate"):
        processor.batch_decode(out.sequences, scores=out.scores, return_confidence=True)


def test_one_beam_confidence_equals_greedy(dig_beams):
    model, processor, _ = dig_beams
    inputs = processor(images=_images())
    with torch.no_grad():
        greedy = model.generate(**inputs, output_scores=True, return_dict_in_generate=True)
        beam = model.generate(**inputs, num_beams=1, output_scores=True, return_dict_in_generate=True)
    assert processor.batch_decode(greedy, return_confidence=True) == processor.batch_decode(
        beam, return_confidence=True
    )


@pytest.fixture(scope="module")
def saved_dig(tmp_path_factory):
    """A tiny DiG saved with its processor, and a 3-image LMDB benchmark."""
    root = tmp_path_factory.mktemp("beams")
    model = tiny_dig()
    model.save_pretrained(root / "model")
    DiGProcessor().save_pretrained(root / "model")
    images = _images()
    write_str_lmdb(root / "test" / "synth", [(image, label) for image, label in zip(images, ["ab", "cd", "ef"])])
    for i, image in enumerate(images):
        (root / "images").mkdir(exist_ok=True)
        image.save(root / "images" / f"{i}.png")
    return root


def test_cli_evaluate_and_read_with_three_beams(saved_dig, capsys):
    root = saved_dig
    output = root / "results.json"
    assert (
        train_ocr.main(
            [
                "--log-level",
                "warning",
                "evaluate",
                "--model",
                str(root / "model"),
                "--data",
                str(root / "test"),
                "--num-beams",
                "3",
                "--output",
                str(output),
            ]
        )
        == 0
    )
    row = json.loads(output.read_text())["benchmarks"]["synth"]
    assert row["num_samples"] == 3 and 0.0 < row["confidence"] <= 1.0
    capsys.readouterr()
    assert (
        train_ocr.main(
            [
                "--log-level",
                "warning",
                "read",
                "--model",
                str(root / "model"),
                str(root / "images"),
                "--num-beams",
                "3",
                "--output",
                str(root / "read.json"),
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    rows = json.loads((root / "read.json").read_text())
    model = tiny_dig()
    processor = DiGProcessor()
    with torch.no_grad():
        out = model.generate(
            **processor(images=_images()), num_beams=3, output_scores=True, return_dict_in_generate=True
        )
    texts, confidences = processor.batch_decode(out, return_confidence=True)
    assert [r["text"] for r in rows] == texts
    assert [r["confidence"] for r in rows] == pytest.approx(confidences, rel=1e-5)
    assert [line.split("\t")[2] for line in lines] == [f"{c:.4f}" for c in confidences]  # printed


def test_clip4str_generate_honours_max_new_tokens_and_refuses_beams_and_sampling():
    model = tiny_clip4str()
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model.generate(pixel_values=pixels)
        capped = model.generate(pixel_values=pixels, max_new_tokens=4, output_scores=True, return_dict_in_generate=True)
        reference = model.decode(pixels, max_length=3, early_stop=True).logits
    assert full.shape[1] == model.config.decoder.num_position_queries
    assert capped.sequences.shape[1] == 4 and len(capped.scores) == 4
    assert torch.equal(capped.sequences, reference.argmax(-1))
    with torch.no_grad():
        assert model.generate(pixel_values=pixels, max_length=4).shape[1] == 4  # no start token: max_length counts ids
    for kwargs, match in (
        ({"num_beams": 2}, "num_beams"),
        ({"do_sample": True}, "do_sample"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
    ):
        with pytest.raises(ValueError, match=match):
            model.generate(pixel_values=pixels, **kwargs)
    from transformers import GenerationConfig

    with pytest.raises(ValueError, match="num_beams"):
        model.generate(pixel_values=pixels, generation_config=GenerationConfig(num_beams=3))
