"""Speed and memory of DiG-Small and CLIP4STR-B/16, side by side, against the faithful uncached reference.

    python -m benchmarks.run [--quick] [--output bench.json]

One process measures, on the same random full-size weights and the same images: greedy decoding with the whole
25-character budget (cached vs uncached, eager vs sdpa attention) at batch 1 and a large batch, the encoder's
FLOP/s as a fraction of a plain fp32 matmul measured in the same run, one training step per batch size, peak
memory of each, and the data path (LMDB -> processor -> batch with 0/1/2 DataLoader workers) against the
quickstart model's training-step consumption. Every number is the median of several repeats after warm-up.
On a GPU it adds bf16/fp16 and torch.compile rows; without one those rows are skipped with a note.
"""

from __future__ import annotations

import os

# Waiting OpenMP threads sleep instead of spinning. On a shared CPU (other processes on the same cores) spinning
# threads burn the time slices their siblings need, and small-op loops like cached decoding slow down 3-6x
# (measured: DiG-Small b4 uncached 20-36 s with spinning, 5.3 s passive). Must be set before torch loads OpenMP;
# an explicit OMP_WAIT_POLICY in the environment wins. Recorded in the report's meta.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import gc
import logging
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from .data_path import measure_loader, render_lmdb
from .flops import count_flops, matmul_reference
from .onnx_serving import bench_onnx, onnx_ratios
from .recognizers import RECOGNIZERS, RecognizerBench, benchmark_images
from .report import Report, Row, check, format_table
from .timing import Timing, configure_malloc_for_measurement, measure

logger = logging.getLogger("benchmarks.run")

QUICKSTART_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "quickstart_dig.yaml"


@dataclass
class Plan:
    """What one run measures. `plan_for` gives the three standard plans (full, --quick, tiny for tests)."""

    size: str = "full"
    quick: bool = False
    models: tuple[str, ...] = ("dig", "clip4str")
    sections: tuple[str, ...] = ("encoder", "decode", "train_step", "data_path", "onnx")
    onnx_batch_sizes: tuple[int, ...] = (1, 16, 64)
    """The `onnx` section (benchmarks/onnx_serving.py): PyTorch vs ONNX fp32 vs ONNX int8 recognition."""
    onnx_uncached_max_batch: int | None = 1
    """The uncached ONNX loop (a diagnostic row) is timed only up to this batch size (None: at every size)."""
    batch_sizes: dict[str, tuple[int, ...]] = field(default_factory=lambda: {"dig": (1, 64), "clip4str": (1, 16, 64)})
    train_batch_sizes: dict[str, tuple[int, ...]] = field(default_factory=lambda: {"dig": (1, 64), "clip4str": (1, 16)})
    """CLIP4STR-B trains at 16 at most here: a b64 PLM step (6 permutations x 2 decoders) holds ~8 GB of activations
    and takes minutes on 2 shared cores; pass a larger size on a bigger machine."""
    eager_batch_sizes: dict[str, tuple[int, ...]] | None = field(
        default_factory=lambda: {"dig": (1, 64), "clip4str": (1, 16)}
    )
    """Per model, the batch sizes at which eager attention is timed too (None: all); sdpa is always timed."""
    eager_uncached_max_batch: int = 1
    """eager attention is measured cached, and uncached only up to this batch size."""
    warmup: int = 1
    repeats: int = 3
    large_batch: int = 16
    """From this batch size on, `large_warmup` / `large_repeats` apply (a call takes tens of seconds)."""
    large_warmup: int = 1
    large_repeats: int = 2
    matmul_size: int = 2048
    data_images: int = 1024
    data_workers: tuple[int, ...] = (0, 1, 2)
    data_epochs: int = 2
    render_workers: int | None = None
    """Processes rendering the synthetic LMDB (None: the renderer's default; 1: in-process, for tests)."""
    quickstart_recipe: Path | None = QUICKSTART_RECIPE
    gpu_dtypes: tuple[str, ...] = ("bfloat16", "float16")

    def timing_for(self, batch_size: int) -> tuple[int, int]:
        return (self.large_warmup, self.large_repeats) if batch_size >= self.large_batch else (self.warmup, self.repeats)


