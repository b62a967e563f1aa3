"""Recognizer + processor from a recipe's `model` section: fresh, from a saved folder, from DiG pre-training
weights, or (CLIP4STR, CLIP4STR + Adapter) from CLIP weights."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from processing.charsets import read_charset

from .families import FAMILIES, LIBRARY_MODEL_TYPES, family
from .recipes import ModelRecipe

logger = logging.getLogger(__name__)

MODEL_TYPES = tuple(FAMILIES)
"""Recipe `model.type` values: the recognizer families (scene_text_training/families.py)."""


def is_saved_model(path: str | Path) -> bool:
    """True for a folder written by save_pretrained (config.json + weights)."""
    path = Path(path)
    return path.is_dir() and (path / "config.json").is_file()


def check_config_keys(config_class: type, values: dict[str, Any], where: str, extra: Sequence[str] = ()) -> None:
    """Refuse keys that are not fields of `config_class` (or `extra`), recursing into sub-config mappings
    (`encoder:`, `decoder:`, ...): a config class stores unknown keyword arguments silently as attributes, so a typo
    such as `labl_smoothing` would otherwise train with the default."""
    from transformers import PreTrainedConfig

    from .recipes import RecipeError

    fields = [f.name for f in dataclasses.fields(config_class)]
    unknown = sorted(set(values) - set(fields) - set(extra))
    if unknown:
        common = {f.name for f in dataclasses.fields(PreTrainedConfig)}
        valid = sorted({*extra, *(name for name in fields if name not in common)})
        raise RecipeError(
            f"{where}: unknown key(s) {unknown}; valid keys: {valid} (plus the PreTrainedConfig fields)"
        )
    for key, spec in (getattr(config_class, "sub_configs_defaults", None) or {}).items():
        sub_class = getattr(spec, "config_class", spec)
        if isinstance(values.get(key), dict) and dataclasses.is_dataclass(sub_class):
            check_config_keys(sub_class, values[key], f"{where}.{key}")


def build_config(recipe: ModelRecipe) -> Any:
    """The family's config (DiGConfig / CLIP4STRConfig / STRAdapterConfig) from the recipe's preset and config
    overrides (unknown keys are an error)."""
    return family(recipe.type).config(recipe.preset, recipe.config)


def build_processor(model_type: str, config: Any) -> Any:
    """The family's default processor, sized to the model's input; its tokenizer takes labels of up to the model's
    `max_label_length` characters."""
    return family(model_type).build_processor(config)


def data_max_label_length(requested: int | None, config: Any, tokenizer: Any = None) -> int:
    """The label-length filter for training data: `requested` (data.max_label_length) or, when None, the model's
    `max_label_length`; both count characters without EOS. Longer than the model can predict, or than the
    processor's tokenizer accepts (a folder saved before both meant characters), is a clear error up front."""
    model_max = int(config.max_label_length)
    length = model_max if requested is None else int(requested)
    if length > model_max:
        raise ValueError(
            f"data.max_label_length={length} exceeds the model's max_label_length={model_max} (characters, EOS "
            f"not counted): set data.max_label_length<={model_max} or give the model longer labels "
            "(model.config.decoder.max_label_length)"
        )
    tokenizer_max = getattr(tokenizer, "max_label_length", None)
    if tokenizer_max is not None and length > tokenizer_max:
        raise ValueError(
            f"the processor's tokenizer takes labels of up to {tokenizer_max} characters but the training data keeps "
            f"{length}: set data.max_label_length={tokenizer_max}, or re-convert the model folder so that its "
            "tokenizer and config agree"
        )
    return length


def model_class(model_type: str) -> type:
    return family(model_type).load("model_class")


