"""Recipes: one YAML file per scene_text_training/evaluation setup, read into typed dataclasses.

A recipe file mirrors the dataclasses below section by section (`model`, `data`, `optim`, `train`,
`evaluate`, `pretrain`); fine-tuning and DiG pre-training read the same schema. Command-line overrides use dotted keys (`optim.base_lr=3e-4`, `model.config.hidden_size=96`);
values are parsed as YAML, so `null`, numbers, booleans and `[a, b]` lists work. Unknown keys are an error
that names the key and lists the valid ones, so a typo never silently trains with a default.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


def _doc(help_text: str, minimum: float | None = None, **kwargs: Any) -> Any:
    """A dataclass field whose help text is shown by `train_ocr <command> --help`; `minimum`: smallest valid value
    (checked when the recipe is read, so `num_beams=0` fails up front rather than deep inside a run)."""
    metadata: dict[str, Any] = {"help": help_text}
    if minimum is not None:
        metadata["minimum"] = minimum
    return field(metadata=metadata, **kwargs)


@dataclass
class ModelRecipe:
    """Which recognizer to build and where its initial weights come from."""

    type: str = _doc(
        "model family: 'dig', 'clip4str' or 'str_adapter' (CLIP4STR + Adapter); 'dig_pretraining' for "
        "`train_ocr pretrain` (DiGPreTrainingConfig presets: vit-small, vit-tiny, vit-base, reduced, tiny-test)",
        default="dig",
    )
    preset: str | None = _doc(
        "named architecture of the config class (DiG: vit-tiny / vit-small / vit-base / tiny-test; "
        "CLIP4STR / str_adapter: see CLIP4STRConfig / STRAdapterConfig presets); null = the config class defaults",
        default=None,
    )
    config: dict[str, Any] = _doc(
        "keyword arguments for DiGConfig / CLIP4STRConfig / STRAdapterConfig, applied on top of the preset "
        "(nested `encoder:` / `decoder:` mappings update the sub-configs)",
        default_factory=dict,
    )
    init_from: str | None = _doc(
        "initial weights: a saved HF model folder, a DiG pre-training folder or .pth checkpoint (encoder only), "
        "or for CLIP4STR / str_adapter a CLIP weight file (OpenAI .pt or open_clip state dict); for "
        "dig_pretraining a saved DiGForPreTraining folder; null = random init",
        default=None,
    )
    charset: str | None = _doc(
        "the characters the model reads: a UTF-8 file with one character per line (e.g. configs/charsets/"
        "latin_greek.txt) or the characters themselves; null = the family default (the 94 printable ASCII "
        "characters) or, with init_from a saved model, its charset. A saved model with another charset is adapted "
        "to this one: rows of the characters both share are kept, new ones start from their base letter ('é' "
        "from 'e') or fresh (scene_text_training/charset_adaptation.py)",
        default=None,
    )
    trust_remote_code: bool = _doc(
        "let an init_from folder of another model_type run its own Python files (DiG/CLIP4STR folders always "
        "load with this library's classes)",
        default=False,
    )


@dataclass
class SyntheticRecipe:
    """Synthetic word images rendered into STR LMDBs before training (the quickstart's data)."""

    output_root: str = _doc("folder receiving train/, val/, test/ LMDB splits", default="outputs/synthetic")
    num_train: int = _doc("training images", default=2000, minimum=1)
    num_val: int = _doc("validation images", default=200)
    num_test: int = _doc("test images", default=200)
    seed: int = _doc("renderer seed (same seed = byte-identical LMDBs)", default=0)
    difficulty: str = _doc("renderer difficulty preset (see processing.synthetic.DIFFICULTIES)", default="easy")
    random_fraction: float = _doc(
        "share of training images showing random alphanumeric strings instead of words (val/test: words only)",
        default=0.0,
    )
    charset: str | None = _doc(
        "characters the words, random strings and labels are limited to (a file of one character per line, or the "
        "characters); null = the 94 printable ASCII characters",
        default=None,
    )
    wordlist: str | None = _doc("UTF-8 word list, one word per line; null = the bundled English list",
                                default=None)
    fonts: str = _doc(
        "classic: the level's bundled fonts in every split; disjoint: every installed text face, each design family "
        "in one split only (test/unseen_fonts_clean measures fonts never trained on; see processing/fonts.py)",
        default="classic",
    )
    num_workers: int | None = _doc("rendering processes; null = up to 2", default=None)
    overwrite: bool = _doc("re-render even if the LMDBs already exist", default=False)


@dataclass
class DataRecipe:
    """Training/validation data: STR LMDBs (every **/data.mdb under each path is used)."""

    train: list[str] = _doc(
        "training LMDB roots or LMDB folders (pre-training: also image folders; labels are ignored)",
        default_factory=list,
    )
    val: list[str] = _doc("validation LMDB roots or LMDB folders (accuracy during training)", default_factory=list)
    reader: str = _doc(
        "'lazy': read the LMDB records as training asks for them (no copy; only labels are scanned, once, and the "
        "scan is cached); 'arrow': copy every split into an Arrow dataset first, every image checked up front "
        "(for `datasets` features)",
        default="lazy",
    )
    unicode_normalization: str = _doc(
        "Unicode normalisation of labels: 'auto' (PARSeq's NFKD -> ASCII for an ASCII charset, else NFC), 'ascii', "
        "'NFC', 'NFKC' or 'none' (processing/labels.py)",
        default="auto",
    )
    remove_whitespace: bool = _doc(
        "delete every whitespace character from labels (PARSeq's rule); false keeps them (then the charset must "
        "hold the space for it to be read)",
        default=True,
    )
    augment: str = _doc("training augmentation: 'dig' (ABINet-style), 'parseq' (RandAugment) or 'none'", default="none")
    max_label_length: int | None = _doc(
        "labels longer than this many characters (EOS not counted) are skipped (counted, logged); null = the "
        "model's max_label_length, which it may not exceed",
        default=None,
        minimum=1,
    )
    max_train_samples: int | None = _doc("use only the first N training samples (debugging)", default=None, minimum=1)
    max_val_samples: int | None = _doc("use only the first N validation samples", default=None, minimum=1)
    synthetic: SyntheticRecipe | None = _doc(
        "render synthetic LMDBs first (quickstart); train/val default to its splits", default=None
    )


@dataclass
class OptimRecipe:
    """Optimiser and learning-rate schedule (the originals' rules, see scene_text_training/optim.py)."""

    base_lr: float = _doc("learning rate at the reference batch size; scaled linearly by the total batch", default=1e-4)
    lr_reference_batch: int = _doc(
        "total batch (per-device x processes x accumulation) at which base_lr applies (DiG 256, CLIP4STR 512)",
        default=256,
        minimum=1,
    )
    betas: list[float] = _doc("AdamW betas", default_factory=lambda: [0.9, 0.999])
    eps: float = _doc("AdamW epsilon", default=1e-8)
    weight_decay: float = _doc(
        "AdamW weight decay (never on 1-D parameters nor on those the model's no_weight_decay() names)", default=0.05
    )
    no_decay_keywords: list[str] = _doc(
        "extra: parameters whose name contains one of these get no weight decay either (the model declares its own "
        "rules; this adds to them)",
        default_factory=list,
    )
    layer_decay: float | None = _doc(
        "DiG layer-wise lr decay: block i gets decay^(depth-i), patch embedding decay^(depth+1), "
        "the rest (final norm, bridge, decoder) x1; null = off",
        default=None,
    )
    decoder_lr_scale: float = _doc("CLIP4STR: lr multiplier of everything outside the CLIP towers (19)", default=1.0)
    scheduler: str = _doc(
        "'cosine' (linear warm-up, cosine to min_lr), 'one_cycle' (OneCycleLR), or 'constant'", default="cosine"
    )
    warmup_epochs: float = _doc("cosine: warm-up length in epochs (ignored if warmup_steps > 0)", default=1.0)
    warmup_steps: int = _doc(
        "cosine: warm-up length in optimiser steps (overrides warmup_epochs)", default=0, minimum=0
    )
    min_lr: float = _doc("cosine: final learning rate (scaled per group like the peak)", default=1e-6)
    pct_start: float = _doc("one_cycle: fraction of the steps spent increasing the lr", default=0.075)
    max_grad_norm: float | None = _doc("gradient clipping norm; null = no clipping", default=None)


@dataclass
class TrainRecipe:
    """Trainer settings: batch, length, precision, logging and checkpointing."""

    output_dir: str = _doc("checkpoints, logs, resolved recipe and plots go here", default="outputs/finetune")
    per_device_train_batch_size: int = _doc("batch per process", default=64, minimum=1)
    per_device_eval_batch_size: int = _doc("validation batch per process", default=128, minimum=1)
    gradient_accumulation_steps: int = _doc("micro-batches per optimiser step", default=1, minimum=1)
    num_train_epochs: float = _doc("training epochs (ignored if max_steps > 0)", default=10.0)
    max_steps: int = _doc("optimiser steps; -1 = use num_train_epochs", default=-1)
    mixed_precision: str = _doc("'no', 'bf16' or 'fp16' (GPU only; ignored on CPU)", default="no")
    logging_steps: int = _doc("log the loss every N steps", default=50, minimum=1)
    eval_steps: int | None = _doc(
        "validate (pre-training: write a reconstruction picture) every N steps; null = once per epoch; 0 = never",
        default=None,
        minimum=0,
    )
    save_steps: int | None = _doc("checkpoint every N steps; null = once per epoch", default=None, minimum=1)
    save_total_limit: int | None = _doc("keep only the last N checkpoints", default=3, minimum=1)
    report_to: list[str] = _doc("logging integrations (tensorboard, wandb, ...); [] = console only",
                                default_factory=lambda: ["tensorboard"])
    seed: int = _doc("seed for model init, data order and augmentation", default=0)
    resume: str | None = _doc("'auto' = latest checkpoint-* in output_dir if any; a checkpoint path; null = fresh",
                              default="auto")
    dataloader_num_workers: int = _doc("data loading worker processes", default=0, minimum=0)
    ddp_find_unused_parameters: bool = _doc("DDP: tolerate parameters without gradients", default=True)
    use_cpu: bool | None = _doc("force CPU; null = CPU only when no GPU is present", default=None)
    disable_tqdm: bool = _doc("hide progress bars", default=False)


@dataclass
class EvaluateRecipe:
    """Benchmark evaluation of a saved model."""

    model: str | None = _doc("saved model folder; null = train.output_dir", default=None)
    data: str | None = _doc("benchmark root laid out as PARSeq's test/ (<name>/data.mdb) or one LMDB", default=None)
    batch_size: int = _doc("evaluation batch", default=512, minimum=1)
    cased: bool = _doc("also report 94-char case-sensitive accuracy", default=False)
    num_beams: int = _doc("beam width (1 = greedy, the seeds' setting)", default=1, minimum=1)
    output: str | None = _doc("write the results JSON here; null = <model>/results.json", default=None)
    max_samples: int | None = _doc("evaluate only the first N samples of each benchmark", default=None, minimum=1)
    normalization: str | None = _doc(
        "image normalisation preset; CLIP4STR: 'clip' (training) or 'test' (0.5/0.5, the published numbers); "
        "null = the saved processor's setting",
        default=None,
    )
    trust_remote_code: bool = _doc(
        "let a model folder of another model_type run its own Python files (DiG/CLIP4STR folders always load "
        "with this library's classes)",
        default=False,
    )


@dataclass
class PretrainRecipe:
    """What only DiG self-supervised pre-training has (`train_ocr pretrain`; ignored by fine-tuning)."""

    momentum_cosine: bool = _doc(
        "cosine-schedule the MoCo momentum per optimiser step from model.config.momentum to 1 (the seed: on)",
        default=True,
    )
    min_augmentations: int = _doc("fewest random corruptions of the augmented view", default=2, minimum=0)
    max_augmentations: int = _doc("most random corruptions of the augmented view", default=5, minimum=0)
    num_visualize: int = _doc(
        "samples in each reconstruction picture (written every train.eval_steps and at the end)", default=4, minimum=1
    )
    image_check: str = _doc(
        "images are checked when read (nothing is screened at start-up): an undecodable one is always skipped and "
        "counted; 'header' / 'full' also skip those under 2 px or more elongated than 25:1, 'none' keeps them",
        default="header",
    )


@dataclass
class Recipe:
    """A whole recipe file."""

    name: str = _doc("recipe name (shown in logs)", default="recipe")
    model: ModelRecipe = _doc("model section", default_factory=ModelRecipe)
    data: DataRecipe = _doc("data section", default_factory=DataRecipe)
    optim: OptimRecipe = _doc("optimiser section", default_factory=OptimRecipe)
    train: TrainRecipe = _doc("trainer section", default_factory=TrainRecipe)
    evaluate: EvaluateRecipe = _doc("evaluation section", default_factory=EvaluateRecipe)
    pretrain: PretrainRecipe = _doc("DiG pre-training section", default_factory=PretrainRecipe)


class RecipeError(ValueError):
    """A recipe file or override that does not fit the dataclasses."""


# ---- parsing ----------------------------------------------------------------------------------------------------


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`, converting only lossless cases (int -> float, scalar -> list)."""
    tp, optional = _unwrap_optional(tp)
    if value is None:
        if optional or tp is Any:
            return None
        raise RecipeError(f"{where}: null is not allowed here (expected {getattr(tp, '__name__', tp)})")
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping for section {tp.__name__}, got {value!r}")
        return from_dict(tp, value, where)
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if args and args[-1] is not Ellipsis and len(args) != len(items):
            raise RecipeError(f"{where}: expected {len(args)} values, got {value!r}")
        types_ = [args[0]] * len(items) if (not args or args[-1] is Ellipsis) else list(args)
        return tuple(_coerce(v, t if t is not Ellipsis else Any, f"{where}[{i}]")
                     for i, (v, t) in enumerate(zip(items, types_ or [Any] * len(items))))
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        items = value if isinstance(value, (list, tuple)) else [value]
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(items)]
    if origin is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads "1e-4" (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp in (int, str, bool) and isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    raise RecipeError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def from_dict(cls: type, values: dict[str, Any], where: str = "recipe") -> Any:
    """Build dataclass `cls` from a (nested) mapping, rejecting unknown keys with the list of valid ones."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {unknown}; valid keys: {names}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    for f in dataclasses.fields(cls):
        minimum, value = f.metadata.get("minimum"), kwargs.get(f.name)
        if minimum is not None and isinstance(value, (int, float)) and not isinstance(value, bool) and value < minimum:
            raise RecipeError(f"{where}.{f.name}: must be >= {minimum}, got {value}")
    return cls(**kwargs)


def to_dict(recipe: Any) -> dict[str, Any]:
    """The recipe as plain YAML-able data (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(recipe))


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], YAML-parsed value)."""
    if "=" not in text:
        raise RecipeError(f"override {text!r} is not of the form key=value (e.g. optim.base_lr=3e-4)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise RecipeError(f"override {text!r}: empty key")
    value = yaml.safe_load(raw) if raw.strip() else None
    return key.split("."), value


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key=value` overrides to a nested mapping (a copy); dotted keys create missing sub-mappings."""
    out = copy.deepcopy(values)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise RecipeError(f"override {text!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A recipe file as a mapping (clear errors for a missing or malformed file)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file {path} does not exist (see configs/ for the shipped recipes)")
    with path.open() as f:
        try:
            values = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise RecipeError(f"recipe file {path} is not valid YAML: {err}") from err
    if not isinstance(values, dict):
        raise RecipeError(f"recipe file {path} must hold a mapping at the top level, got {type(values).__name__}")
    return values


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None, cls: type = Recipe) -> Any:
    """Read a recipe file (or the defaults when `path` is None), apply overrides, validate into `cls`."""
    values = read_yaml(path) if path is not None else {}
    values = apply_overrides(values, overrides or [])
    return from_dict(cls, values, where=str(path) if path is not None else "recipe")


def save_recipe(recipe: Any, path: str | Path) -> Path:
    """Write the resolved recipe as YAML (beside the checkpoints, so a run can be repeated exactly)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        yaml.safe_dump(to_dict(recipe), f, sort_keys=False)
    return path


def describe(cls: type = Recipe, prefix: str = "") -> list[str]:
    """One line per recipe key: `dotted.key (default): help` -- the body of `--help`."""
    lines: list[str] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp, _ = _unwrap_optional(hints[f.name])
        if dataclasses.is_dataclass(tp):
            lines.append(f"  {key}: {f.metadata.get('help', '')}")
            lines.extend(describe(tp, prefix=f"{key}."))
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "required"
        lines.append(f"  {key} (default {default!r}): {f.metadata.get('help', '')}")
    return lines
