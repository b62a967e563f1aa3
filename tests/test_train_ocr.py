"""train_ocr end to end on tiny synthetic LMDBs: finetune, evaluate (table + JSON), read, resume, quickstart wiring."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import TrainerCallback

import train_ocr
from processing.str_metrics import compute_scene_text_metrics
from scene_text_training.evaluation import (
    BenchmarkResult,
    discover_benchmarks,
    format_table,
    recognize,
    results_to_json,
)
from scene_text_training.finetune import run_finetune
from scene_text_training.recipes import load_recipe

REPO = Path(__file__).resolve().parents[1]
TINY_DIG = ["model.type=dig", "model.preset=tiny-test", "train.report_to=[]", "train.disable_tqdm=true",
            "train.per_device_train_batch_size=4", "train.per_device_eval_batch_size=8", "train.logging_steps=1"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """A tiny synthetic benchmark: train (24), val (8), test (8) LMDBs."""
    from processing.synthetic import build_synthetic_benchmark

    root = tmp_path_factory.mktemp("synth")
    build_synthetic_benchmark(root, num_train=24, num_val=8, num_test=8, seed=0, num_workers=0)
    return root


@pytest.fixture(scope="module")
def trained(synth, tmp_path_factory) -> Path:
    """A tiny DiG fine-tuned for 4 steps through the command line (checkpoint at step 2, validation at 2 and 4)."""
    out = tmp_path_factory.mktemp("dig_run")
    code = train_ocr.main(["--log-level", "warning", "finetune", *TINY_DIG, f"data.train=[{synth / 'train'}]",
                           f"data.val=[{synth / 'val'}]", f"train.output_dir={out}", "train.max_steps=4",
                           "train.save_steps=2", "train.eval_steps=2"])
    assert code == 0
    return out


def test_finetune_writes_model_processor_recipe_curves_and_checkpoints(trained, synth):
    for name in ("config.json", "model.safetensors", "processor_config.json", "recipe.yaml", "training_curves.png",
                 "trainer_state.json"):
        assert (trained / name).is_file(), name
    assert sorted(p.name for p in trained.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    saved = load_recipe(trained / "recipe.yaml")  # the resolved recipe reloads to the same values
    assert saved.train.max_steps == 4 and saved.model.preset == "tiny-test"
    assert saved.data.train == [str(synth / "train")]
    state = json.loads((trained / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    evals = [e for e in state["log_history"] if "eval_accuracy" in e]
    assert [e["step"] for e in evals][:2] == [2, 4]
    assert all(0.0 <= e["eval_accuracy"] <= 1.0 and 0.0 <= e["eval_one_minus_ned"] <= 1.0 for e in evals)
    losses = [e["loss"] for e in state["log_history"] if "loss" in e]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))


def test_evaluate_json_schema_and_values(trained, synth, tmp_path, capsys):
    output = tmp_path / "results.json"
    assert train_ocr.main(["--log-level", "warning", "evaluate", "--model", str(trained), "--data", str(synth),
                           "--cased", "--output", str(output), "--batch-size", "5", "--max-samples", "5"]) == 0
    table = capsys.readouterr().out
    results = json.loads(output.read_text())
    assert set(results) == {"benchmarks", "average"}
    assert list(results["benchmarks"]) == ["test/synth", "train/synth", "val/synth"]
    keys = {"accuracy", "accuracy_cased", "one_minus_ned", "confidence", "num_samples", "skipped"}
    for name, row in results["benchmarks"].items():
        assert set(row) == keys, name
        assert 0.0 <= row["confidence"] <= 1.0 and row["skipped"] == 0
        assert name in table
    assert [r["num_samples"] for r in results["benchmarks"].values()] == [5, 5, 5]
    assert set(results["average"]) == keys and results["average"]["num_samples"] == 15
    # Values: recompute the test split from the model's own predictions.
    from scene_text_training.data import load_lmdb_split
    from scene_text_training.models import load_saved

    model, processor, model_type = load_saved(trained)
    assert model_type == "dig"
    dataset, _ = load_lmdb_split([synth / "test"], evaluation=True, cased=True, max_samples=5)
    rows = [dataset[i] for i in range(len(dataset))]
    texts, confidences = recognize(model, processor, [row["image"] for row in rows], batch_size=3, disable_tqdm=True)
    expected = compute_scene_text_metrics(texts, [row["label"] for row in rows], confidences)
    got = results["benchmarks"]["test/synth"]
    for key in ("accuracy", "accuracy_cased", "one_minus_ned", "confidence"):
        assert got[key] == pytest.approx(expected[key], abs=1e-9), key
    weighted = sum(r["one_minus_ned"] * r["num_samples"] for r in results["benchmarks"].values()) / 15
    assert results["average"]["one_minus_ned"] == pytest.approx(weighted)


def test_results_json_and_table_from_known_predictions():
    a = BenchmarkResult(accuracy=1.0, accuracy_cased=0.5, one_minus_ned=1.0, confidence=0.9, num_samples=2, skipped=1)
    b = BenchmarkResult(accuracy=0.0, accuracy_cased=0.0, one_minus_ned=0.5, confidence=0.3, num_samples=6)
    out = results_to_json({"IIIT5k": a, "SVT": b})
    assert out["average"] == pytest.approx({"accuracy": 0.25, "accuracy_cased": 0.125, "one_minus_ned": 0.625,
                                            "confidence": 0.45, "num_samples": 8, "skipped": 1})
    table = format_table({"IIIT5k": a, "SVT": b}, cased=True)
    assert "| IIIT5k | 100.00 | 50.00 | 100.00 | 90.00 | 2 |" in table
    assert "| Weighted average | 25.00 | 12.50 | 62.50 | 45.00 | 8 |" in table
    assert "IIIT5k 1" in table  # the skipped records are reported, not hidden
    uncased = results_to_json({"SVT": BenchmarkResult(1.0, None, 1.0, 1.0, 3)})
    assert uncased["average"]["accuracy_cased"] is None


def test_scores_follow_the_case_insensitive_protocol():
    scores = compute_scene_text_metrics(["Hello!", "w0rld"], ["hello", "world"], [1.0, 0.5])
    assert scores["accuracy"] == 0.5 and scores["accuracy_cased"] == 0.0


def test_benchmarks_are_found_in_parseq_order(tmp_path):
    for name in ("zzz_extra", "SVT", "IIIT5k", "CUTE80"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "data.mdb").write_bytes(b"")
    assert list(discover_benchmarks(tmp_path)) == ["IIIT5k", "SVT", "CUTE80", "zzz_extra"]
    assert list(discover_benchmarks(tmp_path / "SVT")) == ["SVT"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover_benchmarks(tmp_path / "nope")


def test_a_benchmark_without_usable_records_is_a_zero_row_and_the_others_are_scored(tmp_path):
    from PIL import Image

    from modeling_dig import DiGConfig, DiGForTextRecognition
    from processing.lmdb_writer import write_str_lmdb
    from processing.processing_dig import DiGProcessor
    from scene_text_training.evaluation import evaluate_benchmarks

    image = Image.new("RGB", (32, 16), (200, 200, 200))
    write_str_lmdb(tmp_path / "test" / "IIIT5k", [(image, "abc"), (image, "de")])
    write_str_lmdb(tmp_path / "test" / "SVT", [(image, "日本"), (image, "x" * 40)])  # nothing survives the labels
    torch.manual_seed(0)
    model = DiGForTextRecognition(DiGConfig.from_preset("tiny-test"))
    results = evaluate_benchmarks(model, DiGProcessor(), discover_benchmarks(tmp_path / "test"), disable_tqdm=True)
    assert list(results) == ["IIIT5k", "SVT"]
    assert results["IIIT5k"].num_samples == 2
    assert results["SVT"].num_samples == 0 and results["SVT"].skipped == 2
    data = results_to_json(results)
    assert data["benchmarks"]["SVT"]["accuracy"] is None  # valid JSON, no NaN
    assert data["average"]["num_samples"] == 2 and data["average"]["accuracy"] == results["IIIT5k"].accuracy
    json.loads(json.dumps(data, allow_nan=False))
    assert "0 usable samples" in format_table(results) and "SVT" in format_table(results)


def test_read_prints_text_and_confidence_matching_generate(trained, synth, tmp_path, capsys):
    from scene_text_training.data import load_lmdb_split
    from scene_text_training.models import load_saved

    dataset, _ = load_lmdb_split([synth / "test"], max_samples=3)
    for i, row in enumerate(dataset):
        row["image"].save(tmp_path / f"{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")  # ignored: not an image suffix
    assert train_ocr.main(["--log-level", "warning", "read", "--model", str(trained), str(tmp_path),
                           "--output", str(tmp_path / "read.json")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith(str(tmp_path / "0.png"))
    rows = json.loads((tmp_path / "read.json").read_text())
    model, processor, _ = load_saved(trained)
    texts, confidences = recognize(model, processor, [r["image"] for r in dataset], disable_tqdm=True)
    assert [r["text"] for r in rows] == texts
    assert [r["confidence"] for r in rows] == pytest.approx(confidences)
    # pipeline("image-to-text") reads the same texts and confidences.
    assert train_ocr.main(["--log-level", "warning", "read", "--pipeline", "--model", str(trained), str(tmp_path),
                           "--output", str(tmp_path / "pipe.json")]) == 0
    piped = json.loads((tmp_path / "pipe.json").read_text())
    assert [r["text"] for r in piped] == texts
    assert [r["confidence"] for r in piped] == pytest.approx(confidences, rel=1e-4)
    capsys.readouterr()
    assert train_ocr.main(["read", "--model", str(trained), str(tmp_path / "missing.png")]) == 2
    err = capsys.readouterr().err
    assert "no such image" in err and str(tmp_path / "missing.png") in err and len(err.strip().splitlines()) == 1


class _StopAt(TrainerCallback):
    """Stops training right after step `step` (its checkpoint is written first): an interrupted run."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
        return control


