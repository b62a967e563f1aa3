"""Shared processing for the scene-text recognizers: charsets, tokenizers, image processors,
processors, the image-to-text pipeline, STR LMDB datasets, augmentations, metrics and the
synthetic word renderer."""

from .charsets import CHARSET_36, CHARSET_94, CharsetAdapter

__all__ = ["CHARSET_36", "CHARSET_94", "CharsetAdapter"]
