"""`pipeline("image-to-text", model=...)` for the scene-text recognizers: image in, `[{"generated_text": ...}]` out.

transformers 5 redirects the task "image-to-text" to "image-text-to-text", whose stock pipeline needs a text prompt
(`pipe(image)` alone raises "You must provide text"). Two routes give users the TrOCR-style call back:

* Library (this package imported, no remote code): `register_scene_text_pipeline()` - run by `import modeling_dig`
  and `import modeling_clip4str` - registers `SceneTextAwareImageTextToTextPipeline` for "image-text-to-text" through
  the public `PIPELINE_REGISTRY`. It is the stock pipeline, except that for a model marked
  `is_scene_text_recognizer = True` it runs `SceneTextRecognitionPipeline`'s steps.
* Remote code (fresh process, library not installed, `trust_remote_code=True`): the saved `config.json` declares
  `custom_pipelines["image-to-text"]` -> `pipeline_scene_text.SceneTextRecognitionPipeline`, a file copied next to
  the weights (`save_scene_text_pipeline_code`). `pipeline()` reads `custom_pipelines` BEFORE the task redirect.

The two must not collide: `pipeline()` refuses a config with `custom_pipelines` unless `trust_remote_code=True`.
`SceneTextPipelinesConfigMixin` therefore always writes the entry to `config.json` but exposes
`config.custom_pipelines` as empty while the library registration is active in the process.

This file imports only from transformers (it is copied, alone, into saved model folders).
"""

from __future__ import annotations

import io
import logging as _std_logging
import os
import shutil
import urllib.request
from typing import Any

import torch
from transformers import Pipeline
from transformers.pipelines import PIPELINE_REGISTRY
from transformers.pipelines.image_text_to_text import ImageTextToTextPipeline
from transformers.utils import logging

logger = logging.get_logger(__name__)

TASK = "image-to-text"
REDIRECTED_TASK = "image-text-to-text"
PIPELINE_FILE = os.path.basename(__file__)
_MARKER = "is_scene_text_pipeline"
"""Class attribute that tells our registered pipeline class from the stock one (read by the config mixin)."""


def is_scene_text_model(model: Any) -> bool:
    """A recognizer of this project: its class (or config) sets `is_scene_text_recognizer = True`."""
    return bool(
        getattr(model, "is_scene_text_recognizer", False)
        or getattr(getattr(model, "config", None), "is_scene_text_recognizer", False)
    )


def describe_image_input(image: Any) -> str:
    """What the caller passed, for error messages: the path/URL, or the object's kind and shape."""
    if isinstance(image, (str, os.PathLike)):
        return repr(os.fspath(image))
    filename = getattr(image, "filename", None)
    if getattr(image, "mode", None) is not None:
        return f"PIL image {filename!r}" if filename else f"PIL image (mode {image.mode}, size {image.size})"
    shape = getattr(image, "shape", None)
    if shape is not None:
        return f"{type(image).__module__}.{type(image).__name__} of shape {tuple(shape)}"
    return type(image).__name__


def scene_text_custom_pipelines() -> dict[str, dict[str, Any]]:
    """The `config.custom_pipelines` entry for remote code (schema of `pipelines.base.clean_custom_task`)."""
    return {
        TASK: {
            "impl": f"{os.path.splitext(PIPELINE_FILE)[0]}.SceneTextRecognitionPipeline",
            "pt": ["AutoModelForImageTextToText"],
            "tf": [],
            "type": "multimodal",
        }
    }


custom_pipelines_entry = scene_text_custom_pipelines
"""Alias used by the converters."""


def scene_text_pipeline_registered() -> bool:
    """Whether this process routes "image-text-to-text" through `SceneTextAwareImageTextToTextPipeline`."""
    impl = PIPELINE_REGISTRY.supported_tasks.get(REDIRECTED_TASK, {}).get("impl")
    return bool(getattr(impl, _MARKER, False))


def save_scene_text_pipeline_code(save_directory: str | os.PathLike) -> str:
    """Copies this file into a saved model folder, where `custom_pipelines`' impl points for remote code."""
    os.makedirs(save_directory, exist_ok=True)
    target = os.path.join(save_directory, PIPELINE_FILE)
    shutil.copyfile(__file__, target)
    return target