def _losses(log_history):
    return {e["step"]: e["loss"] for e in log_history if "loss" in e}


def test_resume_continues_at_the_right_step_with_the_same_losses(synth, tmp_path):
    common = [*TINY_DIG, f"data.train=[{synth / 'train'}]", "train.max_steps=4", "train.save_steps=2",
              "train.eval_steps=0", "model.config.encoder.drop_path_rate=0.1", "model.config.decoder.dropout=0.1"]
    reference = run_finetune(load_recipe(None, [*common, f"train.output_dir={tmp_path / 'a'}"]))
    assert reference.global_step == 4

    interrupted = run_finetune(load_recipe(None, [*common, f"train.output_dir={tmp_path / 'b'}"]),
                               callbacks=[_StopAt(2)])
    assert interrupted.global_step == 2
    assert [p.name for p in (tmp_path / "b").glob("checkpoint-*")] == ["checkpoint-2"]
    resumed = run_finetune(load_recipe(None, [*common, f"train.output_dir={tmp_path / 'b'}", "train.resume=auto"]))
    assert resumed.global_step == 4
    expected, got = _losses(reference.log_history), _losses(resumed.log_history)
    assert sorted(got) == [1, 2, 3, 4]  # steps 1-2 come from the checkpoint's state, 3-4 are new
    for step in (3, 4):  # same data order (24 samples / batch 4: the resumed steps are mid-epoch), dropout RNG, lr
        assert got[step] == pytest.approx(expected[step], rel=1e-5), step


