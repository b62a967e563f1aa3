"""How the training data path grows with the data: 30k, 300k and 1M records, lazy reader vs the Arrow copy.

    python -m benchmarks.data_scale [--sizes 30000 300000 1000000] [--output data_scale.json]

For each size, in one process: the time to the first training batch (lazy reader with a cold label index, i.e. the
first run ever on that LMDB, and with the index cached; the Arrow copy for the sizes up to --arrow-max), steady
images/s with 0, 1 and 2 DataLoader workers for DiG's training path (DiG augmentation, 32x128), CLIP4STR's
(PARSeq RandAugment, 224x224) and evaluation (no augmentation), the resident memory the reader adds, and the extra
disk each path writes. Batches are drawn in random order, as training reads them.

The LMDBs are made once and cached (--cache-dir): a pool of --pool distinct words rendered by the project's
renderer, then each size written as that pool's records repeated in order. What is measured depends on the number
of records and their byte sizes, which the repetition keeps; rendering 1M distinct images would take 40 minutes of
both cores of the CPU machine this was made on. The whole LMDB fits in the page cache there (5.8 GB at 1M), so
these are warm-cache numbers: on a cold network disk the first batch also waits for its 64 random reads.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/run.py: DataLoader workers share the cores

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("benchmarks.data_scale")

DEFAULT_CACHE = Path.home() / ".cache" / "hf-scene-text" / "data-scale"
# (name, processor family, augmentation): the three ways training and evaluation read records
PATHS = (("dig train", "dig", "dig"), ("clip4str train", "clip4str", "parseq"), ("evaluation", "dig", None))


@dataclass
class SizeResult:
    records: int
    lmdb_mb: float
    first_batch_cold_index_s: float
    """Reader construction (label scan, index written) + DataLoader + first batch, 0 workers."""
    index_build_s: float
    first_batch_s: dict[str, float] = field(default_factory=dict)
    """With the label index cached: "0 workers" / "2 workers" -> seconds to the first batch (construction included,
    median of 5)."""
    images_per_s: dict[str, dict[str, float]] = field(default_factory=dict)
    """path -> "N workers" -> steady images/s."""
    index_memory_mb: float = 0.0
    """The reader's own memory: its record table (8 bytes per record), the same in every worker."""
    peak_rss_mb: float = 0.0
    """The main process's peak resident memory while the throughput loops ran (Linux VmHWM, reset per size)."""
    index_mb: float = 0.0
    arrow_first_batch_s: float | None = None
    arrow_mb: float | None = None


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20


def peak_rss_mb(reset: bool = False) -> float:
    """This process's peak resident memory (VmHWM); `reset` starts a new peak from the current size."""
    if reset:
        Path("/proc/self/clear_refs").write_text("5")
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pool_lmdb(cache: Path, pool: int, seed: int) -> Path:
    """`pool` distinct rendered words (the quickstart's renderer), made once."""
    from .data_path import render_lmdb

    root = cache / f"pool-{pool}-seed{seed}"
    folder = root / "train" / "synth"
    if not (folder / "data.mdb").is_file():
        logger.info("rendering %d images into %s (once)", pool, root)
        render_lmdb(root, pool, seed=seed)
    return folder


def sized_lmdb(cache: Path, pool: Path, records: int) -> Path:
    """An LMDB of `records` records: the pool's, repeated in order. Written atomically by the library's writer."""
    from processing.lmdb_dataset import open_lmdb, read_num_samples
    from processing.lmdb_writer import write_str_lmdb

    target = cache / f"{pool.parents[1].name}-x{records}"
    if (target / "data.mdb").is_file():
        return target
    with open_lmdb(pool).begin() as txn:
        count = read_num_samples(txn, pool)
        source = [(bytes(txn.get(f"image-{i:09d}".encode())), txn.get(f"label-{i:09d}".encode()).decode())
                  for i in range(1, count + 1)]
    logger.info("writing %d records into %s (once)", records, target)
    write_str_lmdb(target, (source[i % count] for i in range(records)))
    return target


def _loader(dataset: Any, collate: Any, workers: int, batch_size: int, seed: int) -> torch.utils.data.DataLoader:
    sampler = torch.utils.data.RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                       collate_fn=collate)


def _collator(family_name: str) -> Any:
    from modeling_clip4str import CLIP4STRConfig
    from modeling_dig import DiGConfig
    from scene_text_training.collators import SceneTextCollator
    from scene_text_training.models import build_processor

    config = DiGConfig.from_preset("vit-small") if family_name == "dig" else CLIP4STRConfig.from_preset("CLIP4STR-B/16")
    return SceneTextCollator(build_processor(family_name, config), report_skips=True)


