"""Shared processing for the scene-text recognizers: charsets, tokenizers, image processors,
processors, the image-to-text pipeline, STR LMDB datasets, augmentations, metrics and the
synthetic word renderer."""

from .charsets import CHARSET_36, CHARSET_94, CharsetAdapter
from .image_processing_clip4str import CLIP4STRImageProcessor
from .image_processing_dig import DiGImageProcessor
from .image_processing_scene_text import SceneTextImageProcessor
from .processing_clip4str import CLIP4STRProcessor
from .processing_dig import DiGProcessor
from .processing_scene_text import SceneTextProcessor
from .tokenization_dig import DiGTokenizer
from .tokenization_parseq import CharacterTokenizer, PARSeqTokenizer

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
]
