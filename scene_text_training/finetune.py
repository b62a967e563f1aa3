"""Fine-tuning on STR LMDBs with transformers' Seq2SeqTrainer.

The same code runs on CPU, one GPU and under `accelerate launch` (DDP): the Trainer owns the device placement,
mixed precision, gradient accumulation, checkpointing, resumption (RNG states + data skipping) and logging. This
module adds generation-based validation accuracy, the resolved recipe beside the checkpoints and the training-curve
plot; the optimiser, schedule, arguments and resume path are shared with pre-training (scene_text_training/trainer.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, set_seed
from transformers.trainer_utils import EvalPrediction

from .collators import AugmentationEpochCallback, SceneTextCollator, SeededAugmentedDataset
from .data import load_lmdb_split
from .evaluation import score_predictions
from .families import family
from .models import build_model, data_max_label_length
from .plots import plot_training_curves
from .recipes import Recipe, save_recipe
from .trainer import (
    CURVES_FILE,
    RECIPE_FILE,
    SceneTextTrainerMixin,
    log_resume,
    resolve_resume,
    trainer_arguments,
)

logger = logging.getLogger(__name__)

class SceneTextTrainer(SceneTextTrainerMixin, Seq2SeqTrainer):
    """Seq2SeqTrainer with the originals' optimiser/schedule and a generate-only prediction step."""

    def prediction_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], prediction_loss_only: bool,
        ignore_keys: list[str] | None = None, **gen_kwargs: Any,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """The validation loss plus greedy predicted ids.

        DiG: teacher-forced loss, then `generate(pixel_values)` (no labels reach generate). CLIP4STR (and CLIP4STR +
        Adapter, which shares its validation decoding): the eval-mode
        forward with labels already decodes (the original's validation: the longest label's steps, no early stop);
        its logits give the ids, as the original scores validation accuracy from them (PARSeq's `_eval_step`), so
        each batch is decoded once.
        """
        inputs = self.without_read_skips(inputs, "eval")
        if prediction_loss_only or not self.args.predict_with_generate:
            return super().prediction_step(model, inputs, prediction_loss_only=True, ignore_keys=ignore_keys)
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            outputs = model(**inputs)
            loss = outputs.loss.detach()
            if family(self.model_type).validation_from_logits:
                ids = outputs.logits.argmax(-1)
            else:
                generator = self.accelerator.unwrap_model(model)
                ids = generator.generate(pixel_values=inputs["pixel_values"], num_beams=1)
        return loss, ids, inputs["labels"]


@dataclass
class FinetuneResult:
    """What a finetune run leaves behind."""

    output_dir: Path
    global_step: int
    train_loss: float | None
    eval_metrics: dict[str, float]
    log_history: list[dict[str, Any]]


def make_compute_metrics(tokenizer: Any) -> Any:
    """compute_metrics for the Trainer: decode generated ids and labels, score with the benchmark protocol of the
    tokenizer's (the model's) charset."""
    pad_id = tokenizer.pad_token_id

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        ids = np.where(prediction.predictions == -100, pad_id, prediction.predictions)
        labels = np.where(prediction.label_ids == -100, pad_id, prediction.label_ids)
        texts = tokenizer.batch_decode(ids.tolist())
        references = tokenizer.batch_decode(labels.tolist())
        result = score_predictions(texts, references, charset=tokenizer.charset)
        return {"accuracy": result.accuracy, "one_minus_ned": result.one_minus_ned}

    return compute_metrics


def training_arguments(recipe: Recipe, has_validation: bool) -> Seq2SeqTrainingArguments:
    """Trainer arguments from the recipe's `train` section, validating with greedy generation."""
    return Seq2SeqTrainingArguments(
        **trainer_arguments(recipe, has_validation), label_names=["labels"], predict_with_generate=True
    )


