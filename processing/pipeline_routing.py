"""How `pipeline("image-to-text", model=folder)` reaches `SceneTextRecognitionPipeline` when this library is
imported and no remote code is trusted (the remote-code route is in `pipeline_scene_text.py`).

transformers 5.24 chooses the pipeline class in `pipeline()` in one of two ways, and neither is per model without
remote code:

* `config.custom_pipelines[task]` (read before the "image-to-text" -> "image-text-to-text" redirect) always
  demands `trust_remote_code=True` unless the caller passes `pipeline_class=`;
* otherwise `PIPELINE_REGISTRY.supported_tasks["image-text-to-text"]["impl"]` is instantiated for every model, and
  the stock `ImageTextToTextPipeline.__call__` raises "You must provide text" for an image alone, before the model
  or its processor is consulted. A new task name cannot help: the redirect is hard-coded ahead of the registry.

So the library makes the two smallest changes that give the exact call back, both scoped to its own model types:

1. `SceneTextPipelinesConfigMixin`: the library's recognizer configs keep `custom_pipelines` empty (a plain
   attribute) so `pipeline()` takes the registry branch, and still write the remote-code entry to `config.json`.
2. `register_scene_text_pipeline()`: the "image-text-to-text" entry's `impl` becomes `ImageTextToTextRouter`,
   which builds transformers' own pipeline class, untouched, for every model whose `model_type` is not one of
   `SCENE_TEXT_MODEL_TYPES`. Nothing else changes: no other entry, no class attribute, no logger.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from transformers.pipelines import PIPELINE_REGISTRY
from transformers.utils.hub import TRANSFORMERS_DYNAMIC_MODULE_NAME

from .pipeline_scene_text import (
    SceneTextRecognitionPipeline,
    save_scene_text_pipeline_code,
    scene_text_custom_pipelines,
)

ROUTED_TASK = "image-text-to-text"
"""Where transformers redirects "image-to-text"."""

SCENE_TEXT_MODEL_TYPES = frozenset({"dig", "clip4str", "str_adapter"})
"""The model types whose pipelines are `SceneTextRecognitionPipeline`; every other model type keeps the stock class."""

_LOAD_FLAGS = (
    "_load_processor",
    "_load_image_processor",
    "_load_feature_extractor",
    "_load_tokenizer",
    "_load_video_processor",
)
"""Class attributes `pipeline()` reads from the registered impl, before the model is known, to load components."""


def _resolve(impl: Any) -> type:
    """A registry impl (a class, or the dotted path transformers stores) as a class."""
    if isinstance(impl, str):
        import importlib

        module_name, class_name = impl.rsplit(".", 1)
        return getattr(importlib.import_module(module_name), class_name)
    return impl


def is_scene_text_model_type(model: Any) -> bool:
    """Whether `model` (or its config) is one of this library's recognizers."""
    config = getattr(model, "config", model)
    return getattr(config, "model_type", None) in SCENE_TEXT_MODEL_TYPES


class ImageTextToTextRouter:
    """The impl registered for "image-text-to-text": `pipeline()` instantiates it with the loaded model, and it
    returns an instance of `SceneTextRecognitionPipeline` for our model types and of the entry's previous impl
    (transformers' `ImageTextToTextPipeline`) for every other model. Never instantiated itself."""

    stock_impl: ClassVar[Any] = None
    """The entry's impl before registration (what every other model gets)."""

    def __new__(cls, model: Any, *args: Any, **kwargs: Any) -> Any:
        pipeline_class = SceneTextRecognitionPipeline if is_scene_text_model_type(model) else _resolve(cls.stock_impl)
        return pipeline_class(model, *args, **kwargs)


def register_scene_text_pipeline() -> None:
    """Routes "image-text-to-text" (and so "image-to-text") through `ImageTextToTextRouter`. Idempotent."""
    entry = PIPELINE_REGISTRY.supported_tasks[ROUTED_TASK]
    if entry["impl"] is ImageTextToTextRouter:
        return
    stock_class = _resolve(entry["impl"])
    for flag in _LOAD_FLAGS:  # pipeline() loads each model's components from these: keep the stock ones
        if getattr(SceneTextRecognitionPipeline, flag) != getattr(stock_class, flag):
            raise RuntimeError(f"{stock_class.__name__}.{flag} differs from SceneTextRecognitionPipeline's")
        setattr(ImageTextToTextRouter, flag, getattr(stock_class, flag))
    ImageTextToTextRouter.stock_impl = entry["impl"]
    # A new entry dict (the stock one is left as it was), filled in directly rather than with register_pipeline,
    # which would log an "overwriting" warning and mark the class for Pipeline.save_pretrained.
    PIPELINE_REGISTRY.supported_tasks[ROUTED_TASK] = {**entry, "impl": ImageTextToTextRouter}


class SceneTextPipelinesConfigMixin:
    """Mixin for the recognizers' configs (before `PreTrainedConfig` in the bases).

    In the library's own classes `config.custom_pipelines` is `{}` whatever `config.json` says, so `pipeline()`
    does not demand remote code and takes the routed registry entry; `to_dict` writes
    `scene_text_custom_pipelines()` and `save_pretrained` copies `pipeline_scene_text.py`, so every saved folder
    also works as remote code. A class loaded as remote code (module under transformers' dynamic-module package)
    is a plain config: its `custom_pipelines` is what `config.json` declares, and `pipeline()` follows it.

    A model folder's code cannot import `processing` as remote code, so a config module imports the mixin in a
    `try` block (transformers' remote-code import check skips `try` blocks) with a no-op fallback.
    """

    def __post_init__(self, **kwargs: Any) -> None:
        if self._is_library_class():
            kwargs.pop("custom_pipelines", None)  # the library's pipeline serves this model in this process
        super().__post_init__(**kwargs)
        if self._is_library_class():
            self.custom_pipelines = {}

    @classmethod
    def _is_library_class(cls) -> bool:
        return cls.__module__.partition(".")[0] != TRANSFORMERS_DYNAMIC_MODULE_NAME

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        if self._is_library_class():
            output["custom_pipelines"] = scene_text_custom_pipelines()
        return output

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if self._is_library_class():
            # The entry points at this file: ship it beside config.json (model.save_pretrained calls this too).
            save_scene_text_pipeline_code(save_directory)
        return result


__all__ = [
    "SCENE_TEXT_MODEL_TYPES",
    "ImageTextToTextRouter",
    "SceneTextPipelinesConfigMixin",
    "is_scene_text_model_type",
    "register_scene_text_pipeline",
]