def plan_for(quick: bool = False, size: str = "full") -> Plan:
    """The full plan (issue 7), the --quick plan (same models, small batches, few repeats: about a minute on an
    idle 2-core machine) or, with size="tiny", the seconds-long plan of the smoke test."""
    if size == "tiny":
        return Plan(
            size="tiny", quick=True, batch_sizes={"dig": (1, 2), "clip4str": (1, 2)},
            train_batch_sizes={"dig": (2,), "clip4str": (2,)}, eager_batch_sizes=None, eager_uncached_max_batch=0,
            onnx_batch_sizes=(1, 2), onnx_uncached_max_batch=None,
            warmup=0, repeats=1,
            large_warmup=0,
            large_repeats=1, matmul_size=256, data_images=16, data_workers=(0,), data_epochs=1,
            render_workers=1, quickstart_recipe=None,
        )
    if quick:
        return Plan(
            size=size, quick=True, batch_sizes={"dig": (1, 4), "clip4str": (1, 4)},
            train_batch_sizes={"dig": (4,), "clip4str": (2,)}, eager_batch_sizes={"dig": (1,), "clip4str": (1,)},
            eager_uncached_max_batch=0,
            warmup=1, repeats=2, large_batch=4, large_warmup=1, onnx_batch_sizes=(1, 4),
            large_repeats=2, data_images=128, data_workers=(0, 2), data_epochs=1,
        )
    return Plan(size=size)


# ----------------------------------------------------------------------------------------------------- helpers
def _row(section: str, model: str, batch_size: int, mode: str, attention: str | None, timing: Timing,
         dtype: str = "float32", device: str = "cpu", **extra: Any) -> Row:
    return Row(
        section=section, model=model, batch_size=batch_size, mode=mode, attention=attention, dtype=dtype,
        device=device, median_s=timing.median_s, images_per_s=batch_size / timing.median_s,
        latency_ms=1000 * timing.median_s, samples_s=timing.samples_s, cpu_s=timing.cpu_median_s, peak_memory_mb=timing.peak_memory_mb,
        memory_delta_mb=timing.memory_delta_mb, memory_kind=timing.memory_kind, extra=extra,
    )


def _ratio(report: Report, name: str, numerator: Row | None, denominator: Row | None, **extra: Any) -> None:
    if numerator is None or denominator is None:
        return
    by_cpu = None
    if numerator.cpu_s and denominator.cpu_s:  # images per CPU-second, the same ratio less the contention
        by_cpu = (numerator.batch_size / numerator.cpu_s) / (denominator.batch_size / denominator.cpu_s)
    report.ratios.append({
        "name": name, "value": numerator.images_per_s / denominator.images_per_s, "value_cpu": by_cpu,
        "numerator": f"{numerator.model} b{numerator.batch_size} {numerator.section} {numerator.mode} {numerator.attention}",
        "denominator": f"{denominator.model} b{denominator.batch_size} {denominator.section} {denominator.mode} "
                       f"{denominator.attention}",
        **extra,
    })


def _meta(plan: Plan) -> dict[str, Any]:
    import transformers

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = next((row for row in Path("/proc/cpuinfo").read_text().splitlines() if row.startswith("flags")), "")
        isa = "avx512" if "avx512f" in flags else ("avx2" if "avx2" in flags else "other")
    except OSError:
        isa = "unknown"
    return {
        "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks.run", *sys.argv[1:]]),
        "quick": plan.quick,
        "size": plan.size,
        "wall_s": None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "num_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "cpu": cpu,
        "cpu_isa": isa,
        "cpu_count": os.cpu_count(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "plan": {k: (str(v) if isinstance(v, Path) else v) for k, v in plan.__dict__.items()},
    }


