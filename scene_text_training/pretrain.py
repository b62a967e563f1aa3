"""DiG self-supervised pre-training on transformers.Trainer (CPU, one GPU, DDP, mixed precision, accumulation).

The original (`run_mae_pretraining_moco.py` + `engine_for_pretraining_moco.py`) in this shape: AdamW (wd 0.1, none
on 1-D parameters), lr = base_lr x global batch / 256 with linear warm-up and a cosine decay to `min_lr`, MoCo
momentum cosine-scheduled from 0.99 to 1 per optimiser step, SyncBatchNorm and all-gathered keys under DDP.

It is the fine-tuning stack (scene_text_training/trainer.py: the same `Recipe`, optimiser/scheduler builder,
`checkpoint-N` folders and resume path) plus what only pre-training has: `DiGPreTrainer` passes the step's momentum
to the model (one EMA update per optimiser step) and logs the loss parts, `ReconstructionPictureCallback` writes
what the model reconstructs. A resumed run repeats the uninterrupted one: the Trainer's seeded sampler and batch
skipping give the same data order, and masks/augmentations are a function of (seed, epoch, image index).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed

from modeling_dig.configuration_dig_pretraining import DiGPreTrainingConfig
from modeling_dig.modeling_dig_pretraining import DiGForPreTraining, momentum_schedule, patchify, unpatchify
from processing.image_processing_scene_text import load_rgb_image
from processing.lmdb_dataset import (
    CORRUPT_IMAGE,
    IMAGE_DECODE_ERRORS,
    MISSING_KEY,
    find_lmdbs,
    lmdb_folders,
    open_lmdb,
    read_num_samples,
    size_skip_reason,
)
from processing.masking import DiGMaskGenerator, DiGPretrainingCollator
from processing.pretraining_views import DiGPretrainingViews
from processing.read_skips import SKIPPED_RECORDS, skipped_record

from .collators import AugmentationEpochCallback
from .plots import plot_training_curves
from .reading import IMAGE_SUFFIXES
from .recipes import Recipe, RecipeError, save_recipe
from .trainer import (
    CURVES_FILE,
    RECIPE_FILE,
    SceneTextTrainerMixin,
    log_resume,
    resolve_resume,
    trainer_arguments,
)

logger = logging.getLogger(__name__)

MODEL_TYPE = "dig_pretraining"
FINAL_DIR = "final"
"""The pre-trained model's folder under train.output_dir (what `model.init_from` of fine-tuning points at)."""
RECONSTRUCTIONS_DIR = "reconstructions"
LOSS_PARTS = ("mim_loss", "contrastive_loss", "contrastive_accuracy")


@dataclass
class PretrainResult:
    """What a run did: steps, the Trainer's log history, where the model and the pictures went."""

    output_dir: Path
    global_step: int
    max_steps: int
    resumed_from: str | None
    train_loss: float
    log_history: list[dict[str, Any]]
    final_model_dir: Path
    reconstruction_images: list[str]

    @property
    def history(self) -> list[dict[str, Any]]:
        """The training-loss log entries (loss, the loss parts, momentum, learning_rate, step, epoch)."""
        return [entry for entry in self.log_history if "mim_loss" in entry]


# ----------------------------------------------------------------------------------------------------------------
# Data: image-only views of LMDBs (with or without labels) and image folders
# ----------------------------------------------------------------------------------------------------------------