def test_resume_rejects_a_missing_checkpoint(tmp_path):
    from scene_text_training.trainer import resolve_resume

    assert resolve_resume("auto", tmp_path / "none-yet") is None
    assert resolve_resume(None, tmp_path) is None
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        resolve_resume(str(tmp_path / "checkpoint-9"), tmp_path)


def _fake_checkpoint(folder: Path, step: int) -> Path:
    folder.mkdir(parents=True)
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (folder / name).write_bytes(b"x")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def test_resume_auto_skips_checkpoints_left_incomplete_by_a_killed_save(tmp_path, caplog):
    from scene_text_training.trainer import resolve_resume

    _fake_checkpoint(tmp_path / "checkpoint-2", 2)
    (_fake_checkpoint(tmp_path / "checkpoint-4", 4) / "trainer_state.json").write_text("")  # killed while writing it
    (_fake_checkpoint(tmp_path / "checkpoint-6", 6) / "trainer_state.json").unlink()  # killed before it
    (_fake_checkpoint(tmp_path / "checkpoint-8", 8) / "trainer_state.json").write_text('{"global_st')  # cut short
    (_fake_checkpoint(tmp_path / "checkpoint-10", 10) / "model.safetensors").unlink()
    with caplog.at_level("INFO", logger="scene_text_training.checkpoints"):
        assert resolve_resume("auto", tmp_path) == str(tmp_path / "checkpoint-2")
    log = caplog.text
    for step, reason in ((10, "model.safetensors or"), (8, "trainer_state.json does not parse"), (6, "trainer_state.json missing"),
                         (4, "trainer_state.json is empty")):
        assert f"checkpoint-{step}: incomplete ({reason}" in log, step
    assert "resuming from " + str(tmp_path / "checkpoint-2") in log
    with pytest.raises(ValueError, match="checkpoint-4: incomplete checkpoint"):
        resolve_resume(str(tmp_path / "checkpoint-4"), tmp_path)
    (tmp_path / "checkpoint-2" / "optimizer.pt").unlink()
    assert resolve_resume("auto", tmp_path) is None  # nothing complete: train from the start