# ----------------------------------------------------------------------------------------------------- sections
def bench_encoder(report: Report, bench: RecognizerBench, pixel_values: torch.Tensor, plan: Plan) -> None:
    """Encoder forward per batch size; at each, FLOPs counted once and FLOP/s relative to the matmul reference."""
    bench.set_attention("sdpa")
    for batch_size in plan.batch_sizes[bench.family]:
        batch = pixel_values[:batch_size]
        flops = count_flops(lambda: bench.encode(batch))
        warmup, repeats = plan.timing_for(batch_size)
        timing = measure(lambda: bench.encode(batch), warmup=warmup, repeats=repeats)
        # The matmul ceiling is re-measured right after: on shared cores the load drifts during a run, and the
        # fraction must compare the encoder with what the cores gave at that moment.
        ceiling = matmul_reference(plan.matmul_size, repeats=3)["flop_per_s"]
        flop_per_s = flops / timing.median_s
        report.add(_row(
            "encoder", bench.name, batch_size, "forward", bench.attention, timing,
            flops=flops, gflop_per_s=flop_per_s / 1e9, flop_fraction_of_matmul=flop_per_s / ceiling,
            matmul_gflop_per_s=ceiling / 1e9,
            flop_fraction_of_run_matmul=flop_per_s / report.matmul["flop_per_s"] if report.matmul else None,
        ))


def bench_decode(report: Report, bench: RecognizerBench, pixel_values: torch.Tensor, plan: Plan) -> None:
    """Greedy recognition with the full 25-character budget: cached vs uncached, sdpa vs eager, same weights."""
    for batch_size in plan.batch_sizes[bench.family]:
        batch = pixel_values[:batch_size]
        warmup, repeats = plan.timing_for(batch_size)
        encoder_row = report.find(section="encoder", model=bench.name, batch_size=batch_size)
        eager = plan.eager_batch_sizes is None or batch_size in plan.eager_batch_sizes.get(bench.family, ())
        for attention in ("sdpa", "eager") if eager else ("sdpa",):
            bench.set_attention(attention)
            modes = [True, False] if attention == "sdpa" or batch_size <= plan.eager_uncached_max_batch else [True]
            ids: dict[bool, torch.Tensor] = {}
            rows: dict[bool, Row] = {}
            for use_cache in modes:
                result: dict[str, torch.Tensor] = {}

                def call() -> None:
                    result["ids"] = bench.decode_full_budget(batch, use_cache=use_cache)

                timing = measure(call, warmup=warmup, repeats=repeats)
                ids[use_cache] = result["ids"]
                extra: dict[str, Any] = {"new_tokens": int(result["ids"].shape[1])}
                if encoder_row is not None and attention == "sdpa":
                    # the decoding loops' share of the time: what the cache can speed up
                    extra["decoder_time_fraction"] = max(0.0, 1.0 - encoder_row.median_s / timing.median_s)
                rows[use_cache] = _row("decode", bench.name, batch_size, "cached" if use_cache else "uncached",
                                       attention, timing, **extra)
                report.add(rows[use_cache])
            if False in rows:
                identical = bool(torch.equal(ids[True], ids[False]))
                _ratio(report, f"{bench.name} b{batch_size} {attention}: cached / uncached", rows[True], rows[False],
                       ids_identical=identical, batch_size=batch_size, model=bench.name, attention=attention)
                if rows[True].memory_delta_mb is not None and rows[False].memory_delta_mb:
                    report.ratios[-1]["memory_delta_ratio"] = rows[True].memory_delta_mb / rows[False].memory_delta_mb
        cached_sdpa = report.find(section="decode", model=bench.name, batch_size=batch_size, mode="cached",
                                  attention="sdpa")
        cached_eager = report.find(section="decode", model=bench.name, batch_size=batch_size, mode="cached",
                                   attention="eager")
        _ratio(report, f"{bench.name} b{batch_size} cached: sdpa / eager", cached_sdpa, cached_eager,
               batch_size=batch_size, model=bench.name)
    bench.set_attention("sdpa")


