"""Does DiG pre-training help? A CPU-sized A/B test on synthetic words.

    python -m benchmarks.pretrain_effect                 # ~20 minutes of CPU (default budget, 32x4 strips)
    python -m benchmarks.pretrain_effect --quick         # ~2 minutes, smoke test
    python -m benchmarks.pretrain_effect --budget-minutes 30 --output results/pretrain_effect.json

1. Render a synthetic STR benchmark (processing.synthetic; test words are held out of training).
2. Pre-train a reduced DiG (`DiGPreTrainingConfig.from_preset("reduced")`) on the training images, labels unused.
3. Fine-tune a recognizer initialised from it on a small labelled subset.
4. Fine-tune the same architecture from scratch with the same steps, data order and hyper-parameters.
5. Print both word accuracies on the held-out test split (DiG protocol: case-insensitive, alphanumerics only)
   and write a JSON report.

After data rendering and a short timing probe, the remaining budget is split 45% pre-training / 20% per
fine-tuning run / 15% evaluation; step counts come from the measured step times, so the two fine-tuning runs
always get the SAME number of steps, batches (order included) and hyper-parameters.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.optimization import get_cosine_schedule_with_warmup

from modeling_dig import DiGConfig, DiGForTextRecognition
from modeling_dig.encoder_initialization import load_pretrained_encoder
from processing.charsets import CHARSET_36, CharsetAdapter
from processing.lazy_lmdb_dataset import STRLmdbDataset
from processing.processing_dig import DiGProcessor
from processing.synthetic import build_synthetic_benchmark
from scene_text_training.pretrain import run_pretraining
from scene_text_training.recipes import Recipe, load_recipe

logger = logging.getLogger("benchmarks.pretrain_effect")

MAX_BUDGET_MINUTES = 30.0


@dataclass
class Settings:
    budget_minutes: float
    num_unlabeled: int
    num_labeled: int
    num_test: int
    pretrain_batch: int
    finetune_batch: int
    finetune_lr: float
    seed: int
    difficulty: str
    patch_size: tuple[int, int] = (32, 4)


def settings_for(
    quick: bool, budget_minutes: float | None, seed: int, patch_size: tuple[int, int] = (32, 4)
) -> Settings:
    if quick:
        return Settings(budget_minutes or 2.0, 400, 160, 100, 16, 16, 1e-3, seed, "clean", patch_size)
    return Settings(budget_minutes or 20.0, 6000, 1000, 500, 32, 32, 1e-3, seed, "clean", patch_size)


def recognizer_config(patch_size: tuple[int, int] = (32, 4)) -> DiGConfig:
    """The recognizer matching the "reduced" pre-training encoder, with a small decoder."""
    return DiGConfig.from_preset(
        "vit-small",
        encoder={
            "hidden_size": 96,
            "num_hidden_layers": 4,
            "num_attention_heads": 3,
            "intermediate_size": 384,
            "patch_size": list(patch_size),
        },
        decoder={"d_model": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "ffn_dim": 256},
    )


normalize_word = CharsetAdapter(CHARSET_36)  # DiG's accuracy protocol: lower-case, keep [0-9a-z]


class LabeledSubset(torch.utils.data.Dataset):
    def __init__(self, dataset: STRLmdbDataset, count: int) -> None:
        self.dataset, self.count = dataset, min(count, len(dataset))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.dataset[index]


def _batches(dataset, batch_size: int, steps: int, seed: int):
    """`steps` batches in a seeded order, cycling epochs (identical for both fine-tuning runs)."""
    generator = torch.Generator().manual_seed(seed)
    produced = 0
    while produced < steps:
        order = torch.randperm(len(dataset), generator=generator).tolist()
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield [dataset[i] for i in order[start : start + batch_size]]
            produced += 1
            if produced >= steps:
                return


def finetune(
    model: DiGForTextRecognition, processor: DiGProcessor, dataset, steps: int, settings: Settings
) -> list[float]:
    """AdamW + warm-up/cosine, plain teacher-forced cross-entropy; returns the loss per step."""
    torch.manual_seed(settings.seed)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.finetune_lr, weight_decay=0.05)
    scheduler = get_cosine_schedule_with_warmup(optimizer, max(1, steps // 10), steps)
    losses = []
    for batch in _batches(dataset, settings.finetune_batch, steps, settings.seed):
        inputs = processor(
            images=[item["image"] for item in batch], text=[item["label"] for item in batch], return_tensors="pt"
        )
        loss = model(pixel_values=inputs["pixel_values"], labels=inputs["labels"]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def accuracy(model: DiGForTextRecognition, processor: DiGProcessor, dataset, batch_size: int = 64) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        pixel_values = processor(images=[item["image"] for item in items], return_tensors="pt")["pixel_values"]
        ids = model.generate(pixel_values=pixel_values)
        texts = processor.batch_decode(ids)
        correct += sum(normalize_word(p) == normalize_word(item["label"]) for p, item in zip(texts, items))
    return 100.0 * correct / len(dataset)


class StepTimes(TrainerCallback):
    """When each optimiser step ended (perf_counter seconds)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter())
        return control


