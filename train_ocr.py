"""train_ocr: pre-train, fine-tune, evaluate and read with the DiG / CLIP4STR recognizers.

    train_ocr finetune --config dig_small_finetune data.train=[/data/train] data.val=[/data/val]
    train_ocr evaluate --model outputs/dig --data /data/test --cased --output results.json
    train_ocr read --model outputs/dig word1.png images/
    train_ocr export --model outputs/dig --output outputs/dig-onnx [--quantize int8]
    train_ocr read --model outputs/dig-onnx --runtime onnx word1.png      # onnxruntime on CPU
    train_ocr pretrain --config dig_small_pretrain
    train_ocr quickstart                   # synthetic data -> fine-tune -> evaluate -> read, on CPU

Recipes are YAML files (configs/, or any path); `key=value` arguments override them with dotted keys. Multi-GPU:
`accelerate launch --multi_gpu --num_processes N train_ocr.py finetune ...` (the Trainer handles DDP); multi-process
on CPU (gloo): the same with CUDA_VISIBLE_DEVICES= (`accelerate launch --cpu` starts one process without mpirun).
The logic lives in scene_text_training/; this file only parses and dispatches.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent
CONFIG_DIR = REPO_ROOT / "configs"

logger = logging.getLogger("train_ocr")


def resolve_config(name: str | None) -> Path | None:
    """A recipe path, or the name of a file in configs/ (with or without .yaml)."""
    if name is None:
        return None
    path = Path(name)
    if path.is_file():
        return path
    for candidate in (CONFIG_DIR / name, CONFIG_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    shipped = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise SystemExit(f"error: recipe {name!r} not found (not a file, not in {CONFIG_DIR}); shipped recipes: {shipped}")


def _recipe_help() -> str:
    from scene_text_training.recipes import Recipe, describe

    return "recipe keys (override any with key=value; dotted keys reach nested sections):\n" + "\n".join(
        describe(Recipe)
    )


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (batch sizes, beam widths, sample counts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


TRUST_REMOTE_CODE_HELP = ("let a model folder of another model_type run the Python files it ships (DiG/CLIP4STR "
                          "folders always load with this library's classes, whatever this flag says)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train_ocr", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                        help="logging verbosity (default: info)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    raw = argparse.RawDescriptionHelpFormatter

    def runtime_args(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--runtime", choices=["torch", "onnx"], default="torch",
                         help="torch (default) or onnx: --model is then a `train_ocr export` folder, run with "
                              "onnxruntime on CPU")
        sub.add_argument("--precision", choices=["fp32", "int8"], default=None,
                         help="--runtime onnx: which graphs (default: int8 if exported with --quantize int8)")
        sub.add_argument("--threads", type=positive_int, default=None,
                         help="--runtime onnx: onnxruntime intra-op threads (default: onnxruntime's)")

    def recipe_args(sub: argparse.ArgumentParser, required: bool) -> None:
        sub.add_argument("--config", required=required, help="recipe YAML: a path or a name in configs/")
        sub.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                         help="recipe overrides, e.g. train.max_steps=100 optim.base_lr=3e-4 model.preset=vit-small")

    sub = commands.add_parser("finetune", help="fine-tune DiG or CLIP4STR (model.type) with transformers.Trainer",
                              formatter_class=raw, epilog=_recipe_help(),
                              description="Fine-tune on STR LMDBs; resumes from the last checkpoint with "
                                          "train.resume=auto. Saves model, processor, recipe.yaml, curves PNG.")
    sub.add_argument("--trust-remote-code", action="store_true", help=TRUST_REMOTE_CODE_HELP +
                     " (model.trust_remote_code, for model.init_from)")
    recipe_args(sub, required=False)

    sub = commands.add_parser("pretrain", help="DiG self-supervised pre-training with transformers.Trainer",
                              formatter_class=raw, epilog=_recipe_help(),
                              description="DiG pre-training (model.type=dig_pretraining, the `pretrain` section) on "
                                          "unlabeled LMDBs or image folders; resumes from the last checkpoint with "
                                          "train.resume=auto. Saves output_dir/final, recipe.yaml, pictures, curves.")
    recipe_args(sub, required=True)

    sub = commands.add_parser("evaluate", help="score a saved model on benchmark LMDBs (table + JSON)",
                              formatter_class=raw, epilog=_recipe_help(),
                              description="Per benchmark: accuracy (36-char case-insensitive), 1-NED, mean "
                                          "confidence, samples, skipped; plus the sample-weighted average.")
    sub.add_argument("--model", help="saved model folder (evaluate.model)")
    sub.add_argument("--data", help="PARSeq-style test/ root or one LMDB folder (evaluate.data)")
    sub.add_argument("--cased", action="store_true", default=None, help="add 94-char case-sensitive accuracy")
    sub.add_argument("--output", help="results JSON path (default <model>/results.json)")
    sub.add_argument("--batch-size", type=positive_int, help="evaluation batch (evaluate.batch_size)")
    sub.add_argument("--num-beams", type=positive_int, help="beam width, 1 = greedy (evaluate.num_beams)")
    sub.add_argument("--max-samples", type=positive_int, help="only the first N samples per benchmark")
    sub.add_argument("--normalization", help="image normalisation preset (CLIP4STR: clip | test); default: as saved")
    sub.add_argument("--trust-remote-code", action="store_true", default=None,
                     help=TRUST_REMOTE_CODE_HELP + " (evaluate.trust_remote_code)")
    runtime_args(sub)
    recipe_args(sub, required=False)

    sub = commands.add_parser("read", help="read text from image files or folders")
    sub.add_argument("--model", required=True, help="saved model folder")
    sub.add_argument("images", nargs="+", help="image files and/or folders of images")
    sub.add_argument("--batch-size", type=positive_int, default=64, help="images per generate() call (default 64)")
    sub.add_argument("--num-beams", type=positive_int, default=1, help="beam width (default 1 = greedy)")
    sub.add_argument("--trust-remote-code", action="store_true", help=TRUST_REMOTE_CODE_HELP)
    sub.add_argument("--pipeline", action="store_true", help='go through pipeline("image-to-text") instead of '
                                                             "model.generate")
    sub.add_argument("--output", help="also write the results as JSON here")
    runtime_args(sub)

    sub = commands.add_parser("export", help="export a saved model to ONNX (graphs + processor + manifest)",
                              description="Writes the encoder, decoding-step (uncached and KV-cached) and (CLIP4STR) "
                                          "caption/cross graphs, checked against PyTorch, with config.json, the processor files and "
                                          "onnx_export.json; the folder appears only when complete. Read it with "
                                          "`train_ocr read --runtime onnx`.")
    sub.add_argument("--model", required=True, help="saved model folder (DiG, CLIP4STR or CLIP4STR + Adapter)")
    sub.add_argument("--output", required=True, help="export folder to write")
    sub.add_argument("--quantize", choices=["int8"], default=None,
                     help="also write int8 graphs (dynamic quantization of MatMul/Gemm weights); default: none")

    sub = commands.add_parser("quickstart", help="synthetic data -> fine-tune -> evaluate -> read, on CPU",
                              formatter_class=raw, epilog=_recipe_help(),
                              description="Renders synthetic LMDBs, fine-tunes the reduced model(s) of "
                                          "configs/quickstart_<model>.yaml, prints the test table and reads sample "
                                          "images with pipeline('image-to-text').")
    from scene_text_training.families import FAMILIES

    sub.add_argument("--model", choices=[*FAMILIES, "both"], default="dig",
                     help="which model(s) (default dig; both = dig and clip4str)")
    sub.add_argument("--config", default=None,
                     help="a recipe to run instead of the model's quickstart recipe (a path or a name in configs/), "
                          "e.g. synth_dig_small_cpu (the 2-hour CPU recipe)")
    sub.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides applied to each quickstart recipe")
    return parser


def cmd_finetune(args: argparse.Namespace) -> int:
    from scene_text_training.finetune import run_finetune
    from scene_text_training.recipes import load_recipe

    overrides = list(args.overrides) + (["model.trust_remote_code=true"] if args.trust_remote_code else [])
    recipe = load_recipe(resolve_config(args.config), overrides)
    result = run_finetune(recipe)
    print(json.dumps({"output_dir": str(result.output_dir), "global_step": result.global_step,
                      "train_loss": result.train_loss, **result.eval_metrics}, indent=2, default=str))
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from scene_text_training import pretrain
    from scene_text_training.recipes import load_recipe

    result = pretrain.run_pretraining(load_recipe(resolve_config(args.config), args.overrides))
    print(json.dumps({"output_dir": str(result.output_dir), "global_step": result.global_step,
                      "train_loss": result.train_loss, "final_model_dir": str(result.final_model_dir)}, indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from scene_text_training.evaluation import run_evaluate
    from scene_text_training.recipes import load_recipe

    flags = {"model": args.model, "data": args.data, "cased": args.cased, "output": args.output,
             "batch_size": args.batch_size, "num_beams": args.num_beams, "max_samples": args.max_samples,
             "normalization": args.normalization, "trust_remote_code": args.trust_remote_code}
    overrides = list(args.overrides) + [f"evaluate.{k}={json.dumps(v)}" for k, v in flags.items() if v is not None]
    recipe = load_recipe(resolve_config(args.config), overrides)
    ev = recipe.evaluate
    model_dir = ev.model or recipe.train.output_dir
    if ev.data is None:
        raise SystemExit("error: no benchmark data: pass --data PATH (or evaluate.data=PATH)")
    output = ev.output or str(Path(model_dir) / "results.json")
    run_evaluate(model_dir, ev.data, batch_size=ev.batch_size, cased=ev.cased, num_beams=ev.num_beams,
                 output=output, max_samples=ev.max_samples, normalization=ev.normalization,
                 trust_remote_code=ev.trust_remote_code, **_onnx_options(args))
    return 0


def _onnx_options(args: argparse.Namespace) -> dict:
    """run_evaluate's runtime keywords; --precision / --threads only mean something with --runtime onnx."""
    if args.runtime != "onnx":
        if args.precision is not None or args.threads is not None:
            raise ValueError("--precision and --threads apply to --runtime onnx only")
        return {}
    return {"runtime": "onnx", "precision": args.precision, "threads": args.threads}