def bench_train_step(report: Report, bench: RecognizerBench, inputs: dict[str, torch.Tensor], plan: Plan) -> None:
    """One optimizer step (forward + backward + AdamW) per batch size; the first call allocates the AdamW state."""
    bench.set_attention("sdpa")
    optimizer = bench.optimizer()
    for batch_size in plan.train_batch_sizes[bench.family]:
        pixel_values, labels = inputs["pixel_values"][:batch_size], inputs["labels"][:batch_size]
        warmup, repeats = plan.timing_for(batch_size)
        losses: list[float] = []

        def step(pixel_values=pixel_values, labels=labels, losses=losses) -> None:
            losses.append(bench.train_step(pixel_values, labels, optimizer))

        timing = measure(step, warmup=max(warmup, 1), repeats=repeats)
        report.add(_row("train_step", bench.name, batch_size, "fwd+bwd+adamw", bench.attention, timing,
                                last_loss=losses[-1]))


def bench_gpu(report: Report, bench: RecognizerBench, pixel_values: torch.Tensor, plan: Plan) -> None:
    """bf16/fp16 decoding and a torch.compile'd encoder on the GPU, at the largest batch size."""
    device = torch.device("cuda")
    batch_size = max(plan.batch_sizes[bench.family])
    warmup, repeats = plan.timing_for(batch_size)
    for dtype_name in plan.gpu_dtypes:
        dtype = getattr(torch, dtype_name)
        if dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
            report.skip(f"{bench.name} {dtype_name}", "this GPU does not support bfloat16")
            continue
        bench.to(device, dtype)
        batch = pixel_values[:batch_size].to(device, dtype)
        for use_cache in (True, False):
            timing = measure(lambda: bench.decode_full_budget(batch, use_cache=use_cache), warmup=warmup,
                             repeats=repeats, device=device)
            report.add(_row("decode", bench.name, batch_size, "cached" if use_cache else "uncached",
                                    bench.attention, timing, dtype=dtype_name, device="cuda"))
        compiled = torch.compile(bench.encode)
        timing = measure(lambda: compiled(batch), warmup=max(warmup, 2), repeats=repeats, device=device)
        report.add(_row("encoder", bench.name, batch_size, "forward", bench.attention, timing,
                                dtype=dtype_name, device="cuda", compiled=True))
    bench.to("cpu", torch.float32)
    torch.cuda.empty_cache()


def bench_data_path(report: Report, plan: Plan, workdir: Path) -> None:
    """LMDB -> processor -> batch throughput per worker count, and the quickstart model's training step."""
    from scene_text_training.collators import SceneTextCollator

    recipe = None
    if plan.quickstart_recipe is not None:
        if plan.quickstart_recipe.is_file():
            from scene_text_training.recipes import load_recipe

            recipe = load_recipe(plan.quickstart_recipe)
        else:
            report.skip("quickstart training step", f"{plan.quickstart_recipe} not found: no consumption to compare")
    batch_size = recipe.train.per_device_train_batch_size if recipe is not None else 64

    start = time.perf_counter()
    lmdb_folder = render_lmdb(workdir / "lmdb", plan.data_images, workers=plan.render_workers)
    from scene_text_training.data import load_lmdb_split

    # the fine-tuning recipe's loader; the Arrow cache stays in the temporary folder and goes away with it
    dataset, skipped = load_lmdb_split([lmdb_folder], cache_dir=str(workdir / "arrow"))
    if skipped:
        logger.warning("data path: %d synthetic records skipped (see the log for the reasons)", skipped)
    render_s = time.perf_counter() - start

    if recipe is not None:
        from scene_text_training.finetune import build_augmentation
        from scene_text_training.models import build_model

        model, processor = build_model(recipe.model)
        augment = build_augmentation(recipe.data.augment)
        if augment is not None:
            from scene_text_training.collators import augment_transform

            dataset = dataset.with_transform(augment_transform(augment))
        name = f"quickstart ({recipe.model.type}:{recipe.model.preset})"
    else:
        from processing.processing_dig import DiGProcessor

        model, processor, augment, name = None, DiGProcessor(), None, "DiGProcessor"
    collator = SceneTextCollator(processor)

    for workers in plan.data_workers:
        result = measure_loader(dataset, collator, batch_size=batch_size, workers=workers, epochs=plan.data_epochs)
        timing = Timing(median_s=batch_size / result.images_per_s, samples_s=result.epoch_s)
        report.add(_row(
            "data_path", name, batch_size, f"workers={workers}", None, timing,
            first_batch_s=result.first_batch_s, images_per_epoch=result.num_images,
            augment=recipe.data.augment if recipe is not None else "none", render_and_cache_s=render_s,
        ))

    if model is not None:
        batch = collator([dataset[i] for i in range(min(batch_size, len(dataset)))])
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def step() -> None:
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        warmup, repeats = plan.timing_for(1)
        timing = measure(step, warmup=max(warmup, 1), repeats=repeats)
        report.add(_row("train_step", name, batch["pixel_values"].shape[0], "fwd+bwd+adamw",
                                model.config._attn_implementation, timing, note="data-path consumer"))
        del model, optimizer


