"""DiG pre-training on the Trainer: it learns, sets the momentum per optimiser step, checkpoints and resumes
exactly (also under accumulation), never unpickles code, and agrees across processes."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from modeling_dig.configuration_dig_pretraining import DiGPreTrainingConfig
from modeling_dig.modeling_dig_pretraining import DiGForPreTraining, momentum_schedule
from scene_text_training.optim import build_optimizer, scaled_learning_rate
from scene_text_training.pretrain import PretrainImageDataset, build_collator, build_pretraining_config, run_pretraining
from scene_text_training.recipes import Recipe, RecipeError, load_recipe

REPO_ROOT = Path(__file__).resolve().parents[1]


class WordImages(torch.utils.data.Dataset):
    """Tiny deterministic black-on-grey "words" (no fonts needed)."""

    def __init__(self, count: int = 16, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.images = []
        for _ in range(count):
            image = Image.new("RGB", (100, 32), tuple(int(v) for v in rng.integers(150, 255, 3)))
            draw = ImageDraw.Draw(image)
            for _ in range(int(rng.integers(3, 7))):  # letter-like strokes
                x, y = int(rng.integers(5, 90)), int(rng.integers(4, 20))
                draw.rectangle((x, y, x + int(rng.integers(2, 8)), y + int(rng.integers(4, 10))), fill=(0, 0, 0))
            self.images.append(image)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "index": index}


def _recipe(output_dir: Path, *overrides: str) -> Recipe:
    """A tiny CPU pre-training recipe (the shipped schema), `overrides` as on the command line."""
    settings = [
        "model.type=dig_pretraining",
        "model.preset=tiny-test",
        f"train.output_dir={output_dir}",
        "train.per_device_train_batch_size=4",
        "train.max_steps=6",
        "train.save_steps=3",
        "train.eval_steps=100",
        "train.logging_steps=1",
        "train.use_cpu=true",
        "train.disable_tqdm=true",
        "train.report_to=[]",
        "train.seed=1",
        "optim.base_lr=0.1",
        "optim.warmup_steps=0",
        "optim.warmup_epochs=0",
        "optim.no_decay_keywords=[]",
        "pretrain.num_visualize=2",
    ]
    return load_recipe(None, [*settings, *overrides])


def test_a_few_steps_reduce_the_loss(tmp_path):
    recipe = _recipe(tmp_path, "train.max_steps=8", "train.save_steps=100", "train.eval_steps=8")
    result = run_pretraining(recipe, dataset=WordImages(8))
    history = result.history
    losses = [record["loss"] for record in history]
    assert len(losses) == 8 and result.global_step == 8
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses
    # Schedules: lr = base_lr x 4 / 256 at step 1 (no warm-up), momentum cosine from 0.99 to 1.
    assert history[0]["learning_rate"] == pytest.approx(0.1 * 4 / 256)
    assert history[0]["momentum"] == pytest.approx(0.99)
    assert history[-1]["momentum"] == pytest.approx(momentum_schedule(7, 8, 0.99))
    assert all(0 <= r["contrastive_accuracy"] <= 100 and r["mim_loss"] > 0 for r in history)
    assert (tmp_path / "final" / "model.safetensors").is_file()
    assert [Path(p).name for p in result.reconstruction_images] == ["step_00000008.png"]
    picture = Image.open(result.reconstruction_images[0])
    assert picture.size == (256, 2 * (2 * 3 * 32 + 2 * 2))  # 2 samples x (masked, reconstruction, original), x2
    assert load_recipe(tmp_path / "recipe.yaml") == recipe  # the resolved recipe, readable by load_recipe
    assert json.loads((tmp_path / "trainer_state.json").read_text())["log_history"][0]["mim_loss"] > 0


def _final_weights(result) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(result.final_model_dir / "model.safetensors")


def _assert_same_run(expected, actual) -> None:
    """Same steps, lr, momentum and losses (the resumed log history continues the checkpoint's), and the same final
    weights (momentum branch included)."""
    assert [r["step"] for r in actual.history] == [r["step"] for r in expected.history]
    for want, got in zip(expected.history, actual.history):
        assert got["epoch"] == pytest.approx(want["epoch"])
        assert got["learning_rate"] == pytest.approx(want["learning_rate"], rel=1e-12)
        assert got["momentum"] == pytest.approx(want["momentum"], rel=1e-12)
        for key in ("loss", "mim_loss", "contrastive_loss"):
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), key
    want, got = _final_weights(expected), _final_weights(actual)
    assert want.keys() == got.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6, msg=name)


def _copy_checkpoint(source: Path, output_dir: Path, step: int) -> Path:
    target = output_dir / f"checkpoint-{step}"
    shutil.copytree(source / f"checkpoint-{step}", target)
    return target


def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    dataset = WordImages(8)  # 2 batches per epoch: the resumed steps cross an epoch boundary
    settings = ("train.max_steps=4", "train.save_steps=2")
    straight = run_pretraining(_recipe(tmp_path / "straight", *settings), dataset=dataset)
    assert sorted(p.name for p in (tmp_path / "straight").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    # A run killed after step 3 would have left only checkpoint-2 behind.
    _copy_checkpoint(tmp_path / "straight", tmp_path / "resumed", 2)
    resumed = run_pretraining(_recipe(tmp_path / "resumed", *settings), dataset=dataset)
    assert resumed.resumed_from.endswith("checkpoint-2") and resumed.global_step == 4
    assert [Path(p).name for p in resumed.reconstruction_images] == ["step_00000004.png"]  # only steps 3-4 ran
    _assert_same_run(straight, resumed)


def test_resume_under_accumulation_mid_epoch(tmp_path):
    dataset = WordImages(16)  # 8 micro-batches of 2, 4 optimiser steps per epoch
    settings = ("train.max_steps=3", "train.save_steps=1", "train.gradient_accumulation_steps=2",
                "train.per_device_train_batch_size=2", "train.dataloader_num_workers=1")
    straight = run_pretraining(_recipe(tmp_path / "straight", *settings), dataset=dataset)
    _copy_checkpoint(tmp_path / "straight", tmp_path / "resumed", 1)  # resume mid-epoch 0
    resumed = run_pretraining(_recipe(tmp_path / "resumed", *settings), dataset=dataset)
    assert resumed.resumed_from.endswith("checkpoint-1") and resumed.global_step == 3
    _assert_same_run(straight, resumed)


def test_resume_skips_an_incomplete_checkpoint_and_says_why(tmp_path, caplog):
    dataset = WordImages(8)
    settings = ("train.max_steps=4", "train.save_steps=2")
    straight = run_pretraining(_recipe(tmp_path / "straight", *settings), dataset=dataset)
    _copy_checkpoint(tmp_path / "straight", tmp_path / "killed", 2)
    newest = _copy_checkpoint(tmp_path / "straight", tmp_path / "killed", 4)
    (newest / "trainer_state.json").write_text('{"global_st')  # kill -9 in the middle of the save
    caplog.set_level("WARNING", logger="scene_text_training.checkpoints")
    resumed = run_pretraining(_recipe(tmp_path / "killed", *settings), dataset=dataset)
    assert resumed.resumed_from.endswith("checkpoint-2")
    assert "checkpoint-4" in caplog.text and "trainer_state.json does not parse" in caplog.text
    _assert_same_run(straight, resumed)


@pytest.mark.parametrize(
    ("accumulation", "cosine"), [(1, True), (2, True), (3, False)], ids=["cosine", "accumulated", "constant"]
)
def test_one_momentum_update_per_optimiser_step(tmp_path, monkeypatch, accumulation, cosine):
    """The schedule's momentum at step s goes into the first micro-batch of step s; later micro-batches of the same
    step pass 1.0 (no EMA update), so accumulation changes neither the number nor the size of the updates."""
    seen: list[float] = []
    original = DiGForPreTraining.update_momentum_branch

    def spy(self, momentum):
        seen.append(momentum)
        return original(self, momentum)

    monkeypatch.setattr(DiGForPreTraining, "update_momentum_branch", spy)
    steps = 3
    run_pretraining(
        _recipe(tmp_path, f"train.max_steps={steps}", "train.save_steps=100", "train.per_device_train_batch_size=2",
                f"train.gradient_accumulation_steps={accumulation}", f"pretrain.momentum_cosine={str(cosine).lower()}"),
        dataset=WordImages(12),
    )
    expected = []
    for step in range(steps):
        expected += [momentum_schedule(step, steps, 0.99) if cosine else 0.99] + [1.0] * (accumulation - 1)
    assert seen == pytest.approx(expected, rel=1e-12)


class _SystemPayload:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng_state.pth"])
def test_resume_never_runs_code_from_a_crafted_checkpoint(tmp_path, name):
    run_pretraining(_recipe(tmp_path / "good", "train.max_steps=2", "train.save_steps=2"), dataset=WordImages(8))
    checkpoint = _copy_checkpoint(tmp_path / "good", tmp_path / "evil", 2)
    marker = tmp_path / "pwned"
    torch.save({"state": _SystemPayload(marker)}, checkpoint / name)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        run_pretraining(_recipe(tmp_path / "evil", "train.max_steps=4", "train.save_steps=2"), dataset=WordImages(8))
    assert not marker.exists()


def test_pretraining_refuses_settings_it_would_ignore(tmp_path):
    with pytest.raises(RecipeError, match="model.type"):
        run_pretraining(_recipe(tmp_path, "model.type=dig"), dataset=WordImages(8))
    with pytest.raises(RecipeError, match="data.augment"):
        run_pretraining(_recipe(tmp_path, "data.augment=dig"), dataset=WordImages(8))
    with pytest.raises(ValueError, match="no full optimiser step"):
        run_pretraining(_recipe(tmp_path, "train.per_device_train_batch_size=16"), dataset=WordImages(8))


def test_image_folder_and_unlabeled_lmdb(tmp_path):
    import lmdb

    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(WordImages(3).images):
        image.save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    lmdb_dir = tmp_path / "unlabeled"
    env = lmdb.open(str(lmdb_dir), map_size=1 << 22)
    with env.begin(write=True) as txn:
        for i, image in enumerate(WordImages(2).images, start=1):
            path = tmp_path / f"tmp{i}.png"
            image.save(path)
            txn.put(f"image-{i:09d}".encode(), path.read_bytes())
        txn.put(b"image-000000003", b"definitely not a png")  # counted and skipped, never returned
        txn.put(b"num-samples", b"3")
    env.close()
    dataset = PretrainImageDataset([folder, lmdb_dir])
    assert len(dataset) == 6  # lazy: nothing is read at start-up
    assert dataset[4]["index"] == 4 and dataset[4]["image"].size == (100, 32)
    assert dataset[5] == {"skip_reason": "corrupt_image", "key": "unlabeled:3"}  # marked when read, never replaced
    batch = build_collator(DiGPreTrainingConfig.from_preset("tiny-test"), Recipe())([dataset[i] for i in range(6)])
    assert batch["pixel_values"].shape[0] == 5 and batch["skipped_records"] == [("corrupt_image", "unlabeled:3")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither an LMDB"):
        PretrainImageDataset([tmp_path / "empty"])


def test_recipes_load_with_the_seed_hyper_parameters(tmp_path):
    recipe = load_recipe(REPO_ROOT / "configs" / "dig_small_pretrain.yaml")
    assert (recipe.model.type, recipe.model.preset) == ("dig_pretraining", "vit-small")
    o, t = recipe.optim, recipe.train
    assert (o.base_lr, o.lr_reference_batch, o.min_lr, o.warmup_steps, o.scheduler) == (1.5e-4, 256, 1e-5, 5000, "cosine")
    assert (o.weight_decay, o.no_decay_keywords, o.betas, o.eps, o.max_grad_norm) == (0.1, [], [0.9, 0.999], 1e-8, None)
    assert (t.per_device_train_batch_size, t.gradient_accumulation_steps, t.num_train_epochs, t.max_steps) == (
        128, 1, 10.0, -1)
    assert (t.mixed_precision, t.save_steps, t.eval_steps, t.logging_steps, t.save_total_limit) == (
        "fp16", 5000, 5000, 100, 2)
    p = recipe.pretrain
    assert (p.momentum_cosine, p.min_augmentations, p.max_augmentations, p.num_visualize) == (True, 2, 5, 8)
    assert scaled_learning_rate(o, 8 * 128) == pytest.approx(6e-4)  # the seed's 8 GPUs x 128
    config = build_pretraining_config(recipe)
    assert (config.mask_ratio, config.num_windows, config.moco_dim, config.moco_mlp_dim, config.temperature) == (
        0.7,
        4,
        256,
        4096,
        0.2,
    )
    assert (config.momentum, config.loss_weight_pixel, config.loss_weight_contrast) == (0.99, 1.0, 0.1)
    assert config.encoder.hidden_size == 384 and not config.encoder.use_final_norm
    quick = load_recipe(REPO_ROOT / "configs" / "quickstart_dig_pretrain.yaml", ["train.max_steps=5"])
    assert quick.train.max_steps == 5 and quick.model.preset == "reduced" and quick.optim.base_lr == 8e-3
    (tmp_path / "typo.yaml").write_text("pretrain:\n  num_visualise: 4\n")
    with pytest.raises(RecipeError, match="num_visualise"):
        load_recipe(tmp_path / "typo.yaml")


def test_the_shared_optimiser_keeps_the_pretraining_rule():
    """AdamW groups of optim.build_optimizer with the config's empty no_decay_keywords: weight decay 0.1 on every
    parameter with >= 2 dims, none on 1-D ones (norms, biases, tokens), momentum copies left out."""
    recipe = load_recipe(REPO_ROOT / "configs" / "dig_small_pretrain.yaml", ["model.preset=tiny-test"])
    model = DiGForPreTraining(build_pretraining_config(recipe))
    optimizer = build_optimizer(model, recipe.optim, 6e-4)
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            assert id(param) not in decay and name.startswith("momentum_"), name
        else:
            assert decay[id(param)] == (0.1 if param.ndim >= 2 else 0.0), name
    assert {g["lr"] for g in optimizer.param_groups} == {6e-4}
    assert optimizer.defaults["betas"] == (0.9, 0.999)


_DDP_SCRIPT = """
import json, sys
import torch
sys.path.insert(0, {root!r})
sys.path.insert(0, {tests!r})
from accelerate import PartialState
from test_pretrain_loop import WordImages, _recipe
from scene_text_training.pretrain import run_pretraining
state = PartialState(cpu=True)
assert state.num_processes == {processes}, state
recipe = _recipe({out!r}, "train.per_device_train_batch_size={batch}", "train.max_steps=3", "train.save_steps=100")
result = run_pretraining(recipe, dataset=WordImages(16))
if state.is_main_process:
    json.dump([r["loss"] for r in result.history], open({out!r} + "/losses.json", "w"))
"""


@pytest.mark.slow
def test_two_processes_match_one_process_on_the_same_global_batch(tmp_path):
    """SyncBatchNorm + all-gathered keys with rank-offset labels: 2 x 4 images == 1 x 8 images."""
    losses = {}
    for processes, batch in ((1, 8), (2, 4)):
        out = tmp_path / f"p{processes}"
        out.mkdir()
        script = tmp_path / f"run_{processes}.py"
        script.write_text(
            textwrap.dedent(
                _DDP_SCRIPT.format(
                    root=str(REPO_ROOT), tests=str(REPO_ROOT / "tests"), out=str(out), batch=batch, processes=processes
                )
            )
        )
        # `--cpu` would make accelerate's launcher run ONE process; the multi-process launcher with a CPU-only
        # Accelerator (train.use_cpu) gives DistributedType.MULTI_CPU over gloo.
        command = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            str(processes),
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            str(script),
        ]
        if processes == 1:
            command = [sys.executable, str(script)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
        completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert completed.returncode == 0, completed.stderr[-3000:]
        losses[processes] = json.loads((out / "losses.json").read_text())
    np.testing.assert_allclose(losses[2], losses[1], rtol=1e-4, atol=1e-5)