def seconds_per_step(function, steps: int = 2) -> float:
    start = time.perf_counter()
    function(steps)
    return (time.perf_counter() - start) / steps


def run(settings: Settings, work_dir: Path) -> dict[str, Any]:
    started = time.perf_counter()
    budget = min(settings.budget_minutes, MAX_BUDGET_MINUTES) * 60
    data = build_synthetic_benchmark(
        work_dir / "data",
        num_train=settings.num_unlabeled,
        num_val=0,
        num_test=settings.num_test,
        seed=settings.seed,
        difficulty=settings.difficulty,
    )
    train_lmdb, test_lmdb = STRLmdbDataset(data["train"]), STRLmdbDataset(data["test"])
    labeled = LabeledSubset(train_lmdb, settings.num_labeled)
    processor = DiGProcessor()
    logger.info(
        "data ready in %.0f s: %d unlabeled, %d labeled, %d test",
        time.perf_counter() - started,
        len(train_lmdb),
        len(labeled),
        len(test_lmdb),
    )

    def pretrain_recipe(output: Path, steps: int) -> Recipe:
        """The seed's optimiser shape (configs/dig_small_pretrain.yaml) on the reduced ViT, sized for a CPU budget."""
        return load_recipe(None, [
            "model.type=dig_pretraining",
            "model.preset=reduced",
            f"model.config.encoder.patch_size={list(settings.patch_size)}",
            f"data.train=[{data['train']}]",
            # Short CPU runs need a larger peak lr than the paper's 1.5e-4 x 1024 / 256: aim at 1e-3.
            f"optim.base_lr={1e-3 * 256 / settings.pretrain_batch}",
            f"optim.warmup_steps={max(1, steps // 10)}",
            "optim.weight_decay=0.1",
            "optim.no_decay_keywords=[]",
            "optim.min_lr=1e-5",
            f"train.output_dir={output}",
            f"train.per_device_train_batch_size={settings.pretrain_batch}",
            f"train.max_steps={steps}",
            "train.dataloader_num_workers=0",
            "train.save_steps=1000000000",
            f"train.eval_steps={max(1, steps)}",
            f"train.logging_steps={max(1, steps // 10)}",
            "train.use_cpu=true",
            "train.disable_tqdm=true",
            "train.report_to=[]",
            f"train.seed={settings.seed}",
            "train.resume=null",
        ])

    # Calibrate: time a couple of steps of each phase, then share what is left of the budget.
    step_ends = StepTimes()
    run_pretraining(pretrain_recipe(work_dir / "calibrate", 3), callbacks=[step_ends])
    pretrain_time = (step_ends.times[-1] - step_ends.times[0]) / (len(step_ends.times) - 1)
    scratch_probe = DiGForTextRecognition(recognizer_config(settings.patch_size))
    finetune_time = seconds_per_step(lambda n: finetune(scratch_probe, processor, labeled, n, settings), 2)
    # 15% of what is left is kept for the two test-set evaluations and start-up costs.
    remaining = budget - (time.perf_counter() - started)
    pretrain_steps = max(2, int(0.45 * remaining / pretrain_time))
    finetune_steps = max(2, int(0.20 * remaining / finetune_time))
    logger.info(
        "budget %.0f s: %d pre-training steps (%.2f s each), %d fine-tuning steps per run (%.2f s each)",
        budget,
        pretrain_steps,
        pretrain_time,
        finetune_steps,
        finetune_time,
    )

    pretrained = run_pretraining(pretrain_recipe(work_dir / "pretrain", pretrain_steps))
    torch.manual_seed(settings.seed)
    from_pretraining = DiGForTextRecognition(recognizer_config(settings.patch_size))
    report = load_pretrained_encoder(from_pretraining, pretrained.final_model_dir)
    torch.manual_seed(settings.seed)
    from_scratch = DiGForTextRecognition(recognizer_config(settings.patch_size))

    results: dict[str, Any] = {}
    for name, model in (("pretrained", from_pretraining), ("scratch", from_scratch)):
        phase_start = time.perf_counter()
        losses = finetune(model, processor, labeled, finetune_steps, settings)
        results[name] = {
            "test_accuracy": accuracy(model, processor, test_lmdb),
            "final_train_loss": sum(losses[-10:]) / len(losses[-10:]),
            "seconds": time.perf_counter() - phase_start,
        }
        logger.info("%s: accuracy %.2f%%", name, results[name]["test_accuracy"])
    return {
        "settings": asdict(settings),
        "pretrain": {
            "steps": pretrain_steps,
            "first_loss": pretrained.history[0]["loss"],
            "last_loss": pretrained.history[-1]["loss"],
            "last_mim_loss": pretrained.history[-1]["mim_loss"],
            "last_contrastive_loss": pretrained.history[-1]["contrastive_loss"],
            "reconstruction_images": pretrained.reconstruction_images,
            "encoder_tensors_loaded": len(report.loaded),
        },
        "finetune_steps": finetune_steps,
        "results": results,
        "accuracy_gain_points": results["pretrained"]["test_accuracy"] - results["scratch"]["test_accuracy"],
        "total_seconds": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="~2 minute smoke run with tiny data")
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=None,
        help=f"total CPU budget (default 20, quick 2, at most {MAX_BUDGET_MINUTES:g})",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--patch-size",
        default="32,4",
        help="encoder patch HEIGHT,WIDTH (default 32,4: column strips, which a CPU budget can train; DiG's is 4,4)",
    )
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="keep data and checkpoints here (default: a temp dir)"
    )
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/pretrain_effect.json"))
    args = parser.parse_args(argv)
    if args.budget_minutes is not None and not 0 < args.budget_minutes <= MAX_BUDGET_MINUTES:
        parser.error(f"--budget-minutes must be in (0, {MAX_BUDGET_MINUTES:g}]")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        patch_size = tuple(int(v) for v in args.patch_size.split(","))
    except ValueError:
        patch_size = ()
    if len(patch_size) != 2 or min(patch_size) < 1:
        parser.error(f"--patch-size must be HEIGHT,WIDTH (e.g. 32,4 or 4,4), got {args.patch_size!r}")
    settings = settings_for(args.quick, args.budget_minutes, args.seed, patch_size)
    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
        report = run(settings, args.work_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="dig_pretrain_effect_") as folder:
            report = run(settings, Path(folder))
            report["pretrain"]["reconstruction_images"] = []  # deleted with the temp dir
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    print(
        f"fine-tuned from pre-training: {report['results']['pretrained']['test_accuracy']:.2f}%  "
        f"from scratch: {report['results']['scratch']['test_accuracy']:.2f}%  "
        f"({report['finetune_steps']} fine-tuning steps each, {report['pretrain']['steps']} pre-training steps, "
        f"{report['total_seconds'] / 60:.1f} min) -> {args.output}"
    )
    return report


if __name__ == "__main__":
    main()
