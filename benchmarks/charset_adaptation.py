"""Adapting a trained English recognizer to a new alphabet, against training the same architecture from scratch.

    bash scripts/quickstart.sh                      # the English model: outputs/quickstart/dig
    python -m benchmarks.charset_adaptation --model outputs/quickstart/dig --english-test outputs/quickstart/data/test

The new charset is configs/charsets/latin_greek.txt: the 94 ASCII characters plus accented Latin letters (French,
Spanish, German, Portuguese, Italian, Nordic), a few symbols (« » ¿ ¡ € °) and Greek with its accents, 230 in all.
The renderer draws words of processing/wordlist_latin_greek.txt (held-out words for val/test) and, for half the
training images, random strings of the charset's letters and digits, at the quickstart's `clean` level.

Both runs train on the same data for the same number of steps (a wall-clock cap stops either one if it runs past
`--max-minutes`): the new renders plus the quickstart's English training split (so that English is not simply
forgotten). "adapted" starts from the English model moved onto the new charset with
`scene_text_training.adapt_to_charset` (shared characters keep their rows, accented letters start from their base
letter); "scratch" starts from random weights. Reported: held-out accuracy on the new words, English accuracy of the
English model (before) and of both runs (after), each with `train_ocr evaluate`'s protocol of the model's charset.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/run.py

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

REPO = Path(__file__).resolve().parents[1]
CHARSET_FILE = REPO / "configs" / "charsets" / "latin_greek.txt"
WORDLIST = REPO / "processing" / "wordlist_latin_greek.txt"
RECIPE = REPO / "configs" / "quickstart_dig.yaml"


class StopAfter(TrainerCallback):
    """Ends training once `seconds` of wall-clock have passed: the budget's hard cap."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.perf_counter()
        self.stopped_at: int | None = None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.stopped_at is None and time.perf_counter() - self.start > self.seconds:
            self.stopped_at = state.global_step
            control.should_training_stop = True
        return control


def render(root: Path, num_train: int, num_val: int, num_test: int) -> dict[str, Path]:
    """The Latin + Greek splits (rendered once; the synthetic.json marker says with which settings)."""
    from processing.charsets import read_charset
    from processing.synthetic import build_synthetic_benchmark

    marker = root / "charset_adaptation.json"
    wanted = {"num_train": num_train, "num_val": num_val, "num_test": num_test, "charset": CHARSET_FILE.read_text(
        encoding="utf-8"), "wordlist": WORDLIST.read_text(encoding="utf-8")}
    paths = {split: root / split for split in ("train", "val", "test")}
    if marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == wanted:
        return paths
    marker.unlink(missing_ok=True)
    build_synthetic_benchmark(root, num_train=num_train, num_val=num_val, num_test=num_test, seed=0,
                              difficulty="clean", charset=read_charset(str(CHARSET_FILE)), wordlist=WORDLIST,
                              random_fraction=0.5, overwrite=True, name="latin_greek")
    partial = marker.with_name(f".{marker.name}.tmp")
    partial.write_text(json.dumps(wanted), encoding="utf-8")
    os.replace(partial, marker)  # complete or absent: a killed render is rendered again
    return paths


def train(name: str, overrides: list[str], output_dir: Path, max_minutes: float) -> dict[str, Any]:
    """One run of the quickstart recipe with `overrides`; returns its steps and wall-clock time."""
    from scene_text_training.finetune import run_finetune
    from scene_text_training.recipes import load_recipe

    recipe = load_recipe(RECIPE, [*overrides, f"train.output_dir={output_dir}", "train.report_to=[]",
                                  "train.disable_tqdm=true", "train.resume=null"])
    stop = StopAfter(60 * max_minutes)
    start = time.perf_counter()
    result = run_finetune(recipe, callbacks=[stop])
    seconds = time.perf_counter() - start
    print(f"{name}: {result.global_step} steps in {seconds / 60:.1f} min", flush=True)
    return {"steps": result.global_step, "train_minutes": round(seconds / 60, 2),
            "stopped_by_time_cap": stop.stopped_at is not None}


def score(model_dir: Path, data: Path, charset: str) -> dict[str, float]:
    """`train_ocr evaluate`'s scores of one split (percentages) under the protocol of the new `charset` for every
    model: for English labels it is the 36-character protocol; the English model's own protocol would instead fold
    "é" to "e" and drop the Greek words."""
    from scene_text_training.evaluation import discover_benchmarks, evaluate_benchmarks
    from scene_text_training.models import load_saved

    model, processor, _ = load_saved(model_dir)
    results = evaluate_benchmarks(model, processor, discover_benchmarks(data), batch_size=250, disable_tqdm=True,
                                  max_label_length=model.config.max_label_length, charset=charset)
    result = next(iter(results.values()))
    return {"accuracy": round(100 * result.accuracy, 2), "one_minus_ned": round(100 * result.one_minus_ned, 2),
            "num_samples": result.num_samples}