class SceneTextPipelinesConfigMixin:
    """Mixin for the recognizers' configs (put it before `PreTrainedConfig` in the bases).

    Mechanism: `custom_pipelines` is stored on the instance (default: `scene_text_custom_pipelines()`) and always
    written to `config.json` by `to_dict`, so remote-code users get `pipeline("image-to-text")` from the saved
    folder. Reading `config.custom_pipelines` returns `{}` while `register_scene_text_pipeline()` is active in this
    process: `pipeline()` then skips its custom-pipeline branch (which would demand `trust_remote_code=True`) and
    uses the registered library pipeline instead. In a process without the library the mixin's file is the copied
    config file, nothing is registered, and the entry is visible.

    A model folder's code cannot import `processing` as remote code, so a config module imports the mixin in a
    `try` block (transformers' remote-code import check skips `try` blocks) with a no-op fallback; the fallback is
    right, since a process without the library registers nothing and must see the entry:

        try:
            from processing.pipeline_scene_text import SceneTextPipelinesConfigMixin
        except ImportError:  # remote code: custom_pipelines is a plain config attribute
            class SceneTextPipelinesConfigMixin:
                pass

        class DiGConfig(SceneTextPipelinesConfigMixin, PreTrainedConfig): ...
    """

    _CUSTOM_PIPELINES_ATTR = "_scene_text_custom_pipelines"

    @property
    def custom_pipelines(self) -> dict[str, Any]:
        if scene_text_pipeline_registered():
            return {}
        return self.stored_custom_pipelines

    @custom_pipelines.setter
    def custom_pipelines(self, value: dict[str, Any] | None) -> None:
        object.__setattr__(self, self._CUSTOM_PIPELINES_ATTR, dict(value) if value else {})

    @property
    def stored_custom_pipelines(self) -> dict[str, Any]:
        """What `config.json` declares, whatever this process registered."""
        stored = self.__dict__.get(self._CUSTOM_PIPELINES_ATTR)
        return scene_text_custom_pipelines() if stored is None else stored

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output.pop(self._CUSTOM_PIPELINES_ATTR, None)
        # Written even when empty, so a deliberately cleared entry stays cleared after a reload.
        output["custom_pipelines"] = self.stored_custom_pipelines
        return output

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> Any:
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if self.stored_custom_pipelines:
            # The entry points at this file: ship it beside config.json (model.save_pretrained calls this too).
            save_scene_text_pipeline_code(save_directory)
        return result


