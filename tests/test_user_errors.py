"""User errors: one clear line naming the file / input / key and an exit code, never a traceback or a crash deep
inside a run."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

import train_ocr
from scene_text_training.recipes import RecipeError, load_recipe


class _SystemPayload:
    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("flag", ["--num-beams", "--batch-size", "--max-samples"])
@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_cli_rejects_invalid_numbers_up_front(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_ocr.main(["evaluate", "--model", "m", "--data", "d", flag, value])
    assert exit_info.value.code == 2
    assert flag in capsys.readouterr().err


def test_read_rejects_a_zero_beam_width(capsys):
    with pytest.raises(SystemExit):
        train_ocr.main(["read", "--model", "m", "--num-beams", "0", "x.png"])
    assert "must be >= 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("override", ["evaluate.num_beams=0", "train.per_device_train_batch_size=0",
                                      "train.gradient_accumulation_steps=0", "data.max_label_length=0"])
def test_recipe_numbers_have_minimums(override):
    key = override.split("=")[0]
    with pytest.raises(RecipeError, match=rf"{key}: must be >= 1, got 0"):
        load_recipe(None, [override])


def test_pretrain_recipe_numbers_have_minimums(tmp_path, capsys):
    config = tmp_path / "pretrain.yaml"
    config.write_text("model: {type: dig_pretraining}\ndata: {train: [/data/unlabeled]}\n")
    assert train_ocr.main(["pretrain", "--config", str(config), "pretrain.num_visualize=0"]) == 2
    assert "pretrain.num_visualize: must be >= 1, got 0" in capsys.readouterr().err


def test_cli_reports_bad_files_in_one_line(tmp_path, capsys):
    broken = tmp_path / "encoder.pth"
    broken.write_bytes(b"not a torch file")
    code = train_ocr.main(["finetune", "model.preset=tiny-test", f"model.init_from={broken}",
                           f"train.output_dir={tmp_path / 'out'}", "data.train=[/nonexistent]"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert str(broken) in err and "weights_only=False" not in err  # never advise the unsafe load


def test_init_from_errors_name_the_file(tmp_path):
    from modeling_dig import DiGConfig, DiGForTextRecognition
    from modeling_dig.encoder_initialization import load_pretrained_encoder

    model = DiGForTextRecognition(DiGConfig.from_preset("tiny-test"))
    for name, data in (("truncated.pth", b"PK\x03\x04garbage"), ("text.pth", b"hello")):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError, match=rf"{name}: not readable as an original DiG checkpoint"):
            load_pretrained_encoder(model, path)
    payload = tmp_path / "payload.pth"
    torch.save({"model": _SystemPayload(tmp_path / "pwned")}, payload)
    with pytest.raises(ValueError, match=r"payload.pth: .*posix.system"):
        load_pretrained_encoder(model, payload)
    assert not (tmp_path / "pwned").exists()


def test_pipeline_errors_name_the_input(tmp_path):
    from transformers import pipeline

    from modeling_dig import DiGConfig, DiGForTextRecognition
    from scene_text_training.models import build_processor

    config = DiGConfig.from_preset("tiny-test")
    DiGForTextRecognition(config).save_pretrained(tmp_path / "model")
    build_processor("dig", config).save_pretrained(tmp_path / "model")
    pipe = pipeline("image-text-to-text", model=str(tmp_path / "model"))
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((32, 100, 3), np.uint8)).save(buffer, format="PNG")
    truncated = tmp_path / "word_17.png"
    truncated.write_bytes(buffer.getvalue()[:60])  # a download cut short
    with pytest.raises(ValueError, match="word_17.png"):
        pipe(Image.open(truncated))  # opened lazily: decoding fails inside the pipeline
    with pytest.raises(ValueError, match=r"word_17.png"):
        pipe(str(truncated))
