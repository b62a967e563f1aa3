"""DiG's processor: `DiGImageProcessor` (32x128, 0.5/0.5) + `DiGTokenizer` (97 classes + BOS)."""

from __future__ import annotations

from .image_processing_dig import DiGImageProcessor
from .processing_scene_text import SceneTextProcessor
from .tokenization_dig import DiGTokenizer


class DiGProcessor(SceneTextProcessor):
    """Images -> `pixel_values` [B, 3, 32, 128]; labels -> `labels` [B, T] (EOS 94, padded with -100);
    generated ids (HF `generate` keeps the BOS start column) -> strings, UNK predictions dropped."""

    image_processor_cls = DiGImageProcessor
    tokenizer_cls = DiGTokenizer

    def __init__(
        self, image_processor: DiGImageProcessor | None = None, tokenizer: DiGTokenizer | None = None, **kwargs
    ) -> None:
        super().__init__(image_processor=image_processor, tokenizer=tokenizer, **kwargs)


__all__ = ["DiGProcessor"]