def test_cli_reports_recipe_errors(capsys):
    assert train_ocr.main(["finetune", "optim.learning_rate=1"]) == 2
    assert "unknown key(s) ['learning_rate']" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="not found"):
        train_ocr.main(["finetune", "--config", "no_such_recipe"])


def test_help_documents_every_subcommand_and_recipe_key(capsys):
    with pytest.raises(SystemExit):
        train_ocr.main(["finetune", "--help"])
    text = capsys.readouterr().out
    assert "optim.decoder_lr_scale" in text and "train.resume" in text and "data.synthetic.num_train" in text
    parser = train_ocr.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == {"pretrain", "finetune", "evaluate", "read", "export", "quickstart"}


def test_quickstart_runs_the_models_recipe_or_the_one_named_by_config(monkeypatch, capsys):
    """`train_ocr quickstart` runs configs/quickstart_<model>.yaml; `--config synth_dig_small_cpu` runs the 2-hour
    CPU recipe through the same job, with the overrides applied to it."""
    from scene_text_training import quickstart

    seen = []

    def fake_run(config, overrides):
        seen.append((Path(config).name, list(overrides)))
        return {"recipe": Path(config).stem}

    monkeypatch.setattr(quickstart, "run_quickstart", fake_run)
    assert train_ocr.main(["quickstart"]) == 0
    assert train_ocr.main(["quickstart", "--config", "synth_dig_small_cpu", "train.max_steps=3"]) == 0
    assert seen == [("quickstart_dig.yaml", []), ("synth_dig_small_cpu.yaml", ["train.max_steps=3"])]
    assert '"recipe": "synth_dig_small_cpu"' in capsys.readouterr().out
    with pytest.raises(SystemExit, match="one recipe"):
        train_ocr.main(["quickstart", "--model", "both", "--config", "synth_dig_small_cpu"])
    with pytest.raises(SystemExit, match="not found"):
        train_ocr.main(["quickstart", "--config", "no_such_recipe"])



def test_quickstart_scores_the_test_sets_with_the_recipes_evaluation_settings(monkeypatch, tmp_path, capsys):
    """The job's test table decodes as the recipe's `evaluate` section says (the 2-hour recipe uses beam search):
    beam width and sample cap reach the evaluation, and the summary records the beam width."""
    from types import SimpleNamespace

    from scene_text_training import quickstart

    seen = {}

    def fake_evaluate(model_dir, data, **kwargs):
        seen.update(kwargs)
        return {"unseen_fonts_clean": SimpleNamespace(accuracy=0.5, one_minus_ned=0.75, num_samples=4)}, ""

    monkeypatch.setattr(quickstart, "run_finetune", lambda recipe: SimpleNamespace(global_step=2))
    monkeypatch.setattr(quickstart, "run_evaluate", fake_evaluate)
    monkeypatch.setattr(quickstart, "discover_benchmarks", lambda data: {"unseen_fonts_clean": tmp_path})
    monkeypatch.setattr(quickstart, "export_samples", lambda *args, **kwargs: [])
    monkeypatch.setattr(quickstart, "read_with_pipeline", lambda *args: [])
    summary = quickstart.run_quickstart(REPO / "configs" / "synth_dig_small_cpu.yaml", [
        f"train.output_dir={tmp_path / 'run'}", f"evaluate.data={tmp_path}", "evaluate.max_samples=4"])
    assert seen["num_beams"] == load_recipe(REPO / "configs" / "synth_dig_small_cpu.yaml").evaluate.num_beams == 5
    assert seen["max_samples"] == 4
    assert summary["num_beams"] == 5 and summary["test_accuracy"] == 0.5