def _dataset(lmdb: Path, cache_dir: Path, augment: str | None = None, seed: int = 0) -> Any:
    from scene_text_training.collators import SeededAugmentedDataset
    from scene_text_training.data import load_lmdb_split
    from scene_text_training.finetune import build_augmentation

    dataset, _ = load_lmdb_split([lmdb], cache_dir=str(cache_dir))
    if augment is not None:
        dataset = SeededAugmentedDataset(dataset, build_augmentation(augment), seed=seed)
    return dataset


def first_batch_s(make_dataset: Any, collate: Any, workers: int, batch_size: int, repeats: int = 1) -> float:
    """Seconds from nothing to the first batch: reader construction, DataLoader start, one batch (the median of
    `repeats` tries, each drawing another random batch)."""
    times = []
    for repeat in range(repeats):
        start = time.perf_counter()
        loader = _loader(make_dataset(), collate, workers, batch_size, seed=repeat)
        next(iter(loader))
        times.append(time.perf_counter() - start)
        del loader
    return statistics.median(times)


def steady_images_per_s(dataset: Any, collate: Any, workers: int, batch_size: int, batches: int) -> float:
    """Images/s over `batches` batches, after 2 * max(workers, 1) warm-up batches (worker start-up excluded)."""
    iterator = iter(_loader(dataset, collate, workers, batch_size, seed=1))
    for _ in range(2 * max(workers, 1)):
        next(iterator)
    start, images = time.perf_counter(), 0
    for _ in range(batches):
        images += next(iterator)["pixel_values"].shape[0]
    return images / (time.perf_counter() - start)


def measure_size(lmdb: Path, records: int, args: argparse.Namespace, work: Path) -> SizeResult:
    cache_dir = work / f"cache-{records}"
    eval_collate = _collator("dig")
    result = SizeResult(records=records, lmdb_mb=folder_mb(lmdb), first_batch_cold_index_s=0.0, index_build_s=0.0)

    result.first_batch_cold_index_s = first_batch_s(lambda: _dataset(lmdb, cache_dir), eval_collate, 0,
                                                    args.batch_size)
    dataset = _dataset(lmdb, cache_dir)
    result.index_memory_mb = (dataset._numbers.nbytes + dataset._lmdb_ids.nbytes) / 2**20
    del dataset
    shutil.rmtree(cache_dir)  # time the index build alone
    start = time.perf_counter()
    _dataset(lmdb, cache_dir)
    result.index_build_s = time.perf_counter() - start
    result.index_mb = folder_mb(cache_dir)
    for workers in (0, 2):
        result.first_batch_s[f"{workers} workers"] = first_batch_s(lambda: _dataset(lmdb, cache_dir), eval_collate,
                                                                   workers, args.batch_size, repeats=5)
    peak_rss_mb(reset=True)
    for name, family_name, augment in PATHS:
        collate = _collator(family_name)
        dataset = _dataset(lmdb, cache_dir, augment)
        result.images_per_s[name] = {
            f"{workers} workers": steady_images_per_s(dataset, collate, workers, args.batch_size, args.batches)
            for workers in args.workers
        }
    result.peak_rss_mb = peak_rss_mb()
    if records <= args.arrow_max:
        from scene_text_training.data import load_lmdb_split

        arrow_dir = work / f"arrow-{records}"
        start = time.perf_counter()
        arrow, _ = load_lmdb_split([lmdb], cache_dir=str(arrow_dir), reader="arrow")
        next(iter(_loader(arrow, eval_collate, 0, args.batch_size, seed=0)))
        result.arrow_first_batch_s = time.perf_counter() - start
        result.arrow_mb = folder_mb(arrow_dir)
        del arrow
        shutil.rmtree(arrow_dir)
    logger.info("%d records: %s", records, json.dumps(asdict(result)))
    return result


