"""Pipeline calls and generate() on our recognizers print no transformers warnings: the generation defaults do not
contradict what a caller passes (max_new_tokens / max_length), and our own code asks for the task by its current
name. transformers' loggers are only listened to here, never changed."""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager

import pytest
import torch
from test_pipeline import _images
from test_pipeline import _tiny_model as tiny_dig
from transformers import pipeline

import modeling_dig  # routes our model types' image-text-to-text pipeline
from processing.processing_dig import DiGProcessor


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def transformers_warnings():
    """The WARNING+ records of transformers' loggers and the Python warnings raised inside the block."""
    handler = _Records()
    library_logger = logging.getLogger("transformers")
    library_logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield handler.messages, caught
    finally:
        library_logger.removeHandler(handler)


@pytest.fixture(scope="module")
def dig_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("quiet_dig")
    tiny_dig().save_pretrained(folder)
    DiGProcessor().save_pretrained(folder)
    return folder


def test_pipeline_calls_emit_no_transformers_warnings(dig_folder):
    images = _images()
    with transformers_warnings() as (messages, caught):
        pipe = pipeline("image-text-to-text", model=str(dig_folder))
        full = pipe(images[0])
        capped = pipe(images[0], max_new_tokens=3)
        pipe(images, batch_size=2, return_confidence=True)
        beams = pipe(images[0], generate_kwargs={"num_beams": 2}, return_confidence=True)
    assert messages == [] and [str(w.message) for w in caught] == []
    assert capped[0]["generated_text"] == full[0]["generated_text"][:3]  # max_new_tokens is honoured
    assert 0.0 < beams[0]["confidence"] <= 1.0


def test_generate_length_settings_do_not_contradict_the_defaults(dig_folder):
    model = modeling_dig.DiGForTextRecognition.from_pretrained(dig_folder).eval()
    pixel_values = DiGProcessor()(images=_images())["pixel_values"]
    assert model.generation_config.max_new_tokens == model.config.max_label_length + 1  # characters + EOS
    with transformers_warnings() as (messages, caught), torch.no_grad():
        default = model.generate(pixel_values=pixel_values)
        by_new_tokens = model.generate(pixel_values=pixel_values, max_new_tokens=4)
        by_length = model.generate(pixel_values=pixel_values, max_length=5)  # counts the start token
    assert messages == [] and [str(w.message) for w in caught] == []
    assert by_new_tokens.shape[1] <= 5 and by_length.shape[1] <= 5
    assert torch.equal(by_new_tokens, by_length)
    assert torch.equal(by_new_tokens, default[:, : by_new_tokens.shape[1]])
