"""CLIP4STR validation decodes each batch once: the eval forward with labels already decodes, its logits are reused."""

from __future__ import annotations

import pytest
import torch
from test_clip4str_model import tiny_model
from transformers import Seq2SeqTrainingArguments

from processing.processing_clip4str import CLIP4STRProcessor
from scene_text_training.finetune import SceneTextTrainer, make_compute_metrics
from scene_text_training.recipes import OptimRecipe


def reading_model():
    """A tiny CLIP4STR whose predictions end with an EOS after a few characters (EOS bias +0.5 on both heads)."""
    model = tiny_model(seed=0)
    with torch.no_grad():
        model.visual_decoder.head.bias[model.config.eos_token_id] += 0.5
        model.cross_decoder.head.bias[model.config.eos_token_id] += 0.5
    return model


def test_clip4str_prediction_step_decodes_once_with_the_same_metrics(tmp_path, monkeypatch):
    model = reading_model()
    processor = CLIP4STRProcessor()
    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        texts = processor.batch_decode(model.generate(pixel_values=pixels))
    assert all(texts) and all(len(t) < model.config.max_label_length for t in texts)
    labels_text = [*texts[:3], texts[3] + "x"]  # three read right, one wrong
    inputs = {"pixel_values": pixels, "labels": processor(text=labels_text)["labels"]}

    args = Seq2SeqTrainingArguments(
        output_dir=str(tmp_path), use_cpu=True, report_to=[], predict_with_generate=True, disable_tqdm=True
    )
    trainer = SceneTextTrainer(
        model=model, args=args, optim_recipe=OptimRecipe(), model_type="clip4str", processing_class=processor
    )
    calls = {"decode": 0, "generate": 0}
    decode, generate = model.decode, model.generate

    def counted_decode(*a, **k):
        calls["decode"] += 1
        return decode(*a, **k)

    def counted_generate(*a, **k):
        calls["generate"] += 1
        return generate(*a, **k)

    monkeypatch.setattr(model, "decode", counted_decode)
    monkeypatch.setattr(model, "generate", counted_generate)
    model.eval()
    loss, ids, labels = trainer.prediction_step(model, inputs, prediction_loss_only=False)
    assert calls == {"decode": 1, "generate": 0}

    with torch.no_grad():
        reference = model(**inputs)  # the same validation forward: same loss
        generated = generate(pixel_values=pixels)
    assert loss.item() == pytest.approx(reference.loss.item(), rel=1e-6)
    compute_metrics = make_compute_metrics(processor.tokenizer)

    class Prediction:
        def __init__(self, predictions):
            self.predictions, self.label_ids = predictions, labels.numpy()

    reused = compute_metrics(Prediction(ids.numpy()))
    assert reused == compute_metrics(Prediction(generated.numpy()))
    assert reused["accuracy"] == pytest.approx(0.75)