def cmd_read(args: argparse.Namespace) -> int:
    from scene_text_training.evaluation import default_device
    from scene_text_training.models import load_saved
    from scene_text_training.reading import collect_images, read_images, read_with_pipeline

    options = _onnx_options(args)
    if options:
        from scene_text_training.onnx_runtime import read_images_onnx, read_manifest

        if args.pipeline or args.num_beams != 1 or args.trust_remote_code:
            raise ValueError("--runtime onnx decodes greedily with its own loop: drop --pipeline, --num-beams and "
                             "--trust-remote-code")
        read_manifest(args.model)  # a model folder instead of an export is reported before any image is read
    paths = collect_images(args.images)
    if options:
        results = read_images_onnx(args.model, paths, batch_size=args.batch_size, threads=options["threads"],
                                   precision=options["precision"])
    elif args.pipeline:
        results = read_with_pipeline(args.model, paths, device=default_device(),
                                     trust_remote_code=args.trust_remote_code)
    else:
        model, processor, _ = load_saved(args.model, trust_remote_code=args.trust_remote_code)
        model.to(default_device())
        results = read_images(model, processor, paths, batch_size=args.batch_size, num_beams=args.num_beams)
    for row in results:
        confidence = "-" if row["confidence"] is None else f"{row['confidence']:.4f}"
        print(f"{row['file']}\t{row['text']}\t{confidence}")
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from scene_text_training.onnx_export import export_onnx

    folder = export_onnx(args.model, args.output, quantize=args.quantize)
    print(f"ONNX export written to {folder}")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from scene_text_training.families import family
    from scene_text_training.quickstart import run_quickstart

    if args.config is not None and args.model == "both":
        raise SystemExit("error: --config runs one recipe; pass it without --model both")
    models = ["dig", "clip4str"] if args.model == "both" else [args.model]
    for name in models:
        start = time.time()
        config = resolve_config(args.config) if args.config is not None else resolve_config(family(name).quickstart_recipe)
        summary = run_quickstart(config, args.overrides)
        summary["wall_time_s"] = round(time.time() - start, 1)
        print(json.dumps(summary, indent=2, default=str))
    return 0


COMMANDS = {"finetune": cmd_finetune, "pretrain": cmd_pretrain, "evaluate": cmd_evaluate, "read": cmd_read,
            "export": cmd_export, "quickstart": cmd_quickstart}


USER_ERRORS = (ValueError, OSError, KeyError, FloatingPointError)
"""What a bad recipe, path, file or setting raises (RecipeError is a ValueError): reported in one line, exit 2."""


def one_line(error: BaseException) -> str:
    """The error's message on one line (a KeyError's without the quotes repr adds)."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return "; ".join(line.strip() for line in text.splitlines() if line.strip()) or type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return COMMANDS[args.command](args)
    except USER_ERRORS as err:
        if args.log_level == "debug":
            raise
        print(f"error: {one_line(err)} (--log-level debug shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