def format_report(results: list[SizeResult], workers: list[int]) -> str:
    """The README's table (markdown)."""
    lines = [
        ("| records | first batch, index cached (0 / 2 workers) | first batch, first run (label scan) | "
         "Arrow copy, first batch | extra disk: index / Arrow | reader memory / peak RSS |"),
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        arrow = f"{r.arrow_first_batch_s:.1f} s" if r.arrow_first_batch_s is not None else "not run"
        arrow_mb = f"{r.arrow_mb:.0f} MB" if r.arrow_mb is not None else "-"
        lines.append(
            f"| {r.records:,} | {r.first_batch_s['0 workers']:.2f} s / {r.first_batch_s['2 workers']:.2f} s | "
            f"{r.first_batch_cold_index_s:.2f} s | {arrow} | {r.index_mb:.1f} MB / {arrow_mb} | "
            f"{r.index_memory_mb:.1f} MB / {r.peak_rss_mb:,.0f} MB |"
        )
    lines += ["", "| records | path | " + " | ".join(f"{w} workers" for w in workers) + " |",
              "| --- | --- | " + " | ".join("---" for _ in workers) + " |"]
    for r in results:
        for name, by_workers in r.images_per_s.items():
            lines.append(f"| {r.records:,} | {name} | "
                         + " | ".join(f"{by_workers[f'{w} workers']:,.0f} img/s" for w in workers) + " |")
    return "\n".join(lines)


def training_demand(gpu_tflops: float, utilization: float) -> list[dict[str, Any]]:
    """Images/s one GPU consumes when training each full-size model: its training FLOPs per image (forward and
    backward of a training step, counted by PyTorch's FlopCounterMode) against `gpu_tflops` x `utilization`."""
    from torch.utils.flop_counter import FlopCounterMode

    from .recognizers import RECOGNIZERS

    demand = []
    for bench_class in RECOGNIZERS.values():
        bench = bench_class("full")
        model = bench.model.train()
        from PIL import Image

        inputs = bench.processor(images=[Image.new("RGB", (128, 32), "white")] * 2, text=["scene", "texts"],
                                 return_tensors="pt")
        counter = FlopCounterMode(display=False)
        with counter:  # one training step's forward and backward, batch 2
            model(pixel_values=inputs["pixel_values"], labels=inputs["labels"]).loss.backward()
        per_image = counter.get_total_flops() / 2
        demand.append({"model": bench.spec.name, "train_gflop_per_image": per_image / 1e9,
                       "images_per_s_per_gpu": gpu_tflops * 1e12 * utilization / per_image})
        del bench, model
    return demand


def format_demand(demand: list[dict[str, Any]], results: list[SizeResult], gpus: int,
                  gpu_tflops: float, utilization: float) -> str:
    """What the measured loader rates mean for MJ+ST on `gpus` GPUs."""
    one_worker = {path: results[-1].images_per_s[path].get("1 workers") for path, _, _ in PATHS}
    path_of = {"dig": "dig train", "clip4str": "clip4str train"}
    lines = [f"Assumed GPU: {gpu_tflops:g} TFLOP/s at {utilization:.0%} utilization.", "",
             "| model | training GFLOP / image | images/s per GPU | x {gpus} GPUs | one worker delivers | workers per GPU |"
             .replace("{gpus}", str(gpus)), "| --- | --- | --- | --- | --- | --- |"]
    for row in demand:
        path = path_of["dig" if row["model"].lower().startswith("dig") else "clip4str"]
        worker = one_worker[path]
        needed = row["images_per_s_per_gpu"]
        workers = f"{needed / worker:.0f}" if worker else "-"
        lines.append(f"| {row['model']} | {row['train_gflop_per_image']:.1f} | {needed:,.0f} | {needed * gpus:,.0f} | "
                     f"{worker:,.0f} img/s ({path}) | {workers} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.data_scale", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[30_000, 300_000, 1_000_000])
    parser.add_argument("--pool", type=int, default=30_000, help="distinct rendered images repeated to each size")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=30, help="timed batches per throughput measurement")
    parser.add_argument("--arrow-max", type=int, default=300_000, help="largest size the Arrow copy is timed at")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where the LMDBs are kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gpus", type=int, default=8, help="GPUs of the training run the demand table is for")
    parser.add_argument("--gpu-tflops", type=float, default=312.0, help="dense bf16 TFLOP/s of one GPU (A100: 312)")
    parser.add_argument("--utilization", type=float, default=0.4, help="fraction of it training reaches")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("processing").setLevel(logging.WARNING)
    import datasets

    datasets.disable_progress_bars()
    args = parse_args(argv)
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    pool = pool_lmdb(args.cache_dir, min(args.pool, max(args.sizes)), args.seed)
    results = []
    with tempfile.TemporaryDirectory(prefix="data-scale-") as work:
        # warm-up: imports, processors and augmentations loaded once, so the first size is not charged for them
        for _, family_name, augment in PATHS:
            first_batch_s(lambda augment=augment: _dataset(pool, Path(work) / "warm-up", augment),
                          _collator(family_name), 0, args.batch_size)
        for records in sorted(args.sizes):
            results.append(measure_size(sized_lmdb(args.cache_dir, pool, records), records, args, Path(work)))
    table = format_report(results, args.workers)
    if 1 in args.workers:
        demand = training_demand(args.gpu_tflops, args.utilization)
        table += "\n\n" + format_demand(demand, results, args.gpus, args.gpu_tflops, args.utilization)
    print(table)
    if args.output is not None:
        args.output.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                           "results": [asdict(r) for r in results], "table": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
