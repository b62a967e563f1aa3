"""The registry of recognizer families: everything the training stack, the CLI and the benchmarks need to know about
a model type, in one entry per family. Adding a family (a new `model_type`) means adding one `ModelFamily` here;
the optimiser rules live on the model itself (see scene_text_training/optim.py).

Classes are imported lazily (a family's entry names its modules), so `train_ocr --help` and the DiG paths do not
import open_clip or CLIP4STR's code.
"""

from __future__ import annotations

import copy
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelFamily:
    """One recognizer family.

    `model_type` is both the recipe's `model.type` and config.json's `model_type`. `validation_from_logits`: the
    eval-mode forward with labels already decodes (PARSeq's validation), so validation ids are its logits' argmax
    instead of a `generate()` call. `init_from` says what a non-folder `model.init_from` file is for this family.
    """

    model_type: str
    description: str
    config_class: str
    model_class: str
    processor_class: str
    build_config: Callable[[type, str | None, dict[str, Any]], Any]
    build_processor: Callable[[Any], Any]
    load_initial_weights: Callable[[Any, Path], str]
    init_from: str
    quickstart_recipe: str
    validation_from_logits: bool = False
    onnx_graphs: str = ""
    """The ONNX export's graph builder (`scene_text_training.onnx_export`), "" = no export."""

    def load(self, attribute: str) -> Any:
        """Imports one of the family's classes ("config_class", "model_class", "processor_class")."""
        module, _, name = getattr(self, attribute).rpartition(".")
        return getattr(importlib.import_module(module), name)

    def config(self, preset: str | None = None, values: dict[str, Any] | None = None) -> Any:
        """The family's config from a preset name (or the class defaults) and overrides; unknown keys are an error."""
        return self.build_config(self.load("config_class"), preset, copy.deepcopy(values or {}))


# ---------------------------------------------------------------------------------------------------------- configs
def _dig_config(config_class: type, preset: str | None, values: dict[str, Any]) -> Any:
    from .models import check_config_keys

    check_config_keys(config_class, values, "model.config")
    charset = values.pop("charset", None)  # sizes and special ids follow the charset: set them together
    config = config_class.from_preset(preset, **values) if preset is not None else config_class(**values)
    if charset is not None:
        config.set_charset(charset)
    return config


def _clip_family_config(
    config_class: type, preset: str | None, values: dict[str, Any],
    presets: dict[str, tuple[dict[str, Any], dict[str, Any]]], to_kwargs: Callable[..., dict[str, Any]],
) -> Any:
    """CLIP4STR-style configs: CLIP dimensions (embed_dim, vision_width, ...: `build_preset_kwargs` arguments) and
    config fields may be mixed in `values`; a preset is (CLIP dimensions, extra config fields)."""
    from modeling_clip4str.configuration_clip4str import CLIP4STRDecoderConfig, build_preset_kwargs

    from .models import check_config_keys

    clip_keys = set(inspect.signature(build_preset_kwargs).parameters)
    check_config_keys(config_class, values, "model.config", extra=sorted(clip_keys))
    clip_dims = {k: values.pop(k) for k in list(values) if k in clip_keys}
    decoder = values.pop("decoder", None)
    preset_fields: dict[str, Any] = {}
    if preset is not None:
        if preset not in presets:
            raise ValueError(f"unknown {config_class.__name__} preset {preset!r}; choose one of {sorted(presets)}")
        preset_dims, preset_fields = presets[preset]
        clip_dims = {**preset_dims, **clip_dims}
    kwargs: dict[str, Any] = {**(to_kwargs(**clip_dims) if clip_dims else {}), **copy.deepcopy(preset_fields)}
    if decoder is not None:
        d_model = kwargs["decoder"].d_model if "decoder" in kwargs else decoder.get("d_model", 512)
        kwargs["decoder"] = CLIP4STRDecoderConfig(**{"d_model": d_model, **decoder})
    charsets = {key: values.pop(key) for key in ("charset_train", "charset_test") if key in values}
    config = config_class(**{**kwargs, **values})
    if charsets:  # the token ids and head sizes follow the charset: set them together
        config.set_charset(charsets.get("charset_train", config.charset_train), charsets.get("charset_test"))
    return config


def _clip4str_config(config_class: type, preset: str | None, values: dict[str, Any]) -> Any:
    from modeling_clip4str import CLIP4STR_PRESETS
    from modeling_clip4str.configuration_clip4str import build_preset_kwargs

    presets = {name: (dims, {}) for name, dims in CLIP4STR_PRESETS.items()}
    return _clip_family_config(config_class, preset, values, presets, build_preset_kwargs)


def _str_adapter_config(config_class: type, preset: str | None, values: dict[str, Any]) -> Any:
    from modeling_clip4str import STR_ADAPTER_PRESETS
    from modeling_clip4str.configuration_str_adapter import str_adapter_kwargs

    def to_kwargs(**dims: Any) -> dict[str, Any]:  # no text tower: its dimensions are not needed
        return str_adapter_kwargs(**{"text_width": 64, "text_layers": 1, "text_freeze_nlayer": 0, **dims})

    presets = {name: (p["clip"], p["adapter"]) for name, p in STR_ADAPTER_PRESETS.items()}
    return _clip_family_config(config_class, preset, values, presets, to_kwargs)


# ------------------------------------------------------------------------------------------------------- processors
def _dig_processor(config: Any) -> Any:
    """The model's input size (32x128 by default) and charset (the 94 characters: 97 classes); the tokenizer takes
    labels of up to `max_label_length` characters."""
    from processing import DiGImageProcessor, DiGProcessor, DiGTokenizer

    height, width = config.encoder.image_size
    tokenizer = DiGTokenizer(charset=config.charset, max_label_length=config.max_label_length)
    return DiGProcessor(DiGImageProcessor(size={"height": height, "width": width}), tokenizer)


