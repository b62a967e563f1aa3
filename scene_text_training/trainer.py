"""The training stack shared by fine-tuning and DiG pre-training: transformers.Trainer driven by a `Recipe`.

Both get their Trainer arguments from the recipe's `train` section, their optimiser and schedule from its `optim`
section (scene_text_training/optim.py), and the same checkpoints: the Trainer's `checkpoint-N` folders (weights as
safetensors; optimizer, scheduler and RNG states read back with `torch.load(weights_only=True)`; `trainer_state.json`
written last), published atomically (`AtomicCheckpointMixin`) and resumed through `resolve_resume`, which also
skips incomplete folders that other writers left.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from processing.read_skips import SKIPPED_RECORDS, ReadSkipTally

from .checkpoints import TEMP_PREFIX, incomplete_reason, newest_complete_checkpoint, publish_folder
from .optim import build_optimizer, build_scheduler, scaled_learning_rate
from .recipes import OptimRecipe, Recipe

logger = logging.getLogger(__name__)

RECIPE_FILE = "recipe.yaml"
CURVES_FILE = "training_curves.png"

# What Trainer.train(resume_from_checkpoint=...) reads; trainer_state.json is written last by a save.
TRAINER_CHECKPOINT_FILES = (
    ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"),
    "optimizer.pt",
    "scheduler.pt",
    "trainer_state.json",
)


class RecipeOptimizerMixin:
    """Trainer mixin: the recipe's AdamW groups and per-step schedule at the linearly scaled peak lr.

    Mixed in before a `transformers.Trainer` subclass, whose `__init__` it completes with `optim_recipe` and
    `model_type` (the recipe's model.type). The parameter groups follow the rules the model declares
    (scene_text_training/optim.py).
    """

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


class AtomicCheckpointMixin:
    """Trainer mixin: `checkpoint-N` appears under its name only when complete.

    The Trainer writes a checkpoint file by file into its final folder, so a kill mid-save leaves a `checkpoint-N`
    that looks newest. Here every process writes into `.incomplete-checkpoint-N/checkpoint-N` (the Trainer's own
    save, unchanged), and the main process renames it into place once all processes are done, then applies
    `save_total_limit`.
    """

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

        run_dir = Path(self._get_output_dir(trial=trial))
        final = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging = run_dir / f"{TEMP_PREFIX}{final.name}"
        if self.args.should_save and staging.exists():  # left by a killed save
            shutil.rmtree(staging)
        self.accelerator.wait_for_everyone()
        self._get_output_dir = lambda trial=None: str(staging)  # the Trainer's save goes to staging/checkpoint-N
        try:
            super()._save_checkpoint(model, trial)
        finally:
            del self._get_output_dir
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            publish_folder(staging / final.name, final)
            shutil.rmtree(staging)
            rotate_checkpoints(output_dir=str(run_dir), save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)
        self.accelerator.wait_for_everyone()


class ReadSkipsMixin:
    """Trainer mixin: counts the records the lazy reader found unusable when reading them (they travel in the
    batches, processing/read_skips.py) and reports them, summed over workers and processes, at the end of every
    epoch (`train_skipped_on_read` in the log history) and of every evaluation (`eval_skipped_on_read`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_skips = {"train": ReadSkipTally("train"), "eval": ReadSkipTally("eval")}
        self.add_callback(_ReadSkipsEpochReport(self))

    def without_read_skips(self, inputs: dict[str, Any], phase: str) -> dict[str, Any]:
        """`inputs` minus the batch's skipped-record list, which is added to `phase`'s tally."""
        if SKIPPED_RECORDS in inputs:
            inputs = dict(inputs)
            self.read_skips[phase].add(inputs.pop(SKIPPED_RECORDS))
        return inputs

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        return super().training_step(model, self.without_read_skips(inputs, "train"), *args, **kwargs)

    def evaluate(self, *args: Any, metric_key_prefix: str = "eval", **kwargs: Any) -> dict[str, float]:
        metrics = super().evaluate(*args, metric_key_prefix=metric_key_prefix, **kwargs)
        skipped = self.read_skips["eval"].report(f"evaluation at step {self.state.global_step}")
        if skipped:
            metrics[f"{metric_key_prefix}_skipped_on_read"] = skipped
            self.log({f"{metric_key_prefix}_skipped_on_read": skipped})
        return metrics


class _ReadSkipsEpochReport(TrainerCallback):
    def __init__(self, trainer: ReadSkipsMixin) -> None:
        self.trainer = trainer

    def on_epoch_end(self, args, state, control, **kwargs):
        skipped = self.trainer.read_skips["train"].report(f"training epoch {math.ceil(state.epoch - 1e-9)}")
        if skipped:
            self.trainer.log({"train_skipped_on_read": skipped})
        return control


class SceneTextTrainerMixin(ReadSkipsMixin, AtomicCheckpointMixin, RecipeOptimizerMixin):
    """What every trainer of this project adds to its transformers Trainer class: the recipe's optimiser and
    schedule, atomic checkpoints and the count of records skipped when read. Put it first in the bases
    (`class X(SceneTextTrainerMixin, Trainer)`)."""


def trainer_arguments(recipe: Recipe, has_validation: bool) -> dict[str, Any]:
    """TrainingArguments keywords from the recipe's `train` section (CPU when no GPU, mixed precision only on GPU)."""
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
    return {
        "output_dir": train.output_dir,
        "per_device_train_batch_size": train.per_device_train_batch_size,
        "per_device_eval_batch_size": train.per_device_eval_batch_size,
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
        "num_train_epochs": train.num_train_epochs,
        "max_steps": train.max_steps,
        "max_grad_norm": recipe.optim.max_grad_norm or 0.0,
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "logging_steps": train.logging_steps,
        "logging_first_step": True,
        "eval_strategy": eval_strategy,
        "eval_steps": eval_steps,
        "save_strategy": save_strategy,
        "save_steps": save_steps,
        "save_total_limit": train.save_total_limit,
        "report_to": list(train.report_to) or "none",
        "seed": train.seed,
        "use_cpu": use_cpu,
        "dataloader_num_workers": train.dataloader_num_workers,
        "ddp_find_unused_parameters": train.ddp_find_unused_parameters,
        "remove_unused_columns": False,  # the collators need the raw columns
        "disable_tqdm": train.disable_tqdm,
    }


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


def log_resume(checkpoint: str | None, recipe: Recipe) -> None:
    """Say where a run starts from."""
    if checkpoint is not None:
        logger.info("resuming from %s", checkpoint)
    elif recipe.train.resume == "auto":
        logger.info("no complete checkpoint in %s: training from the start", recipe.train.output_dir)


__all__ = [
    "CURVES_FILE",
    "RECIPE_FILE",
    "TRAINER_CHECKPOINT_FILES",
    "AtomicCheckpointMixin",
    "ReadSkipsMixin",
    "RecipeOptimizerMixin",
    "SceneTextTrainerMixin",
    "log_resume",
    "resolve_resume",
    "trainer_arguments",
]
