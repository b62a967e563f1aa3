"""Fine-tuning on STR LMDBs with transformers' Seq2SeqTrainer.

The same code runs on CPU, one GPU and under `accelerate launch` (DDP): the Trainer owns the device placement,
mixed precision, gradient accumulation, checkpointing, resumption (RNG states + data skipping) and logging. This
module adds what the originals do differently: the optimiser groups and schedules (scene_text_training/optim.py),
generation-based validation accuracy, the resolved recipe beside the checkpoints and the training-curve plot.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, set_seed
from transformers.trainer_utils import EvalPrediction

from .checkpoints import incomplete_reason, newest_complete_checkpoint
from .collators import AugmentationEpochCallback, SceneTextCollator, SeededAugmentedDataset
from .data import load_lmdb_split
from .evaluation import score_predictions
from .families import family
from .models import build_model, data_max_label_length
from .optim import build_optimizer, build_scheduler, scaled_learning_rate
from .plots import plot_training_curves
from .recipes import OptimRecipe, Recipe, save_recipe

logger = logging.getLogger(__name__)

RECIPE_FILE = "recipe.yaml"
CURVES_FILE = "training_curves.png"


class SceneTextTrainer(Seq2SeqTrainer):
    """Seq2SeqTrainer with the originals' optimiser/schedule and a generate-only prediction step."""

    def __init__(self, *args: Any, optim_recipe: OptimRecipe, model_type: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.optim_recipe = optim_recipe
        self.model_type = model_type

    @property
    def total_train_batch_size(self) -> int:
        return self.args.per_device_train_batch_size * self.args.world_size * self.args.gradient_accumulation_steps

    @property
    def peak_learning_rate(self) -> float:
        return scaled_learning_rate(self.optim_recipe, self.total_train_batch_size)

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            self.optimizer = build_optimizer(opt_model, self.optim_recipe, self.peak_learning_rate)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None) -> Any:
        if self.lr_scheduler is None:
            batches = math.ceil(len(self.train_dataset) / (self.args.per_device_train_batch_size * self.args.world_size))
            steps_per_epoch = max(batches // self.args.gradient_accumulation_steps, 1)
            self.lr_scheduler = build_scheduler(
                optimizer or self.optimizer, self.optim_recipe, num_training_steps, steps_per_epoch,
                base_lr=self.peak_learning_rate,
            )
            self._created_lr_scheduler = True
        return self.lr_scheduler

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
    """compute_metrics for the Trainer: decode generated ids and labels, score with the benchmark protocol."""
    pad_id = tokenizer.pad_token_id

    def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
        ids = np.where(prediction.predictions == -100, pad_id, prediction.predictions)
        labels = np.where(prediction.label_ids == -100, pad_id, prediction.label_ids)
        texts = tokenizer.batch_decode(ids.tolist())
        references = tokenizer.batch_decode(labels.tolist())
        result = score_predictions(texts, references)
        return {"accuracy": result.accuracy, "one_minus_ned": result.one_minus_ned}

    return compute_metrics


def training_arguments(recipe: Recipe, has_validation: bool) -> Seq2SeqTrainingArguments:
    """Trainer arguments from the recipe's `train` section (CPU when no GPU, mixed precision only on GPU)."""
    train = recipe.train
    use_cpu = (not torch.cuda.is_available()) if train.use_cpu is None else train.use_cpu
    precision = train.mixed_precision
    if precision not in ("no", "bf16", "fp16"):
        raise ValueError(f"train.mixed_precision must be 'no', 'bf16' or 'fp16', got {precision!r}")
    if use_cpu and precision != "no":
        logger.warning("train.mixed_precision=%s ignored on CPU", precision)
        precision = "no"
    if not has_validation or train.eval_steps == 0:
        eval_strategy, eval_steps = "no", None
    elif train.eval_steps is None:
        eval_strategy, eval_steps = "epoch", None
    else:
        eval_strategy, eval_steps = "steps", train.eval_steps
    save_strategy, save_steps = ("epoch", None) if train.save_steps is None else ("steps", train.save_steps)
    return Seq2SeqTrainingArguments(
        output_dir=train.output_dir,
        per_device_train_batch_size=train.per_device_train_batch_size,
        per_device_eval_batch_size=train.per_device_eval_batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        num_train_epochs=train.num_train_epochs,
        max_steps=train.max_steps,
        max_grad_norm=recipe.optim.max_grad_norm or 0.0,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        logging_steps=train.logging_steps,
        logging_first_step=True,
        eval_strategy=eval_strategy,
        eval_steps=eval_steps,
        save_strategy=save_strategy,
        save_steps=save_steps,
        save_total_limit=train.save_total_limit,
        report_to=list(train.report_to) or "none",
        seed=train.seed,
        use_cpu=use_cpu,
        dataloader_num_workers=train.dataloader_num_workers,
        ddp_find_unused_parameters=train.ddp_find_unused_parameters,
        remove_unused_columns=False,  # the collator needs the raw image/label columns
        label_names=["labels"],
        predict_with_generate=True,
        disable_tqdm=train.disable_tqdm,
    )


# What Trainer.train(resume_from_checkpoint=...) reads; trainer_state.json is written last by a save.
TRAINER_CHECKPOINT_FILES = (
    ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"),
    "optimizer.pt",
    "scheduler.pt",
    "trainer_state.json",
)


def resolve_resume(resume: str | None, output_dir: str | Path) -> str | None:
    """'auto' -> the newest COMPLETE checkpoint-* in output_dir (None if there is none; newer folders left by a
    save that was killed are skipped, with a logged reason); a path -> that checkpoint, which must be complete."""
    if resume in (None, "", "none", "no", False):
        return None
    if resume == "auto":
        checkpoint = newest_complete_checkpoint(output_dir, TRAINER_CHECKPOINT_FILES)
        return None if checkpoint is None else str(checkpoint)
    if not Path(resume).is_dir():
        raise FileNotFoundError(f"train.resume={resume}: no such checkpoint folder (use 'auto' or a checkpoint-N path)")
    problem = incomplete_reason(resume, TRAINER_CHECKPOINT_FILES)
    if problem is not None:
        raise ValueError(f"train.resume={resume}: incomplete checkpoint ({problem}); pick an earlier one or 'auto'")
    return str(resume)


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
        train_set, train_skipped = load_lmdb_split(recipe.data.train, max_len, recipe.data.max_train_samples)
        val_set = None
        if recipe.data.val:
            val_set, _ = load_lmdb_split(recipe.data.val, max_len, recipe.data.max_val_samples)
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
        data_collator=SceneTextCollator(processor),
        processing_class=processor,
        compute_metrics=make_compute_metrics(processor.tokenizer),
        optim_recipe=recipe.optim,
        model_type=recipe.model.type,
        callbacks=callbacks,
    )
    checkpoint = resolve_resume(recipe.train.resume, output_dir)
    if checkpoint is not None:
        logger.info("resuming from %s", checkpoint)
    elif recipe.train.resume == "auto":
        logger.info("no complete checkpoint in %s: training from the start", output_dir)
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


def build_augmentation(name: str, seed: int | None = None) -> Any:
    """The recipe's training augmentation (PIL -> PIL, see `processing.augmentation.TRAIN_AUGMENTATIONS`), or None.
    `seed` seeds its own generator (fine-tuning passes a generator per image instead, see SeededAugmentedDataset)."""
    from processing.augmentation import TRAIN_AUGMENTATIONS

    if name in (None, "none"):
        return None
    if name not in TRAIN_AUGMENTATIONS:
        raise ValueError(f"data.augment must be one of {[*TRAIN_AUGMENTATIONS, 'none']}, got {name!r}")
    return TRAIN_AUGMENTATIONS[name](seed)
