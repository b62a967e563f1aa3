"""Shared processing for the scene-text recognizers: charsets, tokenizers, image processors,
processors, the image-to-text pipeline, STR LMDB datasets, augmentations, metrics and the
synthetic word renderer."""

from importlib import import_module
from typing import Any

from .charsets import CHARSET_36, CHARSET_94, CharsetAdapter, evaluation_charset, read_charset

# The tokenizers, image processors, processors and pipeline import torch and transformers: load them on first use so
# that `import processing.charsets` (or `processing.labels`) stays light.
_LAZY_EXPORTS = {
    "CLIP4STRImageProcessor": "image_processing_clip4str",
    "CLIP4STRProcessor": "processing_clip4str",
    "CharacterTokenizer": "tokenization_parseq",
    "DiGImageProcessor": "image_processing_dig",
    "DiGProcessor": "processing_dig",
    "DiGTokenizer": "tokenization_dig",
    "PARSeqTokenizer": "tokenization_parseq",
    "SceneTextImageProcessor": "image_processing_scene_text",
    "SceneTextProcessor": "processing_scene_text",
    "SceneTextRecognitionPipeline": "pipeline_scene_text",
    "register_scene_text_pipeline": "pipeline_routing",
    "scene_text_custom_pipelines": "pipeline_scene_text",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY_EXPORTS:
        value = getattr(import_module(f".{_LAZY_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CHARSET_36",
    "CHARSET_94",
    "CLIP4STRImageProcessor",
    "CLIP4STRProcessor",
    "CharacterTokenizer",
    "CharsetAdapter",
    "DiGImageProcessor",
    "DiGProcessor",
    "DiGTokenizer",
    "PARSeqTokenizer",
    "SceneTextImageProcessor",
    "SceneTextProcessor",
    "SceneTextRecognitionPipeline",
    "evaluation_charset",
    "read_charset",
    "register_scene_text_pipeline",
    "scene_text_custom_pipelines",
]