# ----------------------------------------------------------------------------------------------------- targets
def evaluate_targets(report: Report, plan: Plan) -> None:
    def decode_ratio(model: str, batch_size: int) -> tuple[float | None, str]:
        for ratio in report.ratios:
            if ratio["name"] == f"{model} b{batch_size} sdpa: cached / uncached":
                return ratio["value"], "" if ratio["ids_identical"] else "cached and uncached ids DIFFER"
        return None, f"batch {batch_size} not measured"

    families = {family: RECOGNIZERS[family].presets[plan.size].name for family in plan.models}
    decode, encoder = "decode" in plan.sections, "encoder" in plan.sections
    if "dig" in families and decode:
        batch = max(plan.batch_sizes["dig"])
        value, note = decode_ratio(families["dig"], batch)
        report.targets.append(check(f"{families['dig']} b{batch} greedy cached / uncached (target at b64)",
                                    value, 3.0, note=note))
    if "clip4str" in families and decode:
        for batch in sorted(plan.batch_sizes["clip4str"])[1:]:
            value, note = decode_ratio(families["clip4str"], batch)
            report.targets.append(check(f"{families['clip4str']} b{batch} cached / uncached (target at b16, b64)",
                                        value, 1.3, note=note))
    for family, name in families.items():
        batch = max(plan.batch_sizes[family])
        row = report.find(section="encoder", model=name, batch_size=batch, dtype="float32")
        if encoder:
            report.targets.append(check(
                f"{name} encoder b{batch} FLOP/s / matmul FLOP/s (target at b64)",
                row.extra["flop_fraction_of_matmul"] if row is not None else None, 0.70,
            ))
        cached = report.find(section="decode", model=name, batch_size=batch, mode="cached", attention="sdpa",
                             dtype="float32")
        uncached = report.find(section="decode", model=name, batch_size=batch, mode="uncached", attention="sdpa",
                               dtype="float32")
        if cached is not None and uncached is not None and cached.peak_memory_mb and uncached.peak_memory_mb:
            report.targets.append(check(
                f"{name} b{batch} decode peak memory cached / uncached", cached.peak_memory_mb / uncached.peak_memory_mb,
                1.05, "<=", note=f"process peak {cached.peak_memory_mb:.0f} vs {uncached.peak_memory_mb:.0f} MB; "
                f"extra over baseline {cached.memory_delta_mb or 0:.0f} vs {uncached.memory_delta_mb or 0:.0f} MB",
            ))
    if "data_path" in plan.sections:
        workers = max(plan.data_workers)
        loader = next((r for r in report.rows if r.section == "data_path" and r.mode == f"workers={workers}"), None)
        consumer = next((r for r in report.rows if r.extra.get("note") == "data-path consumer"), None)
        value = loader.images_per_s / consumer.images_per_s if loader and consumer else None
        report.targets.append(check(f"data path ({workers} workers) / quickstart training step images/s", value, 5.0,
                                    note="" if value is not None else "quickstart training step not measured"))