def test_pretrain_dispatches_to_training_pretrain(monkeypatch, tmp_path):
    from scene_text_training import pretrain
    from scene_text_training.recipes import Recipe

    seen = {}

    def fake_run(recipe):
        seen["recipe"] = recipe
        return pretrain.PretrainResult(tmp_path, 1, 1, None, 0.5, [], tmp_path / "final", [])

    monkeypatch.setattr(pretrain, "run_pretraining", fake_run)
    config = tmp_path / "pretrain.yaml"
    config.write_text("model: {type: dig_pretraining}\ndata: {train: [/data/unlabeled]}\n"
                      "train: {per_device_train_batch_size: 128}\noptim: {betas: [0.9, 0.999]}\n")
    assert train_ocr.main(["pretrain", "--config", str(config), f"train.output_dir={tmp_path}",
                           "train.per_device_train_batch_size=8", "pretrain.momentum_cosine=false"]) == 0
    recipe = seen["recipe"]
    assert isinstance(recipe, Recipe) and recipe.model.type == "dig_pretraining"
    assert (recipe.train.output_dir, recipe.train.per_device_train_batch_size, recipe.data.train) == (
        str(tmp_path), 8, ["/data/unlabeled"])
    assert (recipe.optim.betas, recipe.pretrain.momentum_cosine) == ([0.9, 0.999], False)
    assert train_ocr.main(["pretrain", "--config", str(config), "train.batch=8"]) == 2  # unknown key: clear error


def test_init_from_a_saved_folder_continues_from_its_weights(trained):
    from safetensors.torch import load_file

    from scene_text_training.models import build_model
    from scene_text_training.recipes import ModelRecipe

    model, processor = build_model(ModelRecipe(type="dig", init_from=str(trained)))
    saved = load_file(trained / "model.safetensors")
    for name, tensor in model.state_dict().items():
        if name in saved:
            assert torch.equal(tensor, saved[name]), name
    assert type(processor).__name__ == "DiGProcessor"


def test_init_from_a_dig_pretraining_checkpoint_loads_the_encoder_only(dig_fixtures):
    from modeling_dig.encoder_initialization import read_pretraining_source
    from scene_text_training.models import build_model
    from scene_text_training.recipes import ModelRecipe

    encoder = {"hidden_size": 96, "num_hidden_layers": 2, "num_attention_heads": 3, "intermediate_size": 384}
    recipe = ModelRecipe(type="dig", preset="tiny-test", config={"encoder": encoder},
                         init_from=str(dig_fixtures / "pretrain_checkpoint.pth"))
    torch.manual_seed(0)
    model, _ = build_model(recipe)
    torch.manual_seed(0)
    fresh, _ = build_model(ModelRecipe(type="dig", preset="tiny-test", config={"encoder": encoder}))
    _, pretrained = read_pretraining_source(dig_fixtures / "pretrain_checkpoint.pth")
    state = model.state_dict()
    assert torch.equal(state["encoder.blocks.1.mlp.fc2.weight"], pretrained["encoder.blocks.1.mlp.fc2.weight"])
    assert torch.equal(state["encoder.patch_embed.proj.weight"], pretrained["encoder.patch_embed.proj.weight"])
    # The recognizer's final norm, bridge and decoder keep their fresh initialisation.
    fresh_state = fresh.state_dict()
    for name in ("encoder.norm.weight", "linear_norm.dense.weight", "classifier.weight"):
        assert torch.equal(state[name], fresh_state[name]), name
    assert not torch.equal(state["encoder.blocks.0.attn.qkv.weight"], fresh_state["encoder.blocks.0.attn.qkv.weight"])


