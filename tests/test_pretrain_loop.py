"""The DiG pre-training loop: it learns, it checkpoints and resumes exactly, it agrees across processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from scene_text_training.pretrain import (
    PretrainImageDataset,
    PretrainRecipe,
    build_pretraining_config,
    run_pretraining,
)
from scene_text_training.recipes import load_recipe

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


def _recipe(output_dir: Path, **overrides) -> PretrainRecipe:
    settings = {
        "output_dir": str(output_dir),
        "model_preset": "tiny-test",
        "batch_size": 4,
        "max_steps": 6,
        "base_lr": 0.1,
        "warmup_steps": 0,
        "num_workers": 0,
        "save_steps": 3,
        "eval_steps": 100,
        "logging_steps": 1,
        "cpu": True,
        "progress_bar": False,
        "num_visualize": 2,
        "seed": 1,
    }
    settings.update(overrides)
    return PretrainRecipe(**settings)


def test_a_few_steps_reduce_the_loss(tmp_path):
    result = run_pretraining(_recipe(tmp_path, max_steps=8, save_steps=100, eval_steps=8), dataset=WordImages(8))
    losses = [record["loss"] for record in result.history]
    assert len(losses) == 8 and result.global_step == 8
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses
    # Schedules: lr = base_lr x 4 / 256 at step 1 (no warm-up), momentum cosine from 0.99 to 1.
    assert result.history[0]["lr"] <= 0.1 * 4 / 256 + 1e-12
    assert result.history[0]["momentum"] == pytest.approx(0.99)
    assert result.history[-1]["momentum"] > result.history[0]["momentum"]
    assert (tmp_path / "final" / "model.safetensors").is_file()
    assert [Path(p).name for p in result.reconstruction_images] == ["step_00000008.png"]
    picture = Image.open(result.reconstruction_images[0])
    assert picture.size == (256, 2 * (2 * 3 * 32 + 2 * 2))  # 2 samples x (masked, reconstruction, original), x2
    assert len((tmp_path / "log.jsonl").read_text().splitlines()) == 8


def test_resume_continues_at_the_right_step_with_the_same_data(tmp_path):
    dataset = WordImages(8)  # 2 batches per epoch: the resumed steps cross an epoch boundary
    straight = run_pretraining(_recipe(tmp_path / "straight", max_steps=4, save_steps=2), dataset=dataset)
    # A run that crashed after step 3 would have left only the step-2 checkpoint behind.
    resumed_dir = tmp_path / "resumed" / "checkpoints"
    resumed_dir.mkdir(parents=True)
    shutil.copytree(tmp_path / "straight" / "checkpoints" / "step_00000002", resumed_dir / "step_00000002")
    resumed = run_pretraining(_recipe(tmp_path / "resumed", max_steps=4, save_steps=2), dataset=dataset)
    assert resumed.resumed_from_step == 2 and resumed.global_step == 4
    assert [r["step"] for r in resumed.history] == [3, 4]
    for expected, actual in zip(straight.history[2:], resumed.history):
        assert actual["epoch"] == expected["epoch"] == 1
        assert actual["lr"] == pytest.approx(expected["lr"], rel=1e-12)
        assert actual["momentum"] == pytest.approx(expected["momentum"], rel=1e-12)
        assert actual["loss"] == pytest.approx(expected["loss"], rel=1e-5, abs=1e-6)


def _copy_checkpoint(source: Path, output_dir: Path, name: str) -> Path:
    target = output_dir / "checkpoints" / name
    shutil.copytree(source / "checkpoints" / name, target)
    return target


def test_checkpoints_hold_json_state_and_no_custom_pickle(tmp_path):
    run_pretraining(_recipe(tmp_path, max_steps=2, save_steps=2), dataset=WordImages(8))
    checkpoint = tmp_path / "checkpoints" / "step_00000002"
    assert not list(checkpoint.glob("custom_checkpoint_*"))
    state = json.loads((checkpoint / "pretrain_state.json").read_text())
    assert state["step"] == 2 and state["scheduler"]["last_epoch"] == 2
    assert 0.99 < state["momentum"] <= 1.0


def test_resume_skips_an_incomplete_checkpoint_and_says_why(tmp_path, caplog):
    dataset = WordImages(8)
    straight = run_pretraining(_recipe(tmp_path / "straight", max_steps=4, save_steps=2), dataset=dataset)
    _copy_checkpoint(tmp_path / "straight", tmp_path / "killed", "step_00000002")
    newest = _copy_checkpoint(tmp_path / "straight", tmp_path / "killed", "step_00000004")
    (newest / "optimizer.bin").write_bytes(b"")  # kill -9 in the middle of the save (older, non-atomic writers)
    caplog.set_level("WARNING", logger="scene_text_training.checkpoints")
    resumed = run_pretraining(_recipe(tmp_path / "killed", max_steps=4, save_steps=2), dataset=dataset)
    assert resumed.resumed_from_step == 2 and [r["step"] for r in resumed.history] == [3, 4]
    assert "step_00000004" in caplog.text and "optimizer.bin is empty" in caplog.text
    for expected, actual in zip(straight.history[2:], resumed.history):
        assert actual["loss"] == pytest.approx(expected["loss"], rel=1e-5, abs=1e-6)


def test_a_checkpoint_becomes_visible_only_when_complete(tmp_path, monkeypatch):
    from scene_text_training import checkpoints, pretrain

    def killed_before_rename(temporary, final):
        if Path(final).name == "step_00000004":
            raise KeyboardInterrupt  # the process dies after writing, before publishing
        return checkpoints.publish_folder(temporary, final)

    monkeypatch.setattr(pretrain, "publish_folder", killed_before_rename)
    with pytest.raises(KeyboardInterrupt):
        run_pretraining(_recipe(tmp_path, max_steps=6, save_steps=2), dataset=WordImages(8))
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == [".incomplete-step_00000004", "step_00000002"]
    monkeypatch.undo()
    resumed = run_pretraining(_recipe(tmp_path, max_steps=6, save_steps=2), dataset=WordImages(8))
    assert resumed.resumed_from_step == 2 and resumed.global_step == 6
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000004", "step_00000006"]


class _SystemPayload:
    """Unpickling this runs a shell command that creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("name", ["custom_checkpoint_0.pkl", "optimizer.bin", "random_states_0.pkl"])
