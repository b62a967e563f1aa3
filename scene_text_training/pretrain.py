"""DiG self-supervised pre-training loop on accelerate (CPU, one GPU, DDP, mixed precision, accumulation).

The original (`run_mae_pretraining_moco.py` + `engine_for_pretraining_moco.py`) in this shape:
AdamW (wd 0.1, none on 1-D parameters and biases), lr = base_lr x global batch / 256 with linear warm-up and a
cosine decay to `min_lr`, MoCo momentum cosine-scheduled from 0.99 to 1 per step, SyncBatchNorm and all-gathered
keys under DDP. Checkpoints are `accelerator.save_state` folders plus `pretrain_state.json` (step, scheduler,
momentum: JSON, so resuming unpickles nothing beyond `torch.load(weights_only=True)`), written under a temporary name
and renamed when complete; a restarted run resumes from the newest complete one at the same step and, thanks to a
seeded sampler, skipped batches and index-seeded masks/augmentations, with the same data order.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed
from PIL import Image
from tqdm.auto import tqdm
from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

from modeling_dig.configuration_dig_pretraining import DiGPreTrainingConfig
from modeling_dig.modeling_dig_pretraining import DiGForPreTraining, momentum_schedule, patchify, unpatchify
from modeling_dig.original_checkpoint import weights_only_failure
from processing.image_processing_scene_text import load_rgb_image
from processing.lmdb_dataset import (
    SkipCounter,
    check_image,
    find_lmdbs,
    lmdb_folders,
    open_lmdb,
    read_num_samples,
)
from processing.masking import DiGMaskGenerator, DiGPretrainingCollator
from processing.pretraining_views import DiGPretrainingViews

from .checkpoints import newest_complete_checkpoint, numbered_folders, publish_folder, temporary_sibling
from .recipes import _doc

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
CHECKPOINT_PATTERN = r"step_(\d+)"
STATE_FILE = "pretrain_state.json"
"""Step, lr-scheduler state and MoCo momentum of a checkpoint, as JSON (never a pickle: nothing runs on resume)."""




@dataclass
class PretrainRecipe:
    """Everything `run_pretraining` needs; the defaults are the seed's README pre-training command (8 GPUs x 128).

    Read from YAML by `scene_text_training.recipes.load_recipe(path, overrides, cls=PretrainRecipe)` (`train_ocr pretrain`).
    """

    output_dir: str = _doc(
        "folder for checkpoints/, reconstructions/, log.jsonl and final/", default="outputs/dig_pretrain"
    )
    train_data: list[str] = _doc(  # noqa: RUF009
        "unlabeled training images: STR LMDB folders/roots (labels optional, ignored) or image folders",
        default_factory=list,
    )
    model_preset: str = _doc(
        "DiGPreTrainingConfig preset: vit-small (released), vit-tiny, vit-base, reduced, tiny-test", default="vit-small"
    )
    model_config: dict[str, Any] = _doc(  # noqa: RUF009
        "DiGPreTrainingConfig overrides on top of the preset (an `encoder:` mapping updates the ViT)",
        default_factory=dict,
    )
    init_from: str | None = _doc("start from a saved DiGForPreTraining folder instead of random weights", default=None)
    batch_size: int = _doc("images per process per micro-batch (the seed: 128 per GPU)", default=128, minimum=1)
    gradient_accumulation_steps: int = _doc("micro-batches per optimiser step", default=1, minimum=1)
    epochs: int = _doc("passes over the data (the seed: 10)", default=10, minimum=1)
    max_steps: int | None = _doc(
        "stop after this many optimiser steps (overrides epochs for the schedules)", default=None, minimum=1
    )
    base_lr: float = _doc("peak lr before scaling: lr = base_lr x global batch / lr_reference_batch", default=1.5e-4)
    lr_reference_batch: int = _doc("reference batch of the linear lr scaling rule", default=256, minimum=1)
    min_lr: float = _doc("final lr of the cosine decay", default=1e-5)
    warmup_steps: int = _doc("linear warm-up steps from 0 to the peak lr (the seed: 5000)", default=5000, minimum=0)
    weight_decay: float = _doc("AdamW weight decay (not applied to 1-D parameters and biases)", default=0.1)
    adam_betas: tuple[float, float] = _doc("AdamW betas", default=(0.9, 0.999))
    adam_eps: float = _doc("AdamW epsilon", default=1e-8)
    max_grad_norm: float | None = _doc("gradient clipping (the seed: none)", default=None)
    momentum_cosine: bool = _doc(
        "cosine-schedule the MoCo momentum from config.momentum to 1 (the seed: on)", default=True
    )
    mixed_precision: str = _doc("'no', 'fp16' or 'bf16' (the original trained under fp16 autocast)", default="no")
    cpu: bool = _doc("force CPU even when a GPU is visible", default=False)
    seed: int = _doc("seed of weights, sampler order, masks and augmentations", default=0)
    num_workers: int = _doc("DataLoader workers per process", default=2, minimum=0)
    image_check: str = _doc("bad-image screening of LMDB records at start-up: none / header / full", default="header")
    max_train_samples: int | None = _doc("use only the first N images (debugging)", default=None, minimum=1)
    min_augmentations: int = _doc("fewest random corruptions of the augmented view", default=2, minimum=0)
    max_augmentations: int = _doc("most random corruptions of the augmented view", default=5, minimum=0)
    logging_steps: int = _doc("log losses every N optimiser steps", default=50, minimum=1)
    save_steps: int = _doc(
        "save a resumable checkpoint every N optimiser steps (and at the end)", default=2000, minimum=1
    )
    save_total_limit: int | None = _doc("keep only the newest N checkpoints", default=2, minimum=1)
    eval_steps: int = _doc(
        "write a reconstruction picture every N optimiser steps (and at the end)", default=2000, minimum=1
    )
    num_visualize: int = _doc("samples in each reconstruction picture", default=4, minimum=1)
    resume: bool = _doc("continue from the newest checkpoint in output_dir/checkpoints if there is one", default=True)
    progress_bar: bool = _doc("show a tqdm progress bar on the main process", default=True)


@dataclass
class PretrainResult:
    """What a run did: steps, the per-step mean losses of this run, where the model went."""

    global_step: int
    total_steps: int
    resumed_from_step: int
    history: list[dict[str, float]]
    final_model_dir: str | None
    reconstruction_images: list[str]


# ----------------------------------------------------------------------------------------------------------------
# Data: image-only views of LMDBs (with or without labels) and image folders
# ----------------------------------------------------------------------------------------------------------------


class PretrainImageDataset(torch.utils.data.Dataset):
    """Images for pre-training; items are `{"image": PIL RGB, "index": i}` (the index seeds mask and augmentation).

    LMDB records only need `image-%09d` (labels are ignored, so unlabeled LMDBs work); undecodable or
    degenerate images are screened at start-up and skipped with a logged count.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], image_check: str = "header", max_samples: int | None = None):
        if not paths:
            raise ValueError("no pre-training data: set train_data to LMDB folders/roots or image folders")
        # py-lmdb hands a re-opened path the closed handle of an earlier `with`: keep one open handle per LMDB.
        self._envs: dict[int, Any] = {}
        self._pid = os.getpid()
        self.sources: list[tuple[str, Path]] = []  # ("lmdb"|"file", folder or file)
        self.records: list[tuple[int, int | None]] = []  # (source id, 1-based LMDB index or None for files)
        self.skips = SkipCounter()
        for path in paths:
            self._add(Path(path), image_check)
            if max_samples is not None and len(self.records) >= max_samples:
                break
        if max_samples is not None:
            self.records = self.records[:max_samples]
        self.skips.log("pre-training data")
        if not self.records:
            raise ValueError(f"no usable image in {list(map(str, paths))} ({self.skips.report()})")

    def _add(self, path: Path, image_check: str) -> None:
        if not path.exists():
            raise FileNotFoundError(f"pre-training data {path} does not exist")
        if path.is_dir() and not lmdb_folders(path):  # an image folder (unfinished LMDB writes do not count)
            files = sorted(
                p for p in path.rglob("*")
                if p.suffix.lower() in IMAGE_SUFFIXES and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not files:
                raise FileNotFoundError(
                    f"{path} holds neither an LMDB (data.mdb) nor images ({', '.join(IMAGE_SUFFIXES)})"
                )
            for file in files:
                self.sources.append(("file", file))
                self.records.append((len(self.sources) - 1, None))
            return
        for name, folder in find_lmdbs(path):
            self.sources.append(("lmdb", folder))
            source_id = len(self.sources) - 1
            with self._env(source_id).begin() as txn:
                for index in range(1, read_num_samples(txn, folder) + 1):
                    self.skips.seen += 1
                    data = txn.get(f"image-{index:09d}".encode())
                    reason = "missing_image" if data is None else check_image(data, image_check, 2, 25.0)
                    if reason is not None:
                        self.skips.add(reason, f"{name}:{index}")
                        continue
                    self.records.append((source_id, index))

    def __len__(self) -> int:
        return len(self.records)

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
        source_id, index = self.records[item]
        kind, location = self.sources[source_id]
        if kind == "file":
            try:
                image = load_rgb_image(location)
            except Exception as error:
                raise ValueError(f"{location} does not decode ({error}); remove or fix the file") from error
            return {"image": image, "index": item}
        with self._env(source_id).begin() as txn:
            data = txn.get(f"image-{index:09d}".encode())
        try:
            image = load_rgb_image(data)
        except Exception as error:
            raise ValueError(
                f"{location}: image-{index:09d} does not decode ({error}); use image_check='full' to skip such records"
            ) from error
        return {"image": image, "index": item}


def build_collator(config: DiGPreTrainingConfig, recipe: PretrainRecipe) -> DiGPretrainingCollator:
    views = DiGPretrainingViews(
        config.encoder.image_size,
        recipe.min_augmentations,
        recipe.max_augmentations,
        mean=config.image_mean,
        std=config.image_std,
    )
    return DiGPretrainingCollator(
        views, DiGMaskGenerator(config.encoder.grid_size, config.mask_ratio), seed=recipe.seed
    )


# ----------------------------------------------------------------------------------------------------------------
# Model, optimiser, schedules
# ----------------------------------------------------------------------------------------------------------------


def build_pretraining_config(recipe: PretrainRecipe) -> DiGPreTrainingConfig:
    from .models import check_config_keys

    check_config_keys(DiGPreTrainingConfig, dict(recipe.model_config), "model_config")
    return DiGPreTrainingConfig.from_preset(recipe.model_preset, **dict(recipe.model_config))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """The original's rule: no weight decay on 1-D parameters and biases; momentum copies are not optimised."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def checkpoint_files(num_processes: int) -> list[str]:
    """What a complete checkpoint folder holds (accelerate's model/optimizer/RNG files and our state JSON)."""
    return ["model.safetensors", "optimizer.bin", STATE_FILE, *(f"random_states_{i}.pkl" for i in range(num_processes))]


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    return numbered_folders(folder, CHECKPOINT_PATTERN)


def _accelerate_safe_globals() -> list[Any]:
    from accelerate.utils.other import TORCH_SAFE_GLOBALS

    return list(TORCH_SAFE_GLOBALS)


def check_checkpoint_files(folder: Path, names: Sequence[str]) -> None:
    """Refuse a checkpoint that carries a pickle accelerate would load without restrictions
    (`custom_checkpoint_*.pkl`), or whose listed files `torch.load(weights_only=True)` refuses."""
    for custom in sorted(folder.glob("custom_checkpoint_*.pkl")):
        raise ValueError(
            f"{custom}: refusing to resume from a checkpoint with accelerate custom-object pickles (they are loaded "
            f"with weights_only=False, i.e. they can run code); this version keeps that state in {STATE_FILE}. "
            "Delete the folder or set resume=false."
        )
    for name in names:
        file = folder / name
        try:
            with torch.serialization.safe_globals(_accelerate_safe_globals()):
                torch.load(file, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
            raise ValueError(
                f"{file}: refused by torch.load(weights_only=True) ({weights_only_failure(error)}); not resuming "
                "from a checkpoint that needs arbitrary unpickling"
            ) from error


def read_training_state(folder: Path) -> dict[str, Any]:
    path = folder / STATE_FILE
    try:
        state = json.loads(path.read_text())
        int(state["step"]), dict(state["scheduler"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a valid pre-training state file ({error})") from error
    return state


def _first_unsafe_file(folder: Path) -> Path | None:
    """The first pickle file of `folder` that `torch.load(weights_only=True)` refuses (for error messages)."""
    for file in sorted(folder.iterdir()):
        if file.suffix in (".bin", ".pkl", ".pt"):
            try:
                check_checkpoint_files(folder, [file.name])
            except ValueError:
                return file
    return None


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


# ----------------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------------


def run_pretraining(recipe: PretrainRecipe, dataset: torch.utils.data.Dataset | None = None) -> PretrainResult:
    """Pre-train (or resume pre-training) DiG as the recipe says; returns what happened.

    `dataset` (items `{"image", "index"}`) overrides `recipe.train_data` (tests, benchmarks).
    """
    output_dir = Path(recipe.output_dir)
    accelerator = Accelerator(
        cpu=recipe.cpu,
        mixed_precision=recipe.mixed_precision,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=recipe.seed),
    )
    set_seed(recipe.seed)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "recipe.json").write_text(json.dumps(asdict(recipe), indent=2, default=str))

    config = build_pretraining_config(recipe)
    if recipe.init_from:
        model = DiGForPreTraining.from_pretrained(recipe.init_from)
        config = model.config
    else:
        model = DiGForPreTraining(config)
    if accelerator.num_processes > 1:
        model.convert_sync_batchnorm(accelerator.device.type)

    if dataset is None:
        dataset = PretrainImageDataset(recipe.train_data, recipe.image_check, recipe.max_train_samples)
    collator = build_collator(config, recipe)
    generator = torch.Generator().manual_seed(recipe.seed)
    dataloader = torch.utils.data.DataLoader(
        dataset,
        batch_size=recipe.batch_size,
        sampler=torch.utils.data.RandomSampler(dataset, generator=generator),
        collate_fn=collator,
        num_workers=recipe.num_workers,
        drop_last=True,
    )
    total_batch = recipe.batch_size * accelerator.num_processes * recipe.gradient_accumulation_steps
    peak_lr = recipe.base_lr * total_batch / recipe.lr_reference_batch
    optimizer = torch.optim.AdamW(
        param_groups(model, recipe.weight_decay), lr=peak_lr, betas=tuple(recipe.adam_betas), eps=recipe.adam_eps
    )
    model, optimizer, dataloader = accelerator.prepare(model, optimizer, dataloader)
    steps_per_epoch = len(dataloader) // recipe.gradient_accumulation_steps
    if steps_per_epoch == 0:
        raise ValueError(
            f"{len(dataset)} images give no full batch of {recipe.batch_size} x {accelerator.num_processes} processes "
            f"x {recipe.gradient_accumulation_steps} accumulation steps; lower batch_size or add data"
        )
    total_steps = recipe.max_steps if recipe.max_steps is not None else recipe.epochs * steps_per_epoch
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, min(recipe.warmup_steps, total_steps), total_steps, min_lr=recipe.min_lr
    )
    # The scheduler is not registered with accelerate (that would pickle it into custom_checkpoint_0.pkl, which
    # accelerate unpickles without restrictions): its state goes into STATE_FILE as JSON.
    unwrapped: DiGForPreTraining = accelerator.unwrap_model(model)
    base_momentum = unwrapped.config.momentum
    if accelerator.is_main_process:
        logger.info(
            "pre-training %s: %d images, global batch %d, peak lr %.3g, %d steps (%d per epoch), %d processes",
            recipe.model_preset,
            len(dataset),
            total_batch,
            peak_lr,
            total_steps,
            steps_per_epoch,
            accelerator.num_processes,
        )

    checkpoint_dir = output_dir / "checkpoints"
    start_step = 0
    required = checkpoint_files(accelerator.num_processes)
    latest = newest_complete_checkpoint(checkpoint_dir, required, CHECKPOINT_PATTERN) if recipe.resume else None
    if latest is not None:
        state = read_training_state(latest)
        check_checkpoint_files(latest, [f"random_states_{accelerator.process_index}.pkl"])
        try:
            accelerator.load_state(str(latest))  # model: safetensors; optimizer, RNG: torch.load(weights_only=True)
        except (pickle.UnpicklingError, RuntimeError) as error:
            unsafe = _first_unsafe_file(latest)
            raise ValueError(f"{unsafe or latest}: cannot resume from this checkpoint ({error})") from error
        scheduler.load_state_dict(state["scheduler"])
        start_step = int(state["step"])
        logger.info("resumed from %s (step %d)", latest, start_step)

    # A fixed batch for the reconstruction pictures (first images, epoch-0 masks).
    visual_batch = collator([dataset[i] for i in range(min(recipe.num_visualize, len(dataset)))])
    pictures: list[str] = []
    history: list[dict[str, float]] = []
    log_path = output_dir / "log.jsonl"
    global_step = start_step
    progress = tqdm(
        total=total_steps,
        initial=start_step,
        desc="pre-training",
        disable=not (recipe.progress_bar and accelerator.is_local_main_process),
    )

    def save_checkpoint() -> None:
        """Written under a temporary name, fsynced, then renamed: a kill -9 never leaves a half-written step_N."""
        final = checkpoint_dir / f"step_{global_step:08d}"
        temporary = temporary_sibling(final)
        if accelerator.is_main_process and temporary.exists():  # left by a killed run
            shutil.rmtree(temporary)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(temporary))
        if accelerator.is_main_process:
            next_momentum = (
                momentum_schedule(global_step, total_steps, base_momentum) if recipe.momentum_cosine else base_momentum
            )  # a function of the step, stored for inspection
            state = {"step": global_step, "scheduler": scheduler.state_dict(), "momentum": next_momentum}
            (temporary / STATE_FILE).write_text(json.dumps(state, indent=1))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            publish_folder(temporary, final)
            if recipe.save_total_limit:
                for _, old in _checkpoints(checkpoint_dir)[: -recipe.save_total_limit]:
                    shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

    def save_picture() -> None:
        if not accelerator.is_main_process:
            return
        was_training = unwrapped.training
        unwrapped.eval()
        batch = {k: v.to(accelerator.device) for k, v in visual_batch.items()}
        folder = output_dir / "reconstructions"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step_{global_step:08d}.png"
        reconstruction_picture(unwrapped, batch).save(path)
        pictures.append(str(path))
        unwrapped.train(was_training)

    model.train()
    loop_start = time.perf_counter()
    epoch = start_step // steps_per_epoch
    while global_step < total_steps:
        collator.set_epoch(epoch)
        dataloader.set_epoch(epoch)
        skip = (global_step - epoch * steps_per_epoch) * recipe.gradient_accumulation_steps
        epoch_loader = accelerator.skip_first_batches(dataloader, skip) if skip > 0 else dataloader
        micro_step = 0
        sums: dict[str, float] = {}
        for batch in epoch_loader:
            with accelerator.accumulate(model):
                # One EMA update per optimiser step: online weights do not change between micro-batches.
                first_micro_batch = micro_step % recipe.gradient_accumulation_steps == 0
                if first_micro_batch and recipe.momentum_cosine:
                    momentum = momentum_schedule(global_step, total_steps, base_momentum)
                elif first_micro_batch:
                    momentum = base_momentum
                else:
                    momentum = 1.0
                output = model(**batch, momentum=momentum)
                loss = output.loss
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss.item()} at step {global_step}: lower the lr or use fp32")
                accelerator.backward(loss)
                if accelerator.sync_gradients and recipe.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), recipe.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            micro_step += 1
            parts = torch.stack(
                [
                    output.loss.detach(),
                    output.mim_loss.detach(),
                    output.contrastive_loss.detach(),
                    output.contrastive_accuracy.detach(),
                ]
            )
            parts = accelerator.gather(parts.unsqueeze(0)).mean(0)
            for key, value in zip(("loss", "mim_loss", "contrastive_loss", "contrastive_accuracy"), parts.tolist()):
                sums[key] = sums.get(key, 0.0) + value / recipe.gradient_accumulation_steps
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            global_step += 1
            record = {
                "step": global_step,
                "epoch": epoch,
                "lr": scheduler.get_last_lr()[0],
                "momentum": momentum,
                "seconds": time.perf_counter() - loop_start,
                **sums,
            }
            sums = {}
            history.append(record)
            progress.update(1)
            progress.set_postfix(loss=f"{record['loss']:.4f}")
            if accelerator.is_main_process and (global_step % recipe.logging_steps == 0 or global_step == total_steps):
                logger.info("step %d: %s", global_step, {k: round(v, 5) for k, v in record.items() if k != "step"})
                with log_path.open("a") as handle:
                    handle.write(json.dumps(record) + "\n")
            if global_step % recipe.eval_steps == 0 or global_step == total_steps:
                save_picture()
            if global_step % recipe.save_steps == 0 or global_step == total_steps:
                save_checkpoint()
            if global_step >= total_steps:
                break
        epoch += 1
    progress.close()

    final_dir = None
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final_dir = str(output_dir / "final")
        unwrapped.save_pretrained(final_dir)
    accelerator.end_training()
    return PretrainResult(global_step, total_steps, start_step, history, final_dir, pictures)


__all__ = [
    "PretrainImageDataset",
    "PretrainRecipe",
    "PretrainResult",
    "build_collator",
    "build_pretraining_config",
    "param_groups",
    "reconstruction_picture",
    "run_pretraining",
]
