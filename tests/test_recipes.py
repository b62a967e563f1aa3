"""Recipes (YAML + overrides -> dataclasses), the shipped configs, and the optimiser/schedule rules."""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

import pytest
import torch

from scene_text_training.optim import build_optimizer, build_scheduler, scaled_learning_rate
from scene_text_training.recipes import (
    OptimRecipe,
    Recipe,
    RecipeError,
    apply_overrides,
    describe,
    load_recipe,
    read_yaml,
    save_recipe,
    to_dict,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
OWN_CONFIGS = sorted(CONFIGS.glob("*.yaml"))  # fine-tuning, evaluation and pre-training: one schema


def test_shipped_configs_are_present():
    names = {p.stem for p in OWN_CONFIGS}
    expected = {"dig_small_finetune", "dig_small_evaluate", "clip4str_b_mjst", "clip4str_b_real", "clip4str_l_mjst",
                "clip4str_l_real", "quickstart_dig", "quickstart_clip4str", "dig_small_pretrain", "quickstart_dig_pretrain"}
    assert expected <= names, f"missing recipes: {expected - names}"


@pytest.mark.parametrize("path", OWN_CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_recipe_validates_and_round_trips(path, tmp_path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    saved = save_recipe(recipe, tmp_path / "recipe.yaml")
    assert load_recipe(saved) == recipe


def test_dig_finetune_recipe_has_the_seed_hyper_parameters():
    recipe = load_recipe(CONFIGS / "dig_small_finetune.yaml")
    assert recipe.model.type == "dig" and recipe.model.preset == "vit-small"
    encoder = recipe.model.config["encoder"]
    assert (encoder["hidden_dropout_prob"], encoder["attention_probs_dropout_prob"], encoder["drop_path_rate"]) == (
        0.1, 0.1, 0.1)
    assert recipe.model.config["label_smoothing"] == 0.0
    assert recipe.data.augment == "dig" and recipe.data.max_label_length == 25
    o = recipe.optim
    assert (o.base_lr, o.lr_reference_batch, o.weight_decay, o.layer_decay) == (1e-4, 256, 0.05, 0.75)
    assert (o.betas, o.scheduler, o.warmup_epochs, o.min_lr, o.max_grad_norm) == ([0.9, 0.999], "cosine", 1.0, 1e-6,
                                                                                  None)
    t = recipe.train
    assert (t.per_device_train_batch_size, t.num_train_epochs, t.mixed_precision) == (256, 10.0, "fp16")
    # 8 processes x 256 = 2048 -> lr 8e-4, as the original's lr * total_batch / 256.
    assert scaled_learning_rate(o, 8 * 256) == pytest.approx(8e-4)


def test_dig_evaluate_recipe_is_greedy_batch_512():
    recipe = load_recipe(CONFIGS / "dig_small_evaluate.yaml")
    assert (recipe.evaluate.batch_size, recipe.evaluate.num_beams, recipe.evaluate.cased) == (512, 1, False)


@pytest.mark.parametrize("name,epochs,total", [("clip4str_b_mjst", 7, 1024), ("clip4str_b_real", 16, 1024),
                                               ("clip4str_l_mjst", 6, 960), ("clip4str_l_real", 10, 960)])
def test_clip4str_recipes_follow_the_authors_scripts(name, epochs, total):
    recipe = load_recipe(CONFIGS / f"{name}.yaml")
    o, t = recipe.optim, recipe.train
    assert recipe.model.type == "clip4str" and recipe.model.config["text_freeze_nlayer"] == 6
    assert (o.base_lr, o.lr_reference_batch, o.decoder_lr_scale, o.weight_decay, o.eps) == (8.4e-5, 512, 19.0, 0.2,
                                                                                           1e-6)
    assert (o.betas, o.scheduler, o.pct_start, o.max_grad_norm) == ([0.9, 0.98], "one_cycle", 0.075, 20.0)
    assert t.num_train_epochs == epochs
    processes = int(recipe_launch_processes(CONFIGS / f"{name}.yaml"))
    assert t.per_device_train_batch_size * t.gradient_accumulation_steps * processes == total
    assert recipe.evaluate.normalization == "test"


def recipe_launch_processes(path: Path) -> str:
    """The --num_processes of the launch line documented in the recipe's header."""
    for line in path.read_text().splitlines():
        if "--num_processes" in line:
            return line.split("--num_processes")[1].split()[0]
    raise AssertionError(f"{path} documents no launch line")


def test_overrides_reach_nested_keys_with_yaml_types():
    recipe = load_recipe(CONFIGS / "dig_small_finetune.yaml", [
        "optim.base_lr=3e-4", "train.max_steps=12", "data.train=[/a, /b]", "model.init_from=null",
        "model.config.encoder.hidden_size=96", "train.report_to=[]", "evaluate.cased=true", "optim.layer_decay=null",
    ])
    assert recipe.optim.base_lr == 3e-4 and isinstance(recipe.optim.base_lr, float)
    assert recipe.train.max_steps == 12
    assert recipe.data.train == ["/a", "/b"]
    assert recipe.model.init_from is None and recipe.optim.layer_decay is None
    assert recipe.model.config["encoder"] == {"hidden_size": 96, "hidden_dropout_prob": 0.1,
                                              "attention_probs_dropout_prob": 0.1, "drop_path_rate": 0.1}
    assert recipe.train.report_to == [] and recipe.evaluate.cased is True


def test_overrides_without_a_file_build_the_defaults():
    recipe = load_recipe(None, ["model.type=clip4str", "data.synthetic.num_train=10"])
    assert recipe.model.type == "clip4str" and recipe.data.synthetic.num_train == 10
    assert recipe.data.synthetic.num_val == 200  # the rest of the section keeps its defaults
    assert load_recipe(None) == Recipe()


@pytest.mark.parametrize("override,message", [
    ("optim.base_learning_rate=1", "unknown key(s) ['base_learning_rate']"),
    ("train.max_steps=lots", "recipe.train.max_steps: expected int, got 'lots'"),
    ("train.max_steps", "not of the form key=value"),
    ("optim.base_lr.x=1", "recipe.optim.base_lr: expected float, got {'x': 1}"),
    ("train=3", "expected a mapping for section TrainRecipe"),
    ("train.seed=null", "null is not allowed"),
])
def test_bad_overrides_are_clear_errors(override, message):
    with pytest.raises(RecipeError) as info:
        load_recipe(None, [override])
    assert message in str(info.value)


def test_unknown_key_in_file_names_the_file_and_valid_keys(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lr: 1.0\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(path) in str(info.value) and "base_lr" in str(info.value)
    with pytest.raises(RecipeError, match="does not exist"):
        read_yaml(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(RecipeError, match="mapping at the top level"):
        read_yaml(tmp_path / "list.yaml")


def test_apply_overrides_does_not_mutate_its_input():
    values = {"optim": {"base_lr": 1.0}}
    out = apply_overrides(values, ["optim.base_lr=2", "train.seed=3"])
    assert values == {"optim": {"base_lr": 1.0}} and out == {"optim": {"base_lr": 2}, "train": {"seed": 3}}
    with pytest.raises(RecipeError, match="'base_lr' is a value, not a section"):
        apply_overrides(values, ["optim.base_lr.x=1"])


def test_help_lists_every_key_with_its_doc():
    lines = "\n".join(describe())
    flat = _flat_keys(to_dict(Recipe()))
    for key in flat:
        assert f"  {key} (default" in lines or f"  {key}:" in lines, key
    assert "optim.layer_decay (default None): DiG layer-wise lr decay" in lines


def _flat_keys(values: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in values.items():
        keys.append(prefix + k)
        if isinstance(v, dict) and k != "config":
            keys.extend(_flat_keys(v, f"{prefix}{k}."))
    return keys


# ---- optimiser rules ---------------------------------------------------------------------------------------------


def test_dig_declares_beit_layer_ids():
    from modeling_dig import DiGConfig, DiGForTextRecognition

    model = DiGForTextRecognition(DiGConfig.from_preset("vit-small"))  # 12 encoder blocks
    assert model.num_lr_layers() == 14
    assert model.lr_layer_id("encoder.patch_embed.proj.weight") == 0
    assert model.lr_layer_id("encoder.mask_token") == 0
    assert model.lr_layer_id("encoder.blocks.0.attn.qkv.weight") == 1
    assert model.lr_layer_id("encoder.blocks.11.mlp.fc2.bias") == 12
    for after_the_blocks in ("encoder.norm.weight", "linear_norm.dense.weight",
                             "decoder.layers.0.self_attn.q_proj.weight", "classifier.weight"):
        assert model.lr_layer_id(after_the_blocks) == 13
    ids = {model.lr_layer_id(name) for name, _ in model.named_parameters()}
    assert ids == set(range(14))  # every layer holds parameters, none falls outside


def test_dig_param_groups_layer_decay_and_no_decay():
    from modeling_dig import DiGConfig, DiGForTextRecognition

    model = DiGForTextRecognition(DiGConfig.from_preset("tiny-test"))  # 2 encoder blocks
    optim = OptimRecipe(layer_decay=0.75, weight_decay=0.05)
    optimizer = build_optimizer(model, optim, lr=1e-3)
    by_name = {name: group for group in optimizer.param_groups for name in group["names"]}
    assert set(by_name) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert by_name["encoder.patch_embed.proj.weight"]["lr"] == pytest.approx(1e-3 * 0.75**3)
    assert by_name["encoder.blocks.0.mlp.fc1.weight"]["lr"] == pytest.approx(1e-3 * 0.75**2)
    assert by_name["encoder.blocks.1.mlp.fc1.weight"]["lr"] == pytest.approx(1e-3 * 0.75)
    assert by_name["classifier.weight"]["lr"] == pytest.approx(1e-3)
    assert by_name["classifier.weight"]["weight_decay"] == 0.05
    assert by_name["classifier.bias"]["weight_decay"] == 0.0
    assert by_name["encoder.norm.weight"]["weight_decay"] == 0.0
    decayed = {n for n, g in by_name.items() if g["weight_decay"] > 0}
    assert decayed == {n for n, p in model.named_parameters() if p.ndim >= 2}  # DiG: every matrix decays


def test_layer_decay_needs_a_model_that_declares_layers():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="declares no lr layers"):
        build_optimizer(model, OptimRecipe(layer_decay=0.75), lr=1.0)


def test_frozen_parameters_are_left_out():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    model[0].weight.requires_grad_(False)
    optimizer = build_optimizer(model, OptimRecipe(), lr=1.0)
    names = [n for g in optimizer.param_groups for n in g["names"]]
    assert "0.weight" not in names and "0.bias" in names


def test_clip4str_decoders_train_19x_and_towers_at_base_lr():
    from modeling_clip4str import CLIP4STRForTextRecognition
    from scene_text_training.models import build_config

    config = build_config(load_recipe(CONFIGS / "quickstart_clip4str.yaml").model)
    model = CLIP4STRForTextRecognition(config)
    optimizer = build_optimizer(model, OptimRecipe(decoder_lr_scale=19.0, weight_decay=0.2), lr=1e-4)
    by_name = {name: group for group in optimizer.param_groups for name in group["names"]}
    assert set(by_name) == {n for n, p in model.named_parameters() if p.requires_grad}
    for name, group in by_name.items():
        decoder = name.split(".")[0] in ("visual_decoder", "cross_decoder")
        assert group["lr"] == pytest.approx(19e-4 if decoder else 1e-4), name
        param = model.get_parameter(name)
        exempt = param.ndim < 2 or any(k in name for k in ("bias", "logit_scale", "pos_queries", "text_embed"))
        assert group["weight_decay"] == (0.0 if exempt else 0.2), name
    assert by_name["visual_decoder.pos_queries"]["weight_decay"] == 0.0
    assert by_name["vision_model.encoder.layers.0.mlp.fc1.weight"]["weight_decay"] == 0.2


def _lrs(scheduler, optimizer, steps):
    out = []
    for _ in range(steps):
        out.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return out


def test_cosine_schedule_warms_up_then_ends_at_scaled_min_lr():
    params = [torch.nn.Parameter(torch.zeros(2, 2)), torch.nn.Parameter(torch.zeros(2, 2))]
    optimizer = torch.optim.AdamW([{"params": [params[0]], "lr": 1e-3}, {"params": [params[1]], "lr": 0.5e-3}])
    optim = OptimRecipe(scheduler="cosine", warmup_epochs=1.0, min_lr=1e-5)
    scheduler = build_scheduler(optimizer, optim, num_training_steps=40, steps_per_epoch=10, base_lr=1e-3)
    lrs = _lrs(scheduler, optimizer, 41)
    assert lrs[0] == [0.0, 0.0]
    assert lrs[10] == pytest.approx([1e-3, 0.5e-3])  # peak right after one epoch of warm-up
    assert lrs[40] == pytest.approx([1e-5, 0.5e-5])  # min_lr, scaled like each group's peak
    assert all(a[0] >= b[0] for a, b in itertools.pairwise(lrs[10:]))


def test_one_cycle_schedule_peaks_at_pct_start():
    optimizer = torch.optim.AdamW([{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 1e-4},
                                   {"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 19e-4}])
    optim = OptimRecipe(scheduler="one_cycle", pct_start=0.075)
    scheduler = build_scheduler(optimizer, optim, num_training_steps=200, steps_per_epoch=10, base_lr=1e-4)
    lrs = _lrs(scheduler, optimizer, 200)
    peak = max(range(200), key=lambda i: lrs[i][0])
    assert peak == math.floor(0.075 * 200) - 1 or peak == math.floor(0.075 * 200)
    assert lrs[peak] == pytest.approx([1e-4, 19e-4])
    with pytest.raises(ValueError, match="optim.scheduler"):
        build_scheduler(optimizer, OptimRecipe(scheduler="linear"), 10, 1, 1e-4)


@pytest.mark.parametrize("name", ["quickstart_dig", "quickstart_clip4str", "synth_dig_small_cpu"])
def test_quickstart_recipes_build_models_that_train_and_read(name):
    """The quickstart's real model sizes: one training step on rendered words lowers nothing to NaN, and generate
    returns decodable ids for the processor's input size (DiG: 32 column-strip tokens)."""
    import random

    from processing.synthetic import random_string, render_word
    from scene_text_training.models import build_model

    recipe = load_recipe(CONFIGS / f"{name}.yaml")
    synthetic = recipe.data.synthetic
    assert synthetic.random_fraction == 0.5
    # DiG's quickstart trains on diverse renders in the training font families and is scored on unseen families
    assert (synthetic.difficulty, synthetic.fonts) == {
        "quickstart_dig": ("diverse", "disjoint"), "quickstart_clip4str": ("clean", "classic"),
        "synth_dig_small_cpu": ("diverse_textured", "disjoint")}[name]
    torch.manual_seed(0)
    model, processor = build_model(recipe.model)
    if recipe.model.type == "dig":
        assert model.config.encoder.grid_size == (1, 32)
        low, high = {"quickstart_dig": (0.7e6, 0.9e6), "synth_dig_small_cpu": (1.3e6, 1.6e6)}[name]
        assert low < sum(p.numel() for p in model.parameters()) < high
    rng = random.Random(0)
    words = [random_string(rng) for _ in range(4)]
    batch = processor(images=[render_word(w, rng, "clean") for w in words], text=words, return_tensors="pt")
    model.train()
    loss = model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss
    loss.backward()
    assert torch.isfinite(loss) and all(
        torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        texts = processor.batch_decode(model.generate(pixel_values=batch["pixel_values"]))
    assert len(texts) == 4 and all(isinstance(t, str) for t in texts)


@pytest.mark.parametrize(
    ("model_type", "config", "where", "typo", "suggestion"),
    [
        ("dig", {"labl_smoothing": 0.1}, "model.config", "labl_smoothing", "label_smoothing"),
        ("dig", {"encoder": {"hiden_size": 96}}, "model.config.encoder", "hiden_size", "hidden_size"),
        ("clip4str", {"decoder": {"dept": 1}}, "model.config.decoder", "dept", "depth"),
        ("clip4str", {"vision_widht": 64}, "model.config", "vision_widht", "vision_width"),
    ],
)
def test_model_config_typos_are_errors_listing_the_valid_keys(model_type, config, where, typo, suggestion):
    from scene_text_training.models import build_config
    from scene_text_training.recipes import ModelRecipe

    with pytest.raises(RecipeError, match=rf"^{re.escape(where)}: unknown key\(s\) \['{typo}'\]") as caught:
        build_config(ModelRecipe(type=model_type, config=config))
    assert f"'{suggestion}'" in str(caught.value)


def test_pretraining_model_config_typos_are_errors():
    from scene_text_training.pretrain import build_pretraining_config

    typo = load_recipe(None, ["model.type=dig_pretraining", "model.preset=tiny-test", "model.config.encoder.hiden_size=8"])
    with pytest.raises(RecipeError, match=r"model.config.encoder: unknown key\(s\) \['hiden_size'\]"):
        build_pretraining_config(typo)
    config = build_pretraining_config(load_recipe(None, ["model.preset=tiny-test", "model.config.mask_ratio=0.5"]))
    assert config.mask_ratio == 0.5