def _clip4str_processor(config: Any) -> Any:
    """The model's input size and training charset (224x224 and the 94 characters by default)."""
    from modeling_clip4str.configuration_clip4str import as_pair
    from processing import CLIP4STRImageProcessor, CLIP4STRProcessor, PARSeqTokenizer

    height, width = as_pair(config.vision_config.image_size, "vision_config.image_size")
    tokenizer = PARSeqTokenizer(charset=config.charset_train, max_label_length=config.max_label_length)
    return CLIP4STRProcessor(CLIP4STRImageProcessor(size={"height": height, "width": width}), tokenizer)


# -------------------------------------------------------------------------------------------------- initial weights
def _dig_initial_weights(model: Any, path: Path) -> str:
    from modeling_dig.encoder_initialization import load_pretrained_encoder

    return str(load_pretrained_encoder(model, path))


def _clip4str_initial_weights(model: Any, path: Path) -> str:
    from modeling_clip4str.clip_initialization import load_clip_state_dict, load_clip_weights

    return str(load_clip_weights(model, load_clip_state_dict(path), source=str(path)))


def _str_adapter_initial_weights(model: Any, path: Path) -> str:
    """A CLIP file, or a saved CLIP4STR folder whose trained image tower becomes the frozen tower (and, for the
    ladder types, the source of the side network), exactly as a CLIP file's would."""
    from modeling_clip4str.clip_initialization import load_clip_state_dict
    from modeling_clip4str.str_adapter_conversion import load_clip_into_str_adapter, vision_state_dict_to_openai

    from .models import is_saved_model, saved_model_type

    if is_saved_model(path) and saved_model_type(path) == "clip4str":
        from modeling_clip4str import CLIP4STRForTextRecognition

        tower = CLIP4STRForTextRecognition.from_pretrained(path).state_dict()
        clip = vision_state_dict_to_openai(tower)
        load_clip_into_str_adapter(model, clip, round_fp16=False, source=str(path))  # trained in fp32: no rounding
        return f"image tower of the CLIP4STR model and {model.config.adapter_type} adapter initialised"
    load_clip_into_str_adapter(model, load_clip_state_dict(path), source=str(path))  # raises on bad keys
    return f"CLIP image tower and {model.config.adapter_type} adapter initialised"


# --------------------------------------------------------------------------------------------------------- registry
FAMILIES: dict[str, ModelFamily] = {
    family.model_type: family
    for family in (
        ModelFamily(
            model_type="dig",
            description="DiG: ViT encoder + transformer decoder (BEiT-style fine-tuning)",
            config_class="modeling_dig.DiGConfig",
            model_class="modeling_dig.DiGForTextRecognition",
            processor_class="processing.DiGProcessor",
            build_config=_dig_config,
            build_processor=_dig_processor,
            load_initial_weights=_dig_initial_weights,
            init_from="a DiG pre-training folder or original .pth (encoder only)",
            quickstart_recipe="quickstart_dig",
            onnx_graphs="scene_text_training.onnx_export.dig_graphs",
        ),
        ModelFamily(
            model_type="clip4str",
            description="CLIP4STR: CLIP towers + visual and cross-modal PARSeq decoders",
            config_class="modeling_clip4str.CLIP4STRConfig",
            model_class="modeling_clip4str.CLIP4STRForTextRecognition",
            processor_class="processing.CLIP4STRProcessor",
            build_config=_clip4str_config,
            build_processor=_clip4str_processor,
            load_initial_weights=_clip4str_initial_weights,
            init_from="a CLIP weight file (OpenAI .pt or open_clip state dict)",
            quickstart_recipe="quickstart_clip4str",
            validation_from_logits=True,
            onnx_graphs="scene_text_training.onnx_export.clip4str_graphs",
        ),
        ModelFamily(
            model_type="str_adapter",
            description="CLIP4STR + Adapter: frozen CLIP image tower, a trained adapter and one PARSeq decoder",
            config_class="modeling_clip4str.STRAdapterConfig",
            model_class="modeling_clip4str.STRAdapterForTextRecognition",
            processor_class="processing.CLIP4STRProcessor",
            build_config=_str_adapter_config,
            build_processor=_clip4str_processor,
            load_initial_weights=_str_adapter_initial_weights,
            init_from="a CLIP weight file or a saved CLIP4STR folder (image tower, and the side network of ladder adapters)",
            quickstart_recipe="quickstart_str_adapter",
            validation_from_logits=True,
            onnx_graphs="scene_text_training.onnx_export.str_adapter_graphs",
        ),
    )
}

PRETRAINING_MODEL_TYPES = ("dig_pretraining",)
"""Model types of this library that are not recognizers (they initialise one through model.init_from)."""
LIBRARY_MODEL_TYPES = (*FAMILIES, *PRETRAINING_MODEL_TYPES)
"""model_type values this library implements: such folders load with the installed classes, never the folder's
own Python files (which `save_pretrained` copies beside the weights for remote-code users)."""


def family(model_type: str) -> ModelFamily:
    """The registry entry of `model_type`, or a clear error listing the families."""
    try:
        return FAMILIES[model_type]
    except KeyError:
        raise ValueError(f"model.type must be one of {tuple(FAMILIES)}, got {model_type!r}") from None


__all__ = ["FAMILIES", "LIBRARY_MODEL_TYPES", "PRETRAINING_MODEL_TYPES", "ModelFamily", "family"]