def test_init_from_clip_weights_fills_the_towers(clip4str_fixtures):
    from modeling_clip4str.clip_initialization import clip4str_from_clip_file
    from scene_text_training.models import build_model
    from scene_text_training.recipes import ModelRecipe

    dims = {"embed_dim": 96, "vision_width": 128, "vision_layers": 2, "patch_size": 16, "text_width": 64,
            "text_layers": 3}
    path = clip4str_fixtures / "clip_init.pt"
    model, processor = build_model(ModelRecipe(type="clip4str", config=dims, init_from=str(path)))
    reference = clip4str_from_clip_file(path).state_dict()
    state = model.state_dict()
    towers = [k for k in state if not k.split(".")[0].endswith("decoder")]
    assert towers and all(torch.equal(state[k], reference[k]) for k in towers)
    assert type(processor).__name__ == "CLIP4STRProcessor"


def test_synthetic_data_is_rendered_once_and_again_when_its_settings_change(monkeypatch, tmp_path):
    from processing import synthetic
    from scene_text_training.synthetic_data import ensure_synthetic_data

    calls = []

    def fake_build(root, **kwargs):
        calls.append(kwargs["num_train"])
        for split in ("train", "val", "test"):
            (Path(root) / split / "synth").mkdir(parents=True, exist_ok=True)
            (Path(root) / split / "synth" / "data.mdb").write_bytes(b"")

    monkeypatch.setattr(synthetic, "build_synthetic_benchmark", fake_build)
    overrides = [f"data.synthetic.output_root={tmp_path}", "data.synthetic.num_train=10"]
    recipe = load_recipe(None, overrides)
    ensure_synthetic_data(recipe)
    assert recipe.data.train == [str(tmp_path / "train")] and recipe.evaluate.data == str(tmp_path / "test")
    ensure_synthetic_data(load_recipe(None, overrides))  # same settings: reused
    ensure_synthetic_data(load_recipe(None, [*overrides, "data.synthetic.num_train=20"]))  # changed: re-rendered
    assert calls == [10, 20]


@pytest.mark.slow
def test_quickstart_runs_the_whole_job_on_a_tiny_recipe(tmp_path, capsys):
    """Render -> finetune -> evaluate -> pipeline read, wired as `train_ocr quickstart` does (~1 min on 2 cores)."""
    from scene_text_training.quickstart import run_quickstart

    summary = run_quickstart(REPO / "configs" / "quickstart_dig.yaml", [
        "model.preset=tiny-test", "model.config={}", f"data.synthetic.output_root={tmp_path / 'data'}",
        "data.synthetic.num_train=16", "data.synthetic.num_val=4", "data.synthetic.num_test=4",
        "data.synthetic.num_workers=0", f"train.output_dir={tmp_path / 'run'}", "train.max_steps=2",
        "train.report_to=[]", "train.disable_tqdm=true"], num_samples=6)
    out = capsys.readouterr().out
    assert summary["train_steps"] == 2 and summary["test_samples"] == 4
    # the headline is the font-disjoint test set: clean words in fonts the model never trained on
    assert summary["test_set"] == "unseen_fonts_clean" and 0.0 <= summary["test_accuracy"] <= 1.0
    assert sorted(summary["test_sets"]) == ["seen_fonts_clean", "unseen_fonts_clean", "unseen_fonts_textured"]
    assert "| unseen_fonts_clean |" in out and "| seen_fonts_clean |" in out and 'pipeline("image-to-text")' in out
    samples = sorted(p.relative_to(tmp_path / "run" / "samples").parts[0]
                     for p in (tmp_path / "run" / "samples").rglob("*.png"))
    assert samples == ["seen_fonts_clean"] * 2 + ["unseen_fonts_clean"] * 2 + ["unseen_fonts_textured"] * 2
    assert "unseen_fonts_clean/00_" in out  # the printed readings name the set each image comes from
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["benchmarks"]["unseen_fonts_clean"]["num_samples"] == 4
    assert json.loads((tmp_path / "data" / "fonts.json").read_text())["test"]  # which families were held out


