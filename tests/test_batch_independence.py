"""Every image decodes to the same text (and confidence) in any batch as alone, for both recognizers.

The rows that matter are those whose prediction runs to the full length without an EOS: CLIP4STR's original
decoding lets the batch's longest visual prediction decide how much cross-modal context such a row reads.
"""

from __future__ import annotations

import torch
from test_clip4str_model import tiny_model as tiny_clip4str
from test_pipeline import _images
from test_pipeline import _tiny_model as tiny_dig

from processing.processing_clip4str import CLIP4STRProcessor
from processing.processing_dig import DiGProcessor


def clip4str_with_uneven_stops(num_images: int = 6):
    """A tiny CLIP4STR whose visual loop stops early for some images and never for the others.

    Raising the visual head's EOS bias by b ends a row at its first step whose (best logit - EOS logit) margin is
    below b and leaves earlier steps alone; b is put in the widest gap between the rows' smallest margins, below the
    largest, so that at least one row predicts no visual EOS (and the batch runs every step).
    """
    model = tiny_clip4str(seed=0)
    pixels = torch.randn(num_images, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        visual = model.decode(pixels, max_length=model.config.max_label_length, output_intermediates=True)
        logits = visual.visual_logits_ar
        row_minima = (logits.max(-1).values - logits[..., model.config.eos_token_id]).min(-1).values.sort().values
        gaps = row_minima[1:] - row_minima[:-1]
        widest = int(gaps.argmax())
        assert gaps[widest] > 1e-3  # far above float noise between batch sizes
        model.visual_decoder.head.bias[model.config.eos_token_id] += (row_minima[widest] + row_minima[widest + 1]) / 2
    return model, pixels


def test_clip4str_rows_decode_as_alone_including_rows_without_eos():
    model, pixels = clip4str_with_uneven_stops()
    eos = model.config.eos_token_id
    with torch.no_grad():
        batch = model.decode(pixels, output_intermediates=True)
        alone = [model.decode(pixels[i : i + 1], output_intermediates=True) for i in range(len(pixels))]
    own_lengths = [a.visual_logits_ar.shape[1] for a in alone]
    assert len(set(own_lengths)) > 1 and batch.visual_logits_ar.shape[1] == max(own_lengths)
    ids = batch.logits.argmax(-1)
    assert (ids != eos).all(-1).any(), "no row runs to the full length without EOS: the test would prove nothing"
    scale = batch.logits.abs().max().item()
    for i, single in enumerate(alone):
        assert torch.equal(ids[i], single.logits.argmax(-1)[0]), i
        torch.testing.assert_close(batch.logits[i], single.logits[0], rtol=1e-5, atol=1e-5 * scale)
        torch.testing.assert_close(batch.visual_logits[i], single.visual_logits[0], rtol=1e-5, atol=1e-5 * scale)
    # The original's batch semantics (kept behind batch_independent=False) do change some row: the test is sensitive.
    with torch.no_grad():
        original = model.decode(pixels, batch_independent=False)
        original_alone = [model.decode(pixels[i : i + 1], batch_independent=False) for i in range(len(pixels))]
    assert any(
        not torch.allclose(original.logits[i], single.logits[0], rtol=1e-5, atol=1e-5 * scale)
        for i, single in enumerate(original_alone)
    )


def test_clip4str_generate_texts_and_confidences_do_not_depend_on_the_batch():
    model, pixels = clip4str_with_uneven_stops()
    processor = CLIP4STRProcessor()
    with torch.no_grad():
        out = model.generate(pixel_values=pixels, output_scores=True, return_dict_in_generate=True)
        texts, confidences = processor.batch_decode(out, return_confidence=True)
        for i in range(len(pixels)):
            single = model.generate(pixel_values=pixels[i : i + 1], output_scores=True, return_dict_in_generate=True)
            text, confidence = processor.batch_decode(single, return_confidence=True)
            assert text == [texts[i]]
            assert abs(confidence[0] - confidences[i]) <= 1e-5 * confidences[i]
    # and a companion-dependent order: reversing the batch reverses the texts
    with torch.no_grad():
        reversed_out = model.generate(pixel_values=pixels.flip(0), output_scores=True, return_dict_in_generate=True)
    assert processor.batch_decode(reversed_out) == texts[::-1]


def test_clip4str_without_refinement_ends_each_row_at_its_own_length():
    model, pixels = clip4str_with_uneven_stops()
    model.config.refine_iters = 0
    processor = CLIP4STRProcessor()
    with torch.no_grad():
        out = model.generate(pixel_values=pixels, output_scores=True, return_dict_in_generate=True)
        texts, confidences = processor.batch_decode(out, return_confidence=True)
        alone = [
            processor.batch_decode(
                model.generate(pixel_values=pixels[i : i + 1], output_scores=True, return_dict_in_generate=True),
                return_confidence=True,
            )
            for i in range(len(pixels))
        ]
    assert [a[0][0] for a in alone] == texts
    for (_, confidence), expected in zip(alone, confidences):
        assert abs(confidence[0] - expected) <= 1e-5 * expected


def test_dig_rows_decode_as_alone_including_rows_without_eos():
    model = tiny_dig()
    processor = DiGProcessor()
    images = _images()
    eos = model.config.eos_token_id
    with torch.no_grad():
        out = model.generate(**processor(images=images), output_scores=True, return_dict_in_generate=True)
        texts, confidences = processor.batch_decode(out, return_confidence=True)
        alone = [
            model.generate(**processor(images=[image]), output_scores=True, return_dict_in_generate=True)
            for image in images
        ]
    assert any(eos not in row.tolist() for row in out.sequences), "every row has an EOS: the test would prove less"
    assert any(eos in row.tolist() for row in out.sequences)
    for i, single in enumerate(alone):
        text, confidence = processor.batch_decode(single, return_confidence=True)
        assert text == [texts[i]]
        assert abs(confidence[0] - confidences[i]) <= 1e-5 * confidences[i]
        length = single.sequences.shape[1]
        assert torch.equal(out.sequences[i, :length], single.sequences[0])