def saved_model_type(path: str | Path) -> str | None:
    """`model_type` of a saved folder, read from config.json as plain JSON (no config class, no remote code)."""
    config_file = Path(path) / "config.json"
    try:
        value = json.loads(config_file.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as error:
        raise ValueError(f"{config_file} is not a readable config.json ({error})") from error
    return value if isinstance(value, str) else None


def _refuse_remote_code(path: Path, model_type: str | None) -> ValueError:
    return ValueError(
        f"{path}: config.json model_type {model_type!r} is not one of this library's models "
        f"{list(LIBRARY_MODEL_TYPES)}; loading it would run the Python files shipped in the folder. Pass "
        "--trust-remote-code (recipe: model.trust_remote_code / evaluate.trust_remote_code) only if you trust them."
    )


def load_saved(path: str | Path, trust_remote_code: bool = False) -> tuple[Any, Any, str]:
    """(model, processor, model_type) from a save_pretrained folder. DiG / CLIP4STR / STRAdapter folders load with
    this library's classes and never run the folder's code; other model types only with `trust_remote_code=True`
    (through the Auto classes)."""
    path = Path(path)
    if not is_saved_model(path):
        raise FileNotFoundError(
            f"{path} is not a saved model folder (no config.json); pass the output_dir of a "
            "finetune run or a converted checkpoint folder"
        )
    if (path / "onnx_export.json").is_file():
        raise ValueError(f"{path} is an ONNX export folder (no PyTorch weights): read it with --runtime onnx")
    model_type = saved_model_type(path)
    if model_type in MODEL_TYPES:
        model = model_class(model_type).from_pretrained(path)
        processor = _load_processor(path, model_type, model.config)
        return model, processor, model_type
    if model_type in LIBRARY_MODEL_TYPES:
        raise ValueError(
            f"{path}: model_type {model_type!r} is not a recognizer ({MODEL_TYPES}); a DiG pre-training model "
            "initialises a recognizer through model.init_from"
        )
    if not trust_remote_code:
        raise _refuse_remote_code(path, model_type)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    logger.warning("%s: model_type %r, running the folder's own code (trust_remote_code=True)", path, model_type)
    model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=trust_remote_code)
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    return model, processor, str(model_type)


def _load_processor(path: Path, model_type: str, config: Any) -> Any:
    cls = family(model_type).load("processor_class")
    try:
        return cls.from_pretrained(path)
    except (OSError, ValueError) as err:  # a converted folder may hold only the model
        logger.warning("%s: no processor saved (%s); using the %s defaults", path, err, model_type)
        return build_processor(model_type, config)


def build_model(recipe: ModelRecipe) -> tuple[Any, Any]:
    """(model, processor) for fine-tuning, following `recipe.init_from`."""
    family(recipe.type)  # a clear error for an unknown type
    init = recipe.init_from
    saved_type = saved_model_type(init) if init is not None and is_saved_model(init) else None
    if init is not None and saved_type is not None and (
        saved_type == recipe.type or saved_type not in LIBRARY_MODEL_TYPES
    ):
        if saved_type not in LIBRARY_MODEL_TYPES and not recipe.trust_remote_code:
            raise _refuse_remote_code(Path(init), saved_type)
        model, processor, _ = load_saved(init, trust_remote_code=recipe.trust_remote_code)
        if recipe.config:
            logger.warning("model.config is ignored when continuing from the saved model %s", init)
        if recipe.charset is not None:
            charset = read_charset(recipe.charset)
            if charset != processor.tokenizer.charset:
                from .charset_adaptation import adapt_to_charset

                model, processor, _ = adapt_to_charset(model, processor, charset)
        return model, processor
    config = build_config(recipe)
    if recipe.charset is not None:
        config.set_charset(read_charset(recipe.charset))
    cls = model_class(recipe.type)
    model = cls(config)
    if init is not None:
        _load_initial_weights(model, recipe.type, Path(init))
    return model, build_processor(recipe.type, config)


def _load_initial_weights(model: Any, model_type: str, path: Path) -> None:
    """The family's initialisation from a weight file that is not a saved folder (see `ModelFamily.init_from`)."""
    if not path.exists():
        raise FileNotFoundError(f"model.init_from={path} does not exist")
    report = family(model_type).load_initial_weights(model, path)
    logger.info("initial weights from %s: %s", path, report)
