"""Registers a scene-text recognizer with transformers' Auto API and the image-to-text pipeline.

Both model packages call this on import; keeping it in one place means DiG and CLIP4STR are wired identically.
"""

from __future__ import annotations

from collections.abc import Iterable

import transformers
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
)

from .pipeline_routing import SCENE_TEXT_MODEL_TYPES, register_scene_text_pipeline


def register_scene_text_recognizer(
    config_class: type,
    model_class: type,
    tokenizer_class: type,
    image_processor_class: type,
    processor_class: type,
    sub_config_classes: Iterable[type] = (),
) -> None:
    """Registers the config (and sub-configs) with AutoConfig; the model with AutoModel,
    AutoModelForImageTextToText and AutoModelForTextRecognition (when this transformers has it); the tokenizer,
    image processor (PIL backend) and processor; marks config and model for `save_pretrained` code copying
    (trust_remote_code loading); and routes `pipeline("image-to-text")` for our model types to
    `SceneTextRecognitionPipeline` (processing/pipeline_routing.py: the one change to a transformers registry entry,
    which keeps the stock class for every other model). Idempotent."""
    if config_class.model_type not in SCENE_TEXT_MODEL_TYPES:  # the pipeline routing would not know it
        raise ValueError(f"add {config_class.model_type!r} to processing.pipeline_routing.SCENE_TEXT_MODEL_TYPES")
    for cls in (config_class, *sub_config_classes):
        AutoConfig.register(cls.model_type, cls, exist_ok=True)
    for auto_class in (
        AutoModel,
        AutoModelForImageTextToText,
        getattr(transformers, "AutoModelForTextRecognition", None),
    ):
        if auto_class is not None:
            auto_class.register(config_class, model_class, exist_ok=True)
    AutoTokenizer.register(config_class, tokenizer_class=tokenizer_class, exist_ok=True)
    AutoImageProcessor.register(config_class, image_processor_classes={"pil": image_processor_class}, exist_ok=True)
    AutoProcessor.register(config_class, processor_class, exist_ok=True)
    config_class.register_for_auto_class()
    model_class.register_for_auto_class("AutoModelForImageTextToText")
    register_scene_text_pipeline()


def save_processor_with_code(processor, output_dir) -> None:
    """`processor.save_pretrained(output_dir)` with the tokenizer, image processor and processor marked for
    `register_for_auto_class`, so their code is copied beside the weights and the folder loads with
    `trust_remote_code=True` where this library is not installed (the converters' output folders)."""
    for component in (processor.tokenizer, processor.image_processor, processor):
        component.register_for_auto_class()
    processor.save_pretrained(output_dir)
