"""CLIP4STR + Adapter through train_ocr: its recipes build, `finetune` trains only the adapter and the decoder with
the model's own optimizer groups and saves a folder that `evaluate` and `read` load with the installed classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import train_ocr
from scene_text_training.collators import SceneTextCollator
from scene_text_training.models import build_config, build_model, load_saved, model_class
from scene_text_training.optim import build_optimizer
from scene_text_training.recipes import ModelRecipe, OptimRecipe, load_recipe

REPO = Path(__file__).resolve().parents[1]
STR_ADAPTER_RECIPES = sorted(
    p for p in (REPO / "configs").glob("*.yaml") if (yaml.safe_load(p.read_text()).get("model") or {}).get("type")
    == "str_adapter"
)
# The full recipe at a few-layer size: 12 blocks (its block_ids reach 11), 64 wide (1/8 pruning keeps 8 = 1 head).
TINY_B16 = ["model.config.embed_dim=32", "model.config.vision_width=64", "model.config.image_size=32",
            "model.config.patch_size=16", "model.config.decoder={num_heads: 4, dropout: 0.1}"]
TINY = ["model.type=str_adapter", "model.config.embed_dim=32", "model.config.vision_width=64",
        "model.config.vision_layers=2", "model.config.image_size=[32,128]", "model.config.patch_size=[32,8]",
        "model.config.adapter_type=ladder_pruning", "model.config.block_ids=[0,1]", "model.config.prune_reduction=2",
        "model.config.perm_num=2", "model.config.decoder={num_heads: 4}", "optim.scheduler=constant",
        "optim.base_lr=1e-3", "optim.lr_reference_batch=4", "train.report_to=[]", "train.disable_tqdm=true",
        "train.per_device_train_batch_size=4", "train.per_device_eval_batch_size=8", "train.logging_steps=1"]


def test_both_shipped_recipes_exist():
    assert {p.name for p in STR_ADAPTER_RECIPES} == {"str_adapter_b_real.yaml", "quickstart_str_adapter.yaml"}


def test_full_recipe_is_the_seed_script():
    recipe = load_recipe(REPO / "configs" / "str_adapter_b_real.yaml")
    config = build_config(recipe.model)
    assert (config.adapter_type, config.block_ids, config.prune_reduction) == ("ladder_pruning", [1, 3, 5, 7, 9, 11], 8)
    assert config.vision_config.hidden_size == 768 and config.vision_config.num_hidden_layers == 12
    assert config.vision_config.image_size == 224 and config.vision_config.patch_size == 16
    assert config.freeze_backbone and config.coef_lr == 19.0 and config.decoder.num_heads == 8
    total_batch = recipe.train.per_device_train_batch_size * 2  # the script's 2 GPUs
    assert total_batch == 1024 and recipe.train.num_train_epochs == 16
    # the original's lr: model.lr 8e-4 x sqrt(2 GPUs) x 512 / 256
    peak = recipe.optim.base_lr * total_batch / recipe.optim.lr_reference_batch
    assert peak == pytest.approx(8e-4 * 2**0.5 * 512 / 256, rel=1e-7)


@pytest.mark.parametrize("path", STR_ADAPTER_RECIPES, ids=lambda p: p.stem)
def test_shipped_recipe_builds_and_trains_one_step(path):
    overrides = TINY_B16 if path.stem == "str_adapter_b_real" else []
    recipe = load_recipe(path, overrides)
    model, processor = build_model(recipe.model)
    assert type(model).__name__ == "STRAdapterForTextRecognition" and type(processor).__name__ == "CLIP4STRProcessor"
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(32, 100, 3), dtype=np.uint8))
    batch = SceneTextCollator(processor)([{"image": image, "label": "ab1"}, {"image": image, "label": "word"}])
    optimizer = build_optimizer(model, recipe.optim, lr=1e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    loss = model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and not any(n.startswith(("vision_model.", "visual_projection.")) for n in changed)
    assert any(n.startswith("adapter.") for n in changed) and any(n.startswith("decoder.") for n in changed)


@pytest.mark.parametrize("adapter_type", ["linear", "ladder_pruning"])
def test_optimizer_holds_exactly_the_models_optimizer_groups(adapter_type):
    recipe = load_recipe(None, [*TINY, f"model.config.adapter_type={adapter_type}"])
    model, _ = build_model(recipe.model)
    optim = OptimRecipe(weight_decay=0.2, decoder_lr_scale=5.0, no_decay_keywords=["bias", "pos_queries"])
    optimizer = build_optimizer(model, optim, lr=1e-3)
    expected = [g for g in model.optimizer_groups(1e-3, 0.2) if g["params"]]
    got = [(g["lr"], g["weight_decay"], [id(p) for p in g["params"]]) for g in optimizer.param_groups]
    assert got == [(g["lr"], g["weight_decay"], [id(p) for p in g["params"]]) for g in expected]
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert in_optimizer == trainable
    clip = {id(p) for n, p in model.named_parameters() if n.startswith(("vision_model.", "visual_projection."))}
    assert clip and not clip & in_optimizer
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    # ladder_pruning's side network trains at the lr ("enc" groups), the rest at lr x coef_lr
    assert lrs["dec_weight_decay"] == pytest.approx(1e-3 * model.config.coef_lr)
    assert ("enc_weight_decay" in lrs) == (adapter_type == "ladder_pruning")


def test_init_from_a_clip_file_builds_the_tower_and_side_network():
    from conftest import fixture_dir

    from modeling_clip4str.str_adapter_conversion import str_adapter_from_clip_file

    path = fixture_dir("str_adapter") / "clip_init.pt"
    settings = {"adapter_type": "ladder_pruning", "block_ids": [0, 1], "prune_reduction": 2}
    reference = str_adapter_from_clip_file(path, **settings)
    dims = {"embed_dim": reference.config.projection_dim, "vision_width": reference.config.vision_config.hidden_size,
            "vision_layers": reference.config.vision_config.num_hidden_layers,
            "patch_size": reference.config.vision_config.patch_size,
            "image_size": reference.config.vision_config.image_size}
    model, _ = build_model(ModelRecipe(type="str_adapter", config={**dims, **settings}, init_from=str(path)))
    ours, theirs = model.state_dict(), reference.state_dict()
    from_clip = [k for k in ours if k.startswith(("vision_model.", "visual_projection.", "adapter.side_blocks."))]
    assert from_clip and all(torch.equal(ours[k], theirs[k]) for k in from_clip)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from processing.synthetic import build_synthetic_benchmark

    root = tmp_path_factory.mktemp("synth")
    build_synthetic_benchmark(root, num_train=16, num_val=8, num_test=8, seed=0, num_workers=0)
    return root


def test_finetune_evaluate_read_through_train_ocr(synth, tmp_path, capsys):
    out = tmp_path / "run"
    code = train_ocr.main(["--log-level", "warning", "finetune", *TINY, f"data.train=[{synth / 'train'}]",
                           f"data.val=[{synth / 'val'}]", f"train.output_dir={out}", "train.max_steps=3",
                           "train.save_steps=3", "train.eval_steps=3"])
    assert code == 0
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    assert any("eval_accuracy" in e for e in state["log_history"])  # validation ran through prediction_step

    model, _, model_type = load_saved(out)  # installed classes, no remote code
    assert model_type == "str_adapter" and type(model) is model_class("str_adapter")
    torch.manual_seed(0)  # the run's seed: the same initial weights
    initial, _ = build_model(load_recipe(out / "recipe.yaml").model)
    saved, fresh = model.state_dict(), initial.state_dict()
    clip = [k for k in saved if k.startswith(("vision_model.", "visual_projection."))]
    assert clip and all(torch.equal(saved[k], fresh[k]) for k in clip)  # frozen
    assert not torch.equal(saved["decoder.head.weight"], fresh["decoder.head.weight"])  # trained

    results = tmp_path / "results.json"
    assert train_ocr.main(["--log-level", "warning", "evaluate", "--model", str(out), "--data", str(synth / "test"),
                           "--output", str(results)]) == 0
    (row,) = json.loads(results.read_text())["benchmarks"].values()
    assert row["num_samples"] == 8 and 0.0 <= row["accuracy"] <= 1.0

    from scene_text_training.data import load_lmdb_split

    images = tmp_path / "images"
    images.mkdir()
    dataset, _ = load_lmdb_split([synth / "test"], max_samples=2)
    for i, item in enumerate(dataset):
        item["image"].save(images / f"{i}.png")
    capsys.readouterr()
    assert train_ocr.main(["--log-level", "warning", "read", "--model", str(out), str(images),
                           "--output", str(tmp_path / "read.json")]) == 0
    assert train_ocr.main(["--log-level", "warning", "read", "--pipeline", "--model", str(out), str(images),
                           "--output", str(tmp_path / "pipe.json")]) == 0
    direct = json.loads((tmp_path / "read.json").read_text())
    piped = json.loads((tmp_path / "pipe.json").read_text())
    assert len(direct) == 2 and [r["text"] for r in piped] == [r["text"] for r in direct]


def test_init_from_a_clip4str_folder_takes_its_trained_image_tower(tmp_path):
    """`model.init_from=<CLIP4STR folder>`: the frozen tower is that model's trained tower (no fp16 rounding), and a
    ladder adapter's side network is built from its blocks, as from a CLIP file."""
    from modeling_clip4str import CLIP4STRForTextRecognition

    dims = {"embed_dim": 32, "vision_width": 64, "vision_layers": 2, "image_size": [32, 128], "patch_size": [32, 8]}
    torch.manual_seed(0)
    clip4str = CLIP4STRForTextRecognition(build_config(ModelRecipe(
        type="clip4str", config={**dims, "text_width": 32, "text_layers": 1, "decoder": {"num_heads": 4}},
    )))
    with torch.no_grad():  # weights no fresh initialisation could produce, and not fp16-representable
        for param in clip4str.vision_model.parameters():
            param.add_(torch.randn_like(param) * 1e-3 + 1e-4)
    clip4str.save_pretrained(tmp_path / "clip4str")
    recipe = ModelRecipe(type="str_adapter", init_from=str(tmp_path / "clip4str"), config={
        **dims, "adapter_type": "ladder", "block_ids": [0, 1], "decoder": {"num_heads": 4},
    })
    model, _ = build_model(recipe)
    tower = clip4str.state_dict()
    for name, tensor in model.state_dict().items():
        if name.startswith(("vision_model.", "visual_projection.")):
            assert torch.equal(tensor, tower[name]), name
    # the ladder's side blocks are copies of tower blocks 0 and 1
    for k in (0, 1):
        side = model.adapter.side_blocks[k]
        for part in ("self_attn.q_proj.weight", "self_attn.v_proj.bias", "mlp.fc1.weight", "layer_norm2.weight"):
            assert torch.equal(side.get_parameter(part), tower[f"vision_model.encoder.layers.{k}.{part}"]), part
    assert all(not p.requires_grad for p in model.vision_model.parameters())
