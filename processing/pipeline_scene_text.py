"""`SceneTextRecognitionPipeline`: image in, `[{"generated_text": ...}]` out, as TrOCR's image-to-text pipeline did.

transformers 5 redirects the task "image-to-text" to "image-text-to-text", whose stock pipeline needs a text prompt
(`pipe(image)` alone raises "You must provide text"). This class gives the recognizers the image-only call back on
two routes:

* Remote code (library not installed, `trust_remote_code=True`): the saved `config.json` declares
  `custom_pipelines["image-to-text"]` (`scene_text_custom_pipelines()`) pointing at this file, copied next to the
  weights (`save_scene_text_pipeline_code`). `pipeline()` reads `custom_pipelines` before the task redirect.
* Library (this package imported, no remote code): see `processing/pipeline_routing.py`.

This file imports only from transformers and torch (it is copied, alone, into saved model folders).
"""

from __future__ import annotations

import io
import os
import shutil
import urllib.request
from typing import Any

import torch
from transformers import Pipeline

TASK = "image-to-text"
PIPELINE_FILE = os.path.basename(__file__)


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


def save_scene_text_pipeline_code(save_directory: str | os.PathLike) -> str:
    """Copies this file into a saved model folder, where `custom_pipelines`' impl points for remote code."""
    os.makedirs(save_directory, exist_ok=True)
    target = os.path.join(save_directory, PIPELINE_FILE)
    shutil.copyfile(__file__, target)
    return target


class SceneTextRecognitionPipeline(Pipeline):
    """Scene-text recognition: `pipe(image)` -> `[{"generated_text": "..."}]`; a list of images -> a list of such
    lists (as TrOCR's image-to-text pipeline did). `return_confidence=True` adds each text's confidence (product of
    per-step max probabilities up to and including EOS). Uses the model's processor and `generate()`.

    preprocess: image (PIL, path/URL, numpy, tensor) -> processor -> `pixel_values`.
    _forward: `model.generate(pixel_values)` (with the per-step scores when confidences are asked for).
    postprocess: `processor.batch_decode` -> `[{"generated_text": str}]` (+ `"confidence"`).
    """

    # The same components as transformers' ImageTextToTextPipeline loads (the processor only): the library route
    # (processing/pipeline_routing.py) picks between the two classes after pipeline() has read these flags.
    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False
    _pipeline_calls_generate = True

    def _sanitize_parameters(
        self,
        return_confidence: bool | None = None,
        generate_kwargs: dict[str, Any] | None = None,
        max_new_tokens: int | None = None,
        timeout: float | None = None,
        **unused: Any,
    ) -> tuple[dict, dict, dict]:
        if unused:
            raise TypeError(
                f"unexpected arguments for scene-text recognition: {sorted(unused)} (the recognizers take no prompt)"
            )
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

    def preprocess(self, image: Any, timeout: float | None = None) -> dict[str, torch.Tensor]:
        try:
            return self._scene_text_preprocess(image, timeout=timeout)
        except Exception as error:  # unreadable file, unsupported array, ...: say which input it was
            raise ValueError(f"cannot read the image {describe_image_input(image)}: {error}") from error

    def _forward(
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

    def postprocess(
        self, model_outputs: dict[str, torch.Tensor], return_confidence: bool = False
    ) -> list[dict[str, Any]]:
        if return_confidence:
            texts, confidences = self.processor.batch_decode(
                model_outputs["sequences"], scores=model_outputs["probs"], return_confidence=True
            )
            return [{"generated_text": t, "confidence": c} for t, c in zip(texts, confidences)]
        texts = self.processor.batch_decode(model_outputs["sequences"])
        return [{"generated_text": t} for t in texts]


__all__ = [
    "SceneTextRecognitionPipeline",
    "describe_image_input",
    "save_scene_text_pipeline_code",
    "scene_text_custom_pipelines",
]
