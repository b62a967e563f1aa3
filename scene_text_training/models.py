"""Recognizer + processor from a recipe's `model` section: fresh, from a saved folder, from DiG pre-training
weights, or (CLIP4STR, CLIP4STR + Adapter) from CLIP weights."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .recipes import ModelRecipe

logger = logging.getLogger(__name__)

MODEL_TYPES = ("dig", "clip4str", "str_adapter")
PARSEQ_FAMILY = ("clip4str", "str_adapter")
"""Recognizers with CLIP towers, PARSeq's decoder and CLIP4STR's processor: they share the CLIP4STR code paths here
(config from CLIP dimensions, CLIP weight files as init_from, validation ids from the eval forward's logits)."""
LIBRARY_MODEL_TYPES = (*MODEL_TYPES, "dig_pretraining")
"""model_type values this library implements: such folders load with the installed classes, never the folder's
own Python files (which `save_pretrained` copies beside the weights for remote-code users)."""


def is_parseq_family(model_type: str) -> bool:
    """True for CLIP4STR and CLIP4STR + Adapter (see PARSEQ_FAMILY)."""
    return model_type in PARSEQ_FAMILY


def _check_type(model_type: str) -> None:
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model.type must be one of {MODEL_TYPES}, got {model_type!r}")


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
    """DiGConfig / CLIP4STRConfig / STRAdapterConfig from the recipe's preset and config overrides (unknown keys are
    an error)."""
    _check_type(recipe.type)
    values = copy.deepcopy(recipe.config)
    if recipe.type == "dig":
        from modeling_dig import DiGConfig

        check_config_keys(DiGConfig, values, "model.config")

        if recipe.preset is not None:
            return DiGConfig.from_preset(recipe.preset, **values)
        return DiGConfig(**values)

    from modeling_clip4str import CLIP4STR_PRESETS, STR_ADAPTER_PRESETS, CLIP4STRConfig, STRAdapterConfig
    from modeling_clip4str.configuration_clip4str import CLIP4STRDecoderConfig, build_preset_kwargs
    from modeling_clip4str.configuration_str_adapter import str_adapter_kwargs

    if recipe.type == "clip4str":
        config_class, to_kwargs = CLIP4STRConfig, build_preset_kwargs
        presets = {name: (dims, {}) for name, dims in CLIP4STR_PRESETS.items()}
    else:  # CLIP4STR + Adapter: a preset is CLIP dimensions plus the adapter settings
        config_class = STRAdapterConfig

        def to_kwargs(**dims: Any) -> dict[str, Any]:  # no text tower: its dimensions are not needed
            return str_adapter_kwargs(**{"text_width": 64, "text_layers": 1, "text_freeze_nlayer": 0, **dims})

        presets = {name: (p["clip"], p["adapter"]) for name, p in STR_ADAPTER_PRESETS.items()}
    # CLIP dimensions (embed_dim, vision_width, ...) are build_preset_kwargs arguments; the rest are config fields.
    clip_keys = set(inspect.signature(build_preset_kwargs).parameters)
    check_config_keys(config_class, values, "model.config", extra=sorted(clip_keys))
    clip_dims = {k: values.pop(k) for k in list(values) if k in clip_keys}
    decoder = values.pop("decoder", None)
    preset_fields: dict[str, Any] = {}
    if recipe.preset is not None:
        if recipe.preset not in presets:
            raise ValueError(
                f"unknown {config_class.__name__} preset {recipe.preset!r}; choose one of {sorted(presets)}"
            )
        preset_dims, preset_fields = presets[recipe.preset]
        clip_dims = {**preset_dims, **clip_dims}
    kwargs: dict[str, Any] = {**(to_kwargs(**clip_dims) if clip_dims else {}), **copy.deepcopy(preset_fields)}
    if decoder is not None:
        d_model = kwargs["decoder"].d_model if "decoder" in kwargs else decoder.get("d_model", 512)
        kwargs["decoder"] = CLIP4STRDecoderConfig(**{"d_model": d_model, **decoder})
    return config_class(**{**kwargs, **values})


def build_processor(model_type: str, config: Any) -> Any:
    """The model family's default processor, sized to the model's input (DiG: 32x128 and 97 classes by default;
    CLIP4STR and CLIP4STR + Adapter: 224x224 and the 94-char charset by default); its tokenizer takes labels of up
    to the model's `max_label_length` characters."""
    _check_type(model_type)
    if model_type == "dig":
        from processing import DiGImageProcessor, DiGProcessor, DiGTokenizer

        height, width = config.encoder.image_size
        tokenizer = DiGTokenizer(max_label_length=config.max_label_length)
        return DiGProcessor(DiGImageProcessor(size={"height": height, "width": width}), tokenizer)
    from modeling_clip4str.configuration_clip4str import as_pair
    from processing import CLIP4STRImageProcessor, CLIP4STRProcessor, PARSeqTokenizer

    height, width = as_pair(config.vision_config.image_size, "vision_config.image_size")
    tokenizer = PARSeqTokenizer(charset=config.charset_train, max_label_length=config.max_label_length)
    return CLIP4STRProcessor(CLIP4STRImageProcessor(size={"height": height, "width": width}), tokenizer)


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
    _check_type(model_type)
    if model_type == "dig":
        from modeling_dig import DiGForTextRecognition

        return DiGForTextRecognition
    from modeling_clip4str import CLIP4STRForTextRecognition, STRAdapterForTextRecognition

    return CLIP4STRForTextRecognition if model_type == "clip4str" else STRAdapterForTextRecognition


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
    if model_type == "dig":
        from processing import DiGProcessor as cls
    else:
        from processing import CLIP4STRProcessor as cls
    try:
        return cls.from_pretrained(path)
    except (OSError, ValueError) as err:  # a converted folder may hold only the model
        logger.warning("%s: no processor saved (%s); using the %s defaults", path, err, model_type)
        return build_processor(model_type, config)


def build_model(recipe: ModelRecipe) -> tuple[Any, Any]:
    """(model, processor) for fine-tuning, following `recipe.init_from`."""
    _check_type(recipe.type)
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
        return model, processor
    config = build_config(recipe)
    cls = model_class(recipe.type)
    model = cls(config)
    if init is not None:
        _load_initial_weights(model, recipe.type, Path(init))
    return model, build_processor(recipe.type, config)


def _load_initial_weights(model: Any, model_type: str, path: Path) -> None:
    """DiG: encoder from a pre-training folder / original .pth; CLIP4STR: CLIP towers from a CLIP weight file;
    CLIP4STR + Adapter: the image tower and (ladder adapters) the side network built from a CLIP weight file."""
    if not path.exists():
        raise FileNotFoundError(f"model.init_from={path} does not exist")
    if model_type == "dig":
        from modeling_dig.encoder_initialization import load_pretrained_encoder

        report = load_pretrained_encoder(model, path)
    elif model_type == "str_adapter":
        from modeling_clip4str.clip_initialization import load_clip_state_dict
        from modeling_clip4str.str_adapter_conversion import load_clip_into_str_adapter

        load_clip_into_str_adapter(model, load_clip_state_dict(path), source=str(path))  # raises on bad keys
        report = f"CLIP image tower and {model.config.adapter_type} adapter initialised"
    else:
        from modeling_clip4str.clip_initialization import load_clip_state_dict, load_clip_weights

        report = load_clip_weights(model, load_clip_state_dict(path), source=str(path))
    logger.info("initial weights from %s: %s", path, report)