class SceneTextRecognitionSteps:
    """preprocess / _forward / postprocess of scene-text recognition, shared by both pipeline classes.

    preprocess: image (PIL, path/URL, numpy, tensor) -> processor -> `pixel_values`.
    _forward: `model.generate(pixel_values)` (with the per-step scores when confidences are asked for).
    postprocess: `processor.batch_decode` -> `[{"generated_text": str}]` (+ `"confidence"`).
    """

    def _scene_text_parameters(
        self,
        return_confidence: bool | None = None,
        generate_kwargs: dict[str, Any] | None = None,
        max_new_tokens: int | None = None,
        timeout: float | None = None,
        **unused: Any,
    ) -> tuple[dict, dict, dict]:
        if unused:
            raise TypeError(f"unexpected arguments for scene-text recognition: {sorted(unused)}")
        preprocess_params = {} if timeout is None else {"timeout": timeout}
        forward_params: dict[str, Any] = {"generate_kwargs": dict(generate_kwargs or {})}
        if max_new_tokens is not None:
            forward_params["generate_kwargs"]["max_new_tokens"] = max_new_tokens
        postprocess_params = {}
        if return_confidence is not None:
            forward_params["return_confidence"] = return_confidence
            postprocess_params["return_confidence"] = return_confidence
        return preprocess_params, forward_params, postprocess_params

    def _scene_text_preprocess(self, image: Any, timeout: float | None = None) -> dict[str, torch.Tensor]:
        # The image (PIL of any mode, path, base64, array) goes to the processor as it is: its loader converts every
        # mode the way training and evaluation do. transformers' load_image would convert("RGB") first, clipping
        # 16-bit images to white. Only URLs are fetched here, to honour `timeout`.
        if isinstance(image, str) and image.startswith(("http://", "https://")):
            from PIL import Image

            with urllib.request.urlopen(image, timeout=timeout) as response:  # follows redirects
                image = Image.open(io.BytesIO(response.read()))
        inputs = self.processor(images=image, return_tensors="pt")
        return {"pixel_values": inputs["pixel_values"].to(self.dtype)}

    def _preprocess_naming_the_input(self, image: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        try:
            return self._scene_text_preprocess(image, **kwargs)
        except Exception as error:  # unreadable file, unsupported array, ...: say which input it was
            raise ValueError(f"cannot read the image {describe_image_input(image)}: {error}") from error

    def _scene_text_forward(
        self,
        model_inputs: dict[str, torch.Tensor],
        generate_kwargs: dict[str, Any] | None = None,
        return_confidence: bool = False,
    ) -> dict[str, torch.Tensor]:
        generate_kwargs = self._prepare_generate_kwargs(dict(generate_kwargs or {}))
        if return_confidence:
            generate_kwargs.update(output_scores=True, return_dict_in_generate=True)
        output = self.model.generate(pixel_values=model_inputs["pixel_values"], **generate_kwargs)
        if not return_confidence:
            return {"sequences": output.sequences if hasattr(output, "sequences") else output}
        if getattr(output, "scores", None) is None:
            raise ValueError(f"{type(self.model).__name__}.generate() returned no scores: confidences are unavailable")
        # One row per image ([B, L, C]; [B, L, 1] after beam search) so the pipeline's batch splitting can slice it.
        step_probabilities = getattr(self.processor, "step_probabilities", None)
        if step_probabilities is not None:
            probs = step_probabilities(output)
        else:
            probs = torch.stack([step.float() for step in output.scores], dim=1).softmax(dim=-1)
        return {"sequences": output.sequences, "probs": probs}

    def _scene_text_postprocess(
        self, model_outputs: dict[str, torch.Tensor], return_confidence: bool = False
    ) -> list[dict[str, Any]]:
        if return_confidence:
            texts, confidences = self.processor.batch_decode(
                model_outputs["sequences"], scores=model_outputs["probs"], return_confidence=True
            )
            return [{"generated_text": t, "confidence": c} for t, c in zip(texts, confidences)]
        texts = self.processor.batch_decode(model_outputs["sequences"])
        return [{"generated_text": t} for t in texts]


class SceneTextRecognitionPipeline(SceneTextRecognitionSteps, Pipeline):
    """Scene-text recognition: `pipe(image)` -> `[{"generated_text": "..."}]`; a list of images -> a list of such
    lists (as TrOCR's image-to-text pipeline did). `return_confidence=True` adds each text's confidence (product of
    per-step max probabilities up to and including EOS). Uses the model's processor and `generate()`.
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False
    _pipeline_calls_generate = True

    def _sanitize_parameters(self, **kwargs: Any) -> tuple[dict, dict, dict]:
        return self._scene_text_parameters(**kwargs)

    def preprocess(self, image: Any, timeout: float | None = None) -> dict[str, torch.Tensor]:
        return self._preprocess_naming_the_input(image, timeout=timeout)

    def _forward(self, model_inputs: dict[str, torch.Tensor], **forward_params: Any) -> dict[str, torch.Tensor]:
        return self._scene_text_forward(model_inputs, **forward_params)

    def postprocess(self, model_outputs: dict[str, torch.Tensor], **postprocess_params: Any) -> list[dict[str, Any]]:
        return self._scene_text_postprocess(model_outputs, **postprocess_params)


class SceneTextAwareImageTextToTextPipeline(SceneTextRecognitionSteps, ImageTextToTextPipeline):
    """The stock image-text-to-text pipeline, except for this project's recognizers, which take an image alone and
    run `SceneTextRecognitionPipeline`'s steps. Registered by `register_scene_text_pipeline()`."""

    is_scene_text_pipeline = True

    @property
    def _is_scene_text(self) -> bool:
        return is_scene_text_model(self.model)

    def __call__(self, images: Any = None, text: Any = None, **kwargs: Any) -> Any:
        if not self._is_scene_text:
            return super().__call__(images=images, text=text, **kwargs)
        if text is not None:
            raise ValueError(
                f"{type(self.model).__name__} is a scene-text recognizer and takes no prompt: call pipe(image)"
            )
        if images is None:
            raise ValueError("give an image (or a list of images) to recognise")
        return Pipeline.__call__(self, images, **kwargs)

    def _sanitize_parameters(self, **kwargs: Any) -> tuple[dict, dict, dict]:
        if self._is_scene_text:
            return self._scene_text_parameters(**kwargs)
        return super()._sanitize_parameters(**kwargs)

    def preprocess(self, inputs: Any = None, **kwargs: Any) -> Any:
        if self._is_scene_text:
            return self._preprocess_naming_the_input(inputs, **kwargs)
        return super().preprocess(inputs, **kwargs)

    def _forward(self, model_inputs: Any, **kwargs: Any) -> Any:
        if self._is_scene_text:
            return self._scene_text_forward(model_inputs, **kwargs)
        return super()._forward(model_inputs, **kwargs)

    def postprocess(self, model_outputs: Any, **kwargs: Any) -> Any:
        if self._is_scene_text:
            return self._scene_text_postprocess(model_outputs, **kwargs)
        return super().postprocess(model_outputs, **kwargs)


class _RedirectNoticeRepair(_std_logging.Filter):
    """transformers 5.23 logs its "image-to-text has been replaced by image-text-to-text" notice with a stray
    `UserWarning` %-argument, which the logging module reports as "--- Logging error ---" (and pytest as a
    failure). The redirect is exactly what we rely on, so keep the notice but drop the stray argument."""

    def filter(self, record: _std_logging.LogRecord) -> bool:
        if record.args and isinstance(record.msg, str) and "%" not in record.msg and REDIRECTED_TASK in record.msg:
            record.args = ()
        return True


_REDIRECT_NOTICE_REPAIR = _RedirectNoticeRepair()


def register_scene_text_pipeline() -> None:
    """Routes `pipeline("image-to-text" / "image-text-to-text")` for our recognizers through
    `SceneTextAwareImageTextToTextPipeline` (idempotent; other models keep the stock behaviour)."""
    notice_logger = _std_logging.getLogger("transformers.pipelines")
    if _REDIRECT_NOTICE_REPAIR not in notice_logger.filters:
        notice_logger.addFilter(_REDIRECT_NOTICE_REPAIR)
    if scene_text_pipeline_registered():
        return
    stock = dict(PIPELINE_REGISTRY.supported_tasks[REDIRECTED_TASK])
    base_logger = _std_logging.getLogger("transformers.pipelines.base")
    level = base_logger.level
    base_logger.setLevel(_std_logging.ERROR)  # the "already registered, overwriting" warning is the intent here
    try:
        PIPELINE_REGISTRY.register_pipeline(
            REDIRECTED_TASK,
            pipeline_class=SceneTextAwareImageTextToTextPipeline,
            pt_model=tuple(stock.get("pt", ())),
            default=stock.get("default"),
            type=stock.get("type", "multimodal"),
        )
    finally:
        base_logger.setLevel(level)
    # Without this, Pipeline.save_pretrained would write our class into every saved model's custom_pipelines.
    del SceneTextAwareImageTextToTextPipeline._registered_impl
    logger.info("registered the scene-text image-to-text pipeline for %s", REDIRECTED_TASK)


__all__ = [
    "SceneTextAwareImageTextToTextPipeline",
    "SceneTextPipelinesConfigMixin",
    "SceneTextRecognitionPipeline",
    "custom_pipelines_entry",
    "describe_image_input",
    "is_scene_text_model",
    "register_scene_text_pipeline",
    "save_scene_text_pipeline_code",
    "scene_text_custom_pipelines",
    "scene_text_pipeline_registered",
]