def test_resume_never_runs_code_from_a_crafted_checkpoint(tmp_path, name):
    run_pretraining(_recipe(tmp_path / "good", max_steps=2, save_steps=2), dataset=WordImages(8))
    checkpoint = _copy_checkpoint(tmp_path / "good", tmp_path / "evil", "step_00000002")
    marker = tmp_path / "pwned"
    torch.save({"state": _SystemPayload(marker)}, checkpoint / name)
    with pytest.raises(ValueError, match=name):
        run_pretraining(_recipe(tmp_path / "evil", max_steps=4, save_steps=2), dataset=WordImages(8))
    assert not marker.exists()


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
    assert len(dataset) == 5 and dataset.skips.total == 1
    assert dataset[4]["index"] == 4 and dataset[4]["image"].size == (100, 32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither an LMDB"):
        PretrainImageDataset([tmp_path / "empty"])


def test_recipes_load_with_the_seed_hyper_parameters(tmp_path):
    recipe = load_recipe(REPO_ROOT / "configs" / "dig_small_pretrain.yaml", cls=PretrainRecipe)
    assert (recipe.batch_size, recipe.epochs, recipe.warmup_steps, recipe.base_lr, recipe.min_lr) == (
        128,
        10,
        5000,
        1.5e-4,
        1e-5,
    )
    assert (recipe.weight_decay, recipe.adam_betas, recipe.momentum_cosine) == (0.1, (0.9, 0.999), True)
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
    quick = load_recipe(REPO_ROOT / "configs" / "quickstart_dig_pretrain.yaml", ["max_steps=5"], cls=PretrainRecipe)
    assert quick.max_steps == 5 and quick.model_preset == "reduced"
    (tmp_path / "typo.yaml").write_text("batch_sise: 4\n")
    with pytest.raises(Exception, match="batch_sise"):
        load_recipe(tmp_path / "typo.yaml", cls=PretrainRecipe)


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
result = run_pretraining(_recipe({out!r}, batch_size={batch}, max_steps=3, save_steps=100), dataset=WordImages(16))
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
        # Accelerator (recipe.cpu) gives DistributedType.MULTI_CPU over gloo.
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
