"""DiGProcessor / CLIP4STRProcessor: inputs + labels, decoding with confidences, save/load round trips."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from processing.charsets import CHARSET_36
from processing.image_processing_clip4str import CLIP4STRImageProcessor
from processing.processing_clip4str import CLIP4STRProcessor
from processing.processing_dig import DiGProcessor
from processing.tokenization_parseq import PARSeqTokenizer
from tolerances import assert_close


def test_dig_processor_inputs_and_labels_match_fixtures(dig_fixtures, tmp_path):
    manifest = json.loads((dig_fixtures / "manifest.json").read_text())
    inputs = load_file(str(dig_fixtures / "inputs.safetensors"))
    DiGProcessor().save_pretrained(tmp_path)
    processor = DiGProcessor.from_pretrained(tmp_path)
    batch = processor(
        images=[inputs[f"raw_image_{i}"].numpy() for i in range(3)], text=manifest["inputs"]["words"], max_length=25
    )
    assert set(batch) == {"pixel_values", "labels"}
    assert_close(batch["pixel_values"], inputs["pixel_values"], rel=1e-6)
    assert torch.equal(batch["labels"], torch.where(inputs["labels"] == 95, -100, inputs["labels"]))
    # HF generate output: BOS start column, then the ids, PAD after EOS.
    generated = torch.cat([torch.full((3, 1), 97), inputs["labels"]], dim=1)
    assert processor.batch_decode(generated) == manifest["inputs"]["words"]
    assert processor.post_process_image_text_to_text(generated) == manifest["inputs"]["words"]
    assert processor.decode(generated[1]) == "EXIT"


def test_clip4str_processor_round_trip_keeps_choices(clip4str_fixtures, tmp_path):
    inputs = load_file(str(clip4str_fixtures / "inputs.safetensors"))
    processor = CLIP4STRProcessor(
        image_processor=CLIP4STRImageProcessor(normalization="test"), tokenizer=PARSeqTokenizer(charset=CHARSET_36)
    )
    processor.save_pretrained(tmp_path)
    loaded = CLIP4STRProcessor.from_pretrained(tmp_path)
    assert loaded.image_processor.normalization == "test"
    assert loaded.tokenizer.charset == CHARSET_36 and len(loaded.tokenizer) == 39
    out = loaded(images=[inputs[f"raw_image_{i}"].numpy() for i in range(3)])
    assert list(out) == ["pixel_values"]
    assert_close(out["pixel_values"], inputs["pixel_values"], rel=1e-6)


def test_labels_only_and_errors():
    processor = CLIP4STRProcessor()
    assert processor(text=["ab", "c"])["labels"].tolist() == [[11, 12, 0], [13, 0, -100]]
    with pytest.raises(ValueError, match="give images"):
        processor()
    image = torch.zeros(3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="1 images but 2 labels"):
        processor(images=[image], text=["a", "b"])


def test_batch_decode_confidence_from_generate_scores():
    processor = DiGProcessor()
    torch.manual_seed(0)
    steps = [torch.randn(2, 97) for _ in range(4)]
    # Greedy ids from the scores, with an EOS at step 2 for row 0; HF generate prepends the BOS start token.
    ids = torch.stack([s.argmax(-1) for s in steps], dim=1)
    steps[2][0, 94] = 50.0
    ids[0, 2] = 94
    sequences = torch.cat([torch.full((2, 1), 97), ids], dim=1)
    texts, confidences = processor.batch_decode(sequences, scores=tuple(steps), return_confidence=True)
    probs = torch.stack(steps, dim=1).softmax(-1).max(-1).values
    assert confidences == pytest.approx([probs[0, :3].prod().item(), probs[1].prod().item()], rel=1e-6)
    assert texts == processor.batch_decode(sequences)
    # A [B, L, C] probability tensor gives the same answer; so does a generate() output object.
    assert processor.batch_decode(ids, scores=torch.stack(steps, 1).softmax(-1), return_confidence=True)[1] == (
        pytest.approx(confidences)
    )

    class _Output:
        def __init__(self, sequences, scores):
            self.sequences, self.scores = sequences, scores

    assert processor.batch_decode(_Output(sequences, tuple(steps)), return_confidence=True) == (texts, confidences)
    with pytest.raises(ValueError, match="needs the generation scores"):
        processor.batch_decode(sequences, return_confidence=True)


def test_stock_pipeline_prompt_kwargs_are_ignored():
    processor = DiGProcessor()
    image = torch.zeros(3, 8, 8, dtype=torch.uint8)
    out = processor(images=[image, image], padding=True, return_tensors="pt")
    assert out["pixel_values"].shape == (2, 3, 32, 128)