def run(model: Path, english_train: Path, english_test: Path, workdir: Path, steps: int, max_minutes: float,
        num_train: int, num_val: int, num_test: int, adapted_lr: float, scratch_lr: float,
        warmup_steps: int) -> dict[str, Any]:
    started = time.perf_counter()
    data = render(workdir / "data", num_train, num_val, num_test)
    render_minutes = (time.perf_counter() - started) / 60
    shared = [f"model.charset={CHARSET_FILE}", f"data.train=[{data['train']},{english_train}]",
              f"data.val=[{data['val']}]", "data.synthetic=null", f"train.max_steps={steps}",
              f"optim.warmup_steps={warmup_steps}", "train.eval_steps=null", "train.save_steps=null"]
    runs: dict[str, Any] = {}
    runs["adapted"] = train("adapted", [*shared, f"model.init_from={model}", f"optim.base_lr={adapted_lr}"],
                            workdir / "adapted", max_minutes)
    runs["scratch"] = train("scratch", [*shared, f"optim.base_lr={scratch_lr}"], workdir / "scratch", max_minutes)
    from processing.charsets import read_charset

    charset = read_charset(str(CHARSET_FILE))
    rows = {"english model (before)": {"latin_greek": score(model, data["test"], charset),
                                       "english": score(model, english_test, charset)}}
    for name in ("adapted", "scratch"):
        rows[name] = {"latin_greek": score(workdir / name, data["test"], charset),
                      "english": score(workdir / name, english_test, charset), **runs[name]}
    return {
        "command": "python -m benchmarks.charset_adaptation " + " ".join(sys.argv[1:]),
        "charset": str(CHARSET_FILE.relative_to(REPO)), "charset_size": len(CHARSET_FILE.read_text(
            encoding="utf-8").splitlines()),
        "wordlist": str(WORDLIST.relative_to(REPO)), "renders": {"train": num_train, "val": num_val, "test": num_test},
        "render_minutes": round(render_minutes, 2), "steps": steps, "max_minutes": max_minutes,
        "optim": {"adapted_base_lr": adapted_lr, "scratch_base_lr": scratch_lr, "warmup_steps": warmup_steps},
        "cpu_threads": __import__("torch").get_num_threads(), "rows": rows,
    }


def format_table(report: dict[str, Any]) -> str:
    lines = ["| model | steps | training (min) | Latin + Greek held-out words | 1 - NED | English test | 1 - NED |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in report["rows"].items():
        lines.append(f"| {name} | {row.get('steps', '-')} | {row.get('train_minutes', '-')} | "
                     f"{row['latin_greek']['accuracy']:.2f} | {row['latin_greek']['one_minus_ned']:.2f} | "
                     f"{row['english']['accuracy']:.2f} | {row['english']['one_minus_ned']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=Path("outputs/quickstart/dig"), help="the English model")
    parser.add_argument("--english-train", type=Path, default=Path("outputs/quickstart/data/train"))
    parser.add_argument("--english-test", type=Path, default=Path("outputs/quickstart/data/test"))
    parser.add_argument("--workdir", type=Path, default=Path("outputs/charset_adaptation"))
    parser.add_argument("--steps", type=int, default=3000, help="optimizer steps of each run (batch 64)")
    parser.add_argument("--max-minutes", type=float, default=15.0, help="wall-clock cap of each run's training")
    parser.add_argument("--num-train", type=int, default=30000)
    parser.add_argument("--num-val", type=int, default=200)
    parser.add_argument("--num-test", type=int, default=500)
    parser.add_argument("--adapted-lr", type=float, default=1e-3)
    parser.add_argument("--scratch-lr", type=float, default=2e-3, help="the quickstart's")
    parser.add_argument("--warmup-steps", type=int, default=200)
    parser.add_argument("--output", type=Path, default=None, help="write the report JSON here")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    for path in (args.model, args.english_train, args.english_test):
        if not path.exists():
            print(f"{path} does not exist: run `bash scripts/quickstart.sh` first (it trains the English model)",
                  file=sys.stderr)
            return 2
    report = run(args.model, args.english_train, args.english_test, args.workdir, args.steps, args.max_minutes,
                 args.num_train, args.num_val, args.num_test, args.adapted_lr, args.scratch_lr, args.warmup_steps)
    print(format_table(report))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"report written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