@pytest.mark.slow
def test_two_process_cpu_finetune_with_accelerate(synth, tmp_path):
    """Two-process DDP on CPU (gloo): each process sees half the data, the lr follows the total batch.

    `accelerate launch --cpu` starts a single process unless it goes through mpirun; `--multi_gpu` with no visible GPU
    starts torchrun workers that the Trainer runs on CPU with gloo.
    """
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "train_ocr.py"), "--log-level", "warning",
           "finetune", *TINY_DIG, f"data.train=[{synth / 'train'}]", f"data.val=[{synth / 'val'}]",
           f"train.output_dir={out}", "train.num_train_epochs=1", "train.eval_steps=null", "optim.scheduler=constant"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3  # 24 samples / (4 per process x 2 processes)
    lrs = [e["learning_rate"] for e in state["log_history"] if "learning_rate" in e]
    assert lrs and all(lr == pytest.approx(1e-4 * 8 / 256) for lr in lrs)  # base_lr x total batch 8 / 256
    assert any("eval_accuracy" in e for e in state["log_history"])
    assert yaml.safe_load((out / "recipe.yaml").read_text())["train"]["output_dir"] == str(out)


def test_augmented_runs_are_reproducible_and_resume_exactly_past_a_broken_checkpoint(synth, tmp_path):
    """train.seed fixes the augmentation: two runs with the same seed give the same losses, and a run stopped
    after step 3 (its newer checkpoint left broken by a killed save) resumes with the uninterrupted run's losses,
    across an epoch boundary (8 samples, batch 4: 2 steps per epoch)."""
    import shutil

    common = [*TINY_DIG, f"data.train=[{synth / 'train'}]", "data.max_train_samples=8", "data.augment=dig",
              "train.max_steps=5", "train.save_steps=3", "train.eval_steps=0", "train.seed=11"]
    reference = _losses(run_finetune(load_recipe(None, [*common, f"train.output_dir={tmp_path / 'a'}"])).log_history)
    assert sorted(reference) == [1, 2, 3, 4, 5]

    out = tmp_path / "b"
    interrupted = run_finetune(load_recipe(None, [*common, f"train.output_dir={out}"]), callbacks=[_StopAt(3)])
    first = _losses(interrupted.log_history)
    for step in (1, 2, 3):  # a second run with the same seed
        assert first[step] == pytest.approx(reference[step], rel=1e-5), step
    shutil.copytree(out / "checkpoint-3", out / "checkpoint-4")
    (out / "checkpoint-4" / "trainer_state.json").write_text("")  # a save killed while writing its state

    # resumed with two DataLoader workers: they augment exactly as the main process did
    resumed = run_finetune(load_recipe(None, [*common, f"train.output_dir={out}", "train.resume=auto",
                                              "train.dataloader_num_workers=2"]))
    assert resumed.global_step == 5
    got = _losses(resumed.log_history)
    for step in (4, 5):  # step 4 ends epoch 1 (resumed mid-epoch), step 5 starts epoch 2
        assert got[step] == pytest.approx(reference[step], rel=1e-5), step


def _booby_trapped_folder(root: Path, marker: Path) -> Path:
    """A tiny DiG folder as `save_pretrained` writes it for remote-code users (config/model/tokenizer/processor
    code beside the weights), with every shipped .py file edited to create `marker` when imported."""
    from modeling_dig import DiGConfig, DiGForTextRecognition
    from processing.auto_registration import save_processor_with_code
    from scene_text_training.models import build_processor

    folder = root / "downloaded"
    config = DiGConfig.from_preset("tiny-test")
    DiGForTextRecognition(config).save_pretrained(folder)
    save_processor_with_code(build_processor("dig", config), folder)
    shipped = sorted(folder.glob("*.py"))
    assert {"configuration_dig.py", "modeling_dig.py", "pipeline_scene_text.py"} <= {p.name for p in shipped}
    payload = f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
    for file in shipped:
        head, future, tail = file.read_text().partition("from __future__ import annotations\n")
        file.write_text(head + future + payload + tail if future else payload + head)
    return folder