class PretrainImageDataset(torch.utils.data.Dataset):
    """Images for pre-training; items are `{"image": PIL RGB, "index": i}` (the index seeds mask and augmentation).

    Lazy, like fine-tuning's reader: an LMDB contributes records 1..num-samples without reading any of them
    (labels are ignored, so unlabeled LMDBs work) and an image folder its sorted file list, so start-up takes the
    same time for 15.8M images as for 30k. An image is checked when it is read: one that does not decode, or
    (unless `image_check="none"`) is under 2 px or more elongated than 25:1, comes back as a `skipped_record`
    that the collator drops and the trainer counts (processing/read_skips.py).
    """

    def __init__(self, paths: Sequence[str | os.PathLike], image_check: str = "header", max_samples: int | None = None):
        if not paths:
            raise ValueError("no pre-training data: set data.train to LMDB folders/roots or image folders")
        if image_check not in ("none", "header", "full"):
            raise ValueError(f"pretrain.image_check must be none, header or full, got {image_check!r}")
        self.check_size = image_check != "none"
        self._envs: dict[int, Any] = {}
        self._pid = os.getpid()
        self.sources: list[tuple[str, Path]] = []  # ("lmdb"|"file", folder or file)
        source_ids, numbers = [], []  # per source: (source id, 1-based LMDB numbers or 0 for a file)
        for path in paths:
            for source_id, count in self._add(Path(path)):
                source_ids.append(np.full(count, source_id, dtype=np.uint32))
                numbers.append(np.arange(1, count + 1, dtype=np.uint32) if self.sources[source_id][0] == "lmdb"
                               else np.zeros(count, dtype=np.uint32))
        self._source_ids, self._numbers = np.concatenate(source_ids), np.concatenate(numbers)
        if max_samples is not None:
            self._source_ids, self._numbers = self._source_ids[:max_samples], self._numbers[:max_samples]
        logger.info("pre-training on %d images from %d sources", len(self), len(self.sources))

    def _add(self, path: Path) -> list[tuple[int, int]]:
        if not path.exists():
            raise FileNotFoundError(f"pre-training data {path} does not exist")
        if path.is_dir() and not lmdb_folders(path):  # an image folder (unfinished LMDB writes do not count)
            files = sorted(
                p for p in path.rglob("*")
                if p.suffix.lower() in IMAGE_SUFFIXES and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not files:
                raise FileNotFoundError(
                    f"{path} holds neither an LMDB (data.mdb) nor images ({', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            added = []
            for file in files:
                self.sources.append(("file", file))
                added.append((len(self.sources) - 1, 1))
            return added
        added = []
        for _, folder in find_lmdbs(path):
            self.sources.append(("lmdb", folder))
            source_id = len(self.sources) - 1
            with self._env(source_id).begin() as txn:
                added.append((source_id, read_num_samples(txn, folder)))
        return added

    def __len__(self) -> int:
        return len(self._numbers)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_envs"] = {}
        return state

    def _env(self, source_id: int) -> Any:
        if self._pid != os.getpid():  # forked into a DataLoader worker: open our own handles
            self._envs, self._pid = {}, os.getpid()
        if source_id not in self._envs:
            self._envs[source_id] = open_lmdb(self.sources[source_id][1])
        return self._envs[source_id]

    def __getitem__(self, item: int) -> dict[str, Any]:
        source_id, number = int(self._source_ids[item]), int(self._numbers[item])
        kind, location = self.sources[source_id]
        key = str(location) if kind == "file" else f"{location.name}:{number}"
        if kind == "file":
            data: Any = location
        else:
            with self._env(source_id).begin() as txn:
                data = txn.get(f"image-{number:09d}".encode())
            if data is None:
                return skipped_record(MISSING_KEY, key)
        try:
            image = load_rgb_image(data)
        except IMAGE_DECODE_ERRORS:
            return skipped_record(CORRUPT_IMAGE, key)
        reason = size_skip_reason(image.width, image.height, 2, 25.0) if self.check_size else None
        if reason is not None:
            return skipped_record(reason, key)
        return {"image": image, "index": item}


def build_collator(config: DiGPreTrainingConfig, recipe: Recipe) -> DiGPretrainingCollator:
    """Two views and a mask per image, seeded by (train.seed, epoch, image index)."""
    views = DiGPretrainingViews(
        config.encoder.image_size,
        recipe.pretrain.min_augmentations,
        recipe.pretrain.max_augmentations,
        mean=config.image_mean,
        std=config.image_std,
    )
    return DiGPretrainingCollator(
        views, DiGMaskGenerator(config.encoder.grid_size, config.mask_ratio), seed=recipe.train.seed,
        report_skips=True,
    )


def check_pretraining_recipe(recipe: Recipe, needs_data: bool = True) -> None:
    """Refuse the settings pre-training would otherwise ignore silently."""
    if recipe.model.type != MODEL_TYPE:
        raise RecipeError(f"model.type: pre-training trains {MODEL_TYPE!r}, got {recipe.model.type!r}")
    if recipe.data.val or recipe.data.synthetic is not None or recipe.data.augment != "none":
        raise RecipeError(
            "data.val / data.synthetic / data.augment do not apply to pre-training (its views are set in the "
            "pretrain section); leave them unset"
        )
    if needs_data and not recipe.data.train:
        raise RecipeError("data.train is empty: give unlabeled LMDB folders/roots or image folders")


def build_pretraining_config(recipe: Recipe) -> DiGPreTrainingConfig:
    """DiGPreTrainingConfig from model.preset (null = the config defaults) and model.config (typos are errors)."""
    from .models import check_config_keys

    values = dict(recipe.model.config)
    check_config_keys(DiGPreTrainingConfig, values, "model.config")
    if recipe.model.preset is None:
        return DiGPreTrainingConfig(**values)
    return DiGPreTrainingConfig.from_preset(recipe.model.preset, **values)


# ----------------------------------------------------------------------------------------------------------------
# Reconstruction pictures
# ----------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def reconstruction_picture(model: DiGForPreTraining, batch: dict[str, torch.Tensor]) -> Image.Image:
    """Three rows per sample: masked input (grey patches) | reconstruction (visible patches kept, masked ones
    predicted) | original. Upscaled x2 for viewing."""
    config = model.config
    patch, grid = config.encoder.patch_size, config.encoder.grid_size
    pixel_values, mask = batch["pixel_values"], batch["bool_masked_pos"]
    if mask.dim() == 3:
        mask = mask[:, 0]
    channels = pixel_values.shape[1]
    original = patchify(pixel_values * config.image_std + config.image_mean, patch)  # [B, N, D] in [0, 1]
    prediction = model.reconstruct(pixel_values, mask)
    if config.normalize_mim_target:  # undo the per-patch normalisation with the true patch statistics
        true = original.reshape(*original.shape[:2], -1, channels)
        std = true.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6
        prediction = (prediction.reshape_as(true) * std + true.mean(dim=-2, keepdim=True)).flatten(2)
    masked = mask.unsqueeze(-1)
    masked_input = torch.where(masked, torch.full_like(original, 0.5), original)
    reconstruction = torch.where(masked, prediction.clamp(0, 1), original)
    rows = [unpatchify(p, patch, grid, channels) for p in (masked_input, reconstruction, original)]
    stacked = torch.stack(rows, dim=1).flatten(0, 1)  # [B * 3, C, H, W], sample-major
    array = (stacked.clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy() * 255).round().astype(np.uint8)
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    separator = np.full((2, array.shape[2], 3), 255, dtype=np.uint8)
    parts: list[np.ndarray] = []
    for i, row in enumerate(array):
        parts.append(row)
        if i % 3 == 2:
            parts.append(separator)
    picture = Image.fromarray(np.concatenate(parts, axis=0))
    return picture.resize((picture.width * 2, picture.height * 2), Image.NEAREST)


class ReconstructionPictureCallback(TrainerCallback):
    """Writes `reconstruction_picture` of a fixed batch every `interval` optimiser steps (None: at each epoch's end;
    0: never) and at the end of training, from the main process, as reconstructions/step_NNNNNNNN.png."""

    def __init__(self, batch: dict[str, torch.Tensor], folder: Path, interval: int | None) -> None:
        self.batch, self.folder, self.interval = batch, folder, interval
        self.paths: list[str] = []

    def _write(self, state: Any, model: DiGForPreTraining) -> None:
        path = self.folder / f"step_{state.global_step:08d}.png"
        if not state.is_world_process_zero or str(path) in self.paths:
            return
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        self.folder.mkdir(parents=True, exist_ok=True)
        reconstruction_picture(model, {k: v.to(device) for k, v in self.batch.items()}).save(path)
        self.paths.append(str(path))
        model.train(was_training)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.interval == 0:
            return control
        if state.global_step >= state.max_steps or (self.interval and state.global_step % self.interval == 0):
            self._write(state, model)
        return control

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if self.interval is None:
            self._write(state, model)
        return control


# ----------------------------------------------------------------------------------------------------------------
# The Trainer
# ----------------------------------------------------------------------------------------------------------------


class DiGPreTrainer(SceneTextTrainerMixin, Trainer):
    """Trainer over DiGForPreTraining: the MoCo momentum of each optimiser step goes into the forward, and the loss
    parts (MIM, contrastive, contrastive accuracy) and the momentum join the Trainer's loss logs."""

    def __init__(self, *args: Any, momentum_cosine: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.momentum_cosine = momentum_cosine
        # The forward's **kwargs are transformers' output-capture flags, not a loss normaliser: the loss is a
        # per-micro-batch mean, which the Trainer divides by the accumulation steps.
        self.model_accepts_loss_kwargs = False
        self.loss_is_scaled_for_ga = False
        self._momentum_step: int | None = None
        self._momentum: float | None = None
        self._part_sums: torch.Tensor | None = None
        self._part_count = 0

    def step_momentum(self) -> float:
        """The EMA momentum for the next micro-batch: the schedule's value at the current optimiser step for its
        first micro-batch, 1.0 (no update) for the others, so the momentum branch moves once per optimiser step
        (the online weights do not change between micro-batches)."""
        step = self.state.global_step
        if step == self._momentum_step:
            return 1.0
        self._momentum_step = step
        base = self.model.config.momentum
        self._momentum = momentum_schedule(step, self.state.max_steps, base) if self.momentum_cosine else base
        return self._momentum

    def compute_loss(
        self, model: torch.nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        outputs = model(**inputs, momentum=self.step_momentum() if model.training else 1.0)
        loss = outputs.loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {self.state.global_step}: lower the lr or use fp32")
        if model.training:
            parts = torch.stack([getattr(outputs, name).detach().float() for name in LOSS_PARTS])
            self._part_sums = parts if self._part_sums is None else self._part_sums + parts
            self._part_count += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # Every process logs the training loss at the same steps: the all-reduce below is matched on all of them.
        if "loss" in logs and self._part_count:
            means = self.accelerator.reduce(self._part_sums / self._part_count, reduction="mean")
            logs.update(zip(LOSS_PARTS, means.tolist()))
            logs["momentum"] = self._momentum
            self._part_sums, self._part_count = None, 0
        super().log(logs, start_time)


def pretraining_arguments(recipe: Recipe) -> TrainingArguments:
    """The shared Trainer arguments, with full batches only (the contrastive loss pairs the processes' keys)."""
    return TrainingArguments(**trainer_arguments(recipe, has_validation=False), dataloader_drop_last=True)


def run_pretraining(
    recipe: Recipe, dataset: torch.utils.data.Dataset | None = None, callbacks: list[Any] | None = None
) -> PretrainResult:
    """Pre-train (or resume pre-training) DiG as the recipe says; saves the model to train.output_dir/final.

    `dataset` (items `{"image", "index"}`) overrides `recipe.data.train` (tests, benchmarks); `callbacks`: extra
    `transformers.TrainerCallback`s.
    """
    check_pretraining_recipe(recipe, needs_data=dataset is None)
    output_dir = Path(recipe.train.output_dir)
    args = pretraining_arguments(recipe)
    if args.process_index == 0:
        save_recipe(recipe, output_dir / RECIPE_FILE)
    set_seed(recipe.train.seed)
    if recipe.model.init_from:
        model = DiGForPreTraining.from_pretrained(recipe.model.init_from)
    else:
        model = DiGForPreTraining(build_pretraining_config(recipe))
    if args.world_size > 1:
        model.convert_sync_batchnorm(args.device.type)
    if dataset is None:
        with args.main_process_first(desc="reading pre-training data"):
            dataset = PretrainImageDataset(recipe.data.train, recipe.pretrain.image_check, recipe.data.max_train_samples)
    per_step = args.per_device_train_batch_size * args.world_size
    if len(dataset) // per_step < args.gradient_accumulation_steps:
        raise ValueError(
            f"{len(dataset)} images give no full optimiser step of {args.per_device_train_batch_size} x "
            f"{args.world_size} processes x {args.gradient_accumulation_steps} accumulation steps; lower "
            "train.per_device_train_batch_size or add data"
        )
    collator = build_collator(model.config, recipe)
    # Fixed pictures: the first images with their epoch-0 masks.
    shown = collator([dataset[i] for i in range(min(recipe.pretrain.num_visualize, len(dataset)))])
    shown.pop(SKIPPED_RECORDS)
    pictures = ReconstructionPictureCallback(shown, output_dir / RECONSTRUCTIONS_DIR, recipe.train.eval_steps)
    trainer = DiGPreTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        optim_recipe=recipe.optim,
        model_type=MODEL_TYPE,
        momentum_cosine=recipe.pretrain.momentum_cosine,
        callbacks=[AugmentationEpochCallback(collator), pictures, *(callbacks or [])],
    )
    logger.info(
        "pre-training %s: %d images, global batch %d, peak lr %.3g, %d processes", recipe.model.preset,
        len(dataset), trainer.total_train_batch_size, trainer.peak_learning_rate, args.world_size,
    )
    checkpoint = resolve_resume(recipe.train.resume, output_dir)
    log_resume(checkpoint, recipe)
    train_output = trainer.train(resume_from_checkpoint=checkpoint)
    final_dir = output_dir / FINAL_DIR
    trainer.save_model(str(final_dir))
    if trainer.is_world_process_zero():
        trainer.save_state()
        plot_training_curves(trainer.state.log_history, output_dir / CURVES_FILE, title=recipe.name)
    return PretrainResult(
        output_dir=output_dir,
        global_step=trainer.state.global_step,
        max_steps=trainer.state.max_steps,
        resumed_from=checkpoint,
        train_loss=train_output.training_loss,
        log_history=trainer.state.log_history,
        final_model_dir=final_dir,
        reconstruction_images=pictures.paths,
    )


__all__ = [
    "DiGPreTrainer",
    "PretrainImageDataset",
    "PretrainResult",
    "ReconstructionPictureCallback",
    "build_collator",
    "build_pretraining_config",
    "check_pretraining_recipe",
    "pretraining_arguments",
    "reconstruction_picture",
    "run_pretraining",
]