# ----------------------------------------------------------------------------------------------------- main
def run_benchmark(plan: Plan, log: bool = True) -> Report:
    """Run every section of `plan` in this process and return the report (ratios and targets included)."""
    started = time.perf_counter()
    say = (lambda message: print(message)) if log else (lambda message: None)
    report = Report(meta=_meta(plan), progress=say)
    report.meta["malloc_threshold_pinned"] = configure_malloc_for_measurement()

    report.matmul = matmul_reference(plan.matmul_size)
    say(f"[bench] matmul {plan.matmul_size}^2 fp32: {report.matmul['gflop_per_s']:.1f} GFLOP/s")

    # The data path first: DataLoader workers fork a process that does not yet hold the big models.
    if "data_path" in plan.sections:
        with tempfile.TemporaryDirectory(prefix="bench_data_") as workdir:
            bench_data_path(report, plan, Path(workdir))
        say("[bench] data path done")

    gpu = torch.cuda.is_available()
    if not gpu:
        report.skip("bf16 / fp16 / torch.compile rows", "no CUDA device in this run (CPU float32 only); the code "
                    "path runs when torch.cuda.is_available()")
    model_sections = {"encoder", "decode", "train_step", "onnx"}.intersection(plan.sections)
    for family in plan.models if model_sections else ():
        build_start = time.perf_counter()
        bench = RECOGNIZERS[family](plan.size)
        report.models[bench.name] = {
            "family": family, "preset": bench.spec.preset, "parameters": bench.num_parameters,
            "trainable_parameters": sum(p.numel() for p in bench.model.parameters() if p.requires_grad),
            "build_s": time.perf_counter() - build_start,
        }
        largest = max(max(plan.batch_sizes[family]), max(plan.train_batch_sizes[family]), max(plan.onnx_batch_sizes))
        images, words = benchmark_images(largest)
        inputs = bench.inputs(images, words)
        say(f"[bench] {bench.name}: {bench.num_parameters / 1e6:.1f}M parameters")
        if "encoder" in plan.sections:
            bench_encoder(report, bench, inputs["pixel_values"], plan)
        if "decode" in plan.sections:
            bench_decode(report, bench, inputs["pixel_values"], plan)
        if "onnx" in plan.sections:  # CPU serving: PyTorch vs ONNX fp32 vs int8 on these weights
            bench_onnx(report, bench, inputs["pixel_values"], plan.onnx_batch_sizes, plan.timing_for, _row,
                       uncached_max_batch=plan.onnx_uncached_max_batch)
            onnx_ratios(report, _ratio, bench.name, plan.onnx_batch_sizes)
        if gpu:
            bench_gpu(report, bench, inputs["pixel_values"], plan)
        if "train_step" in plan.sections:  # last: it changes the weights
            bench_train_step(report, bench, inputs, plan)
        say(f"[bench] {bench.name} done")
        del bench, inputs
        gc.collect()

    evaluate_targets(report, plan)
    report.meta["wall_s"] = time.perf_counter() - started
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small batches and few repeats: about a minute")
    parser.add_argument("--output", default="bench.json", help="where to write the JSON report")
    parser.add_argument("--size", choices=("full", "tiny"), default="full",
                        help="full = DiG-Small and CLIP4STR-B/16 (default); tiny = test-size models")
    parser.add_argument("--models", nargs="+", choices=sorted(RECOGNIZERS), default=None)
    parser.add_argument("--sections", nargs="+", choices=("encoder", "decode", "train_step", "data_path", "onnx"),
                        default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--sdpa-only", action="store_true", help="skip the eager-attention decode rows")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # attention-switch notices would drown the table
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    plan = plan_for(quick=args.quick, size=args.size)
    if args.models:
        plan.models = tuple(args.models)
    if args.sections:
        plan.sections = tuple(args.sections)
    if args.sdpa_only:
        plan.eager_batch_sizes = {model: () for model in RECOGNIZERS}
    report = run_benchmark(plan)
    print()
    print(format_table(report))
    path = report.write_json(args.output)
    print(f"\nwall time {report.meta['wall_s']:.1f} s; JSON written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