def test_cli_never_runs_the_code_of_a_downloaded_folder(synth, tmp_path, capsys):
    from scene_text_training.models import build_model
    from scene_text_training.recipes import ModelRecipe

    marker = tmp_path / "pwned"
    folder = _booby_trapped_folder(tmp_path, marker)
    from scene_text_training.data import load_lmdb_split

    dataset, _ = load_lmdb_split([synth / "test"], max_samples=1)
    image = tmp_path / "word.png"
    dataset[0]["image"].save(image)
    # A fresh process first: there, nothing has registered the library's classes before the folder is opened.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    completed = subprocess.run([sys.executable, str(REPO / "train_ocr.py"), "--log-level", "warning", "read",
                                "--model", str(folder), str(image)], env=env, capture_output=True, text=True,
                               timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert not marker.exists()
    assert train_ocr.main(["--log-level", "warning", "read", "--model", str(folder), str(image)]) == 0
    assert train_ocr.main(["--log-level", "warning", "read", "--pipeline", "--model", str(folder), str(image)]) == 0
    assert train_ocr.main(["--log-level", "warning", "evaluate", "--model", str(folder), "--data",
                           str(synth / "test"), "--output", str(tmp_path / "r.json")]) == 0
    model, _ = build_model(ModelRecipe(type="dig", init_from=str(folder)))
    assert type(model).__module__ == "modeling_dig.modeling_dig"  # the installed class, not the folder's copy
    assert not marker.exists()

    # Another model_type: its code would have to run, so it is refused unless the user says otherwise.
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "evil_dig"}))
    capsys.readouterr()
    assert train_ocr.main(["read", "--model", str(folder), str(image)]) == 2
    err = capsys.readouterr().err
    assert str(folder) in err and "--trust-remote-code" in err and len(err.strip().splitlines()) == 1
    assert train_ocr.main(["read", "--pipeline", "--model", str(folder), str(image)]) == 2
    with pytest.raises(ValueError, match="model.trust_remote_code"):
        build_model(ModelRecipe(type="dig", init_from=str(folder)))
    assert not marker.exists()


def test_a_save_killed_midway_leaves_no_checkpoint_folder_and_resume_ignores_it(synth, tmp_path, monkeypatch):
    """Checkpoints are published atomically: a save that dies after the weights but before the optimizer/RNG/state
    files leaves only a dot-folder, `train.resume=auto` continues from the previous complete checkpoint with the
    uninterrupted run's losses, and the next save of that step cleans the dot-folder up."""
    from transformers import Trainer

    common = [*TINY_DIG, f"data.train=[{synth / 'train'}]", "data.max_train_samples=8", "train.max_steps=4",
              "train.save_steps=2", "train.eval_steps=0", "train.seed=5"]
    reference = _losses(run_finetune(load_recipe(None, [*common, f"train.output_dir={tmp_path / 'a'}"])).log_history)

    out = tmp_path / "b"
    original = Trainer._save_rng_state

    def killed_at_step_4(self, output_dir):
        if self.state.global_step == 4:
            raise KeyboardInterrupt("killed while saving")
        return original(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_rng_state", killed_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        run_finetune(load_recipe(None, [*common, f"train.output_dir={out}"]))
    monkeypatch.setattr(Trainer, "_save_rng_state", original)
    names = sorted(p.name for p in out.iterdir() if p.is_dir() and "checkpoint" in p.name)
    assert names == [".incomplete-checkpoint-4", "checkpoint-2"]
    assert (out / ".incomplete-checkpoint-4" / "checkpoint-4" / "model.safetensors").is_file()  # the half-written save

    resumed = run_finetune(load_recipe(None, [*common, f"train.output_dir={out}", "train.resume=auto"]))
    got = _losses(resumed.log_history)
    for step in (3, 4):
        assert got[step] == pytest.approx(reference[step], rel=1e-5), step
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and "checkpoint" in p.name) == ["checkpoint-2", "checkpoint-4"]