def run_finetune(recipe: Recipe, callbacks: list[Any] | None = None) -> FinetuneResult:
    """Fine-tune `recipe.model` on `recipe.data`; saves the model, processor, recipe and curves to output_dir.

    `callbacks`: extra `transformers.TrainerCallback`s (e.g. early stopping, or a test's interruption).
    """
    from .synthetic_data import ensure_synthetic_data

    output_dir = Path(recipe.train.output_dir)
    if recipe.data.synthetic is not None:
        # Rendered by the main process only; the others wait, then read the same LMDBs.
        dist = training_arguments(recipe, has_validation=False)
        with dist.main_process_first(desc="rendering synthetic data"):
            ensure_synthetic_data(recipe, render=dist.process_index == 0)
    if not recipe.data.train:
        raise ValueError("data.train is empty: give training LMDB paths (data.train=[path, ...])")

    args = training_arguments(recipe, has_validation=bool(recipe.data.val))
    if args.process_index == 0:
        save_recipe(recipe, output_dir / RECIPE_FILE)
    set_seed(recipe.train.seed)
    model, processor = build_model(recipe.model)
    max_len = data_max_label_length(recipe.data.max_label_length, model.config, processor.tokenizer)
    with args.main_process_first(desc="reading LMDBs"):
        labels = label_options(recipe, processor.tokenizer)
        train_set, train_skipped = load_lmdb_split(recipe.data.train, max_len, recipe.data.max_train_samples,
                                                   reader=recipe.data.reader, **labels)
        val_set = None
        if recipe.data.val:
            val_set, _ = load_lmdb_split(recipe.data.val, max_len, recipe.data.max_val_samples,
                                         reader=recipe.data.reader, **labels)
    logger.info("training on %d samples (%d skipped), validating on %s", len(train_set), train_skipped,
                len(val_set) if val_set is not None else "nothing")
    augment = build_augmentation(recipe.data.augment, seed=recipe.train.seed)
    callbacks = list(callbacks or [])
    if augment is not None:  # each image's augmentation is a function of (train.seed, epoch, sample index)
        train_set = SeededAugmentedDataset(train_set, augment, seed=recipe.train.seed)
        callbacks.append(AugmentationEpochCallback(train_set))

    trainer = SceneTextTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set,
        data_collator=SceneTextCollator(processor, report_skips=True),
        processing_class=processor,
        compute_metrics=make_compute_metrics(processor.tokenizer),
        optim_recipe=recipe.optim,
        model_type=recipe.model.type,
        callbacks=callbacks,
    )
    checkpoint = resolve_resume(recipe.train.resume, output_dir)
    log_resume(checkpoint, recipe)
    train_output = trainer.train(resume_from_checkpoint=checkpoint)
    eval_metrics = trainer.evaluate() if val_set is not None else {}
    trainer.save_model(str(output_dir))
    if trainer.is_world_process_zero():
        trainer.save_state()
        plot_training_curves(trainer.state.log_history, output_dir / CURVES_FILE, title=recipe.name)
    return FinetuneResult(
        output_dir=output_dir,
        global_step=trainer.state.global_step,
        train_loss=train_output.training_loss,
        eval_metrics=eval_metrics,
        log_history=trainer.state.log_history,
    )


def label_options(recipe: Recipe, tokenizer: Any) -> dict[str, Any]:
    """The label pipeline's settings: the model's charset (its tokenizer's) and the recipe's Unicode and whitespace
    rules."""
    return {"charset": tokenizer.charset, "unicode_normalization": recipe.data.unicode_normalization,
            "remove_whitespace": recipe.data.remove_whitespace}


def build_augmentation(name: str, seed: int | None = None) -> Any:
    """The recipe's training augmentation (PIL -> PIL, see `processing.augmentation.TRAIN_AUGMENTATIONS`), or None.
    `seed` seeds its own generator (fine-tuning passes a generator per image instead, see SeededAugmentedDataset)."""
    from processing.augmentation import TRAIN_AUGMENTATIONS

    if name in (None, "none"):
        return None
    if name not in TRAIN_AUGMENTATIONS:
        raise ValueError(f"data.augment must be one of {[*TRAIN_AUGMENTATIONS, 'none']}, got {name!r}")
    return TRAIN_AUGMENTATIONS[name](seed)
